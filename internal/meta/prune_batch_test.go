package meta_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// pruneRepo is the repository the batch tests prune.
const pruneRepo = "acme/ci"

// cosignTag is cosign's tag of d with suffix (.sig, .att, .sbom).
func cosignTag(d digest.Digest, suffix string) string { return "sha256-" + d.Encoded() + suffix }

// sigTag is cosign's signature tag of d.
func sigTag(d digest.Digest) string { return cosignTag(d, ".sig") }

// createPolicies creates the tag policies ps.
func createPolicies(t *testing.T, db *meta.DB, ps ...meta.TagPolicy) {
	t.Helper()
	for _, p := range ps {
		if _, err := db.Policies().CreateTagPolicy(context.Background(), p); err != nil {
			t.Fatal(err)
		}
	}
}

// fillCIRepository gives pruneRepo 2,100 tags t-0000 to t-2099 (21
// builds of 100 tags each), then latest, cosign signature tags of builds
// 0 and 3 and of latest, an immutability policy for t-0007 and the
// organization's auto-prune policy number_of_tags 1. It returns the tags
// a pass leaves: latest, its signature, t-0007 (immutable) and build 0's
// signature (build 0 stays tagged by t-0007).
func fillCIRepository(t *testing.T, db *meta.DB) []string {
	t.Helper()
	ctx := context.Background()
	orgWithRepo(t, db)
	put := func(m meta.Manifest, tags ...string) {
		t.Helper()
		if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: pruneRepo, Manifest: m, Tag: tags[0], MoreTags: tags[1:]}); err != nil {
			t.Fatal(err)
		}
	}
	for g := range 21 {
		var tags []string
		for i := range 100 {
			tags = append(tags, fmt.Sprintf("t-%04d", g*100+i))
		}
		put(manifestOf(fmt.Sprint("build ", g)), tags...)
	}
	put(manifestOf("signature of build 0"), sigTag(manifestOf("build 0").Digest))
	put(manifestOf("signature of build 3"), sigTag(manifestOf("build 3").Digest))
	time.Sleep(5 * time.Millisecond) // latest is the newest
	put(manifestOf("latest"), "latest")
	put(manifestOf("signature of latest"), sigTag(manifestOf("latest").Digest))
	createPolicies(t, db,
		meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", TagPattern: "^t-0007$", TagPatternMatches: true},
		meta.TagPolicy{Kind: meta.PolicyAutoPrune, Namespace: "acme", Method: meta.PruneByCount, Value: "1", TagPatternMatches: true})
	left := []string{"latest", "t-0007", sigTag(manifestOf("build 0").Digest), sigTag(manifestOf("latest").Digest)}
	slices.Sort(left)
	return left
}

// tagNames lists a repository's tags, in lexical order.
func tagNames(t *testing.T, db *meta.DB, repo string) []string {
	t.Helper()
	tags, err := db.Manifests().ListTags(context.Background(), repo, "", 100000)
	if err != nil {
		t.Fatal(err)
	}
	return tags
}

// prunedEvents lists the tag and digest of every tag_deleted event of a
// pruned tag, in order.
func prunedEvents(t *testing.T, db *meta.DB) []string {
	t.Helper()
	var out []string
	for _, e := range eventsOf(t, db, meta.EventTagDeleted) {
		var d struct {
			Tag    string `json:"tag"`
			Digest string `json:"digest"`
			Pruned bool   `json:"pruned"`
		}
		if err := json.Unmarshal(e.Data, &d); err != nil {
			t.Fatal(err)
		}
		if d.Pruned {
			out = append(out, d.Tag+"@"+d.Digest)
		}
	}
	return out
}

// TestAutoPruneInBatches: a repository with 2,100 tags and number_of_tags
// 1 is pruned a batch of tags per transaction, with the result of a
// pass that deletes them all in one: the same tags left, the same tags
// deleted and announced, in the same order.
func TestAutoPruneInBatches(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			var left [2][]string
			var gone, events [2][]string
			for i, batch := range []int{1 << 30, 97} {
				db := metatest.Open(t, dialect)
				want := fillCIRepository(t, db)
				var err error
				gone[i], err = db.Manifests().WithPruneBatch(batch).PruneRepository(ctx, pruneRepo, time.Now(), "berth-autoprune")
				if err != nil {
					t.Fatalf("batch %d: %v", batch, err)
				}
				left[i], events[i] = tagNames(t, db, pruneRepo), prunedEvents(t, db)
				if !slices.Equal(left[i], want) {
					t.Fatalf("batch %d: tags left %v, want %v", batch, left[i], want)
				}
				if len(gone[i]) != 2100 || len(events[i]) != 2100 {
					t.Fatalf("batch %d: %d tags pruned, %d announced, want 2100 (2,099 builds' tags and build 3's signature)", batch, len(gone[i]), len(events[i]))
				}
			}
			if !slices.Equal(gone[0], gone[1]) || !slices.Equal(events[0], events[1]) {
				t.Fatal("a pass in batches pruned or announced other tags, or in another order, than a pass in one transaction")
			}
		})
	}
}

// TestAutoPruneBetweenBatches: between two batches nothing of the pass is
// held: a push of a new tag, a push that moves a tag the pass chose and
// has not deleted yet, and an immutability policy created for another
// such tag all commit at once (the store's other writers do not wait
// for the whole pass), and the pass leaves all three tags. The policy
// deleted after a batch stops the pass. A pass cancelled after a batch
// keeps what it deleted; the next one does the rest.
func TestAutoPruneBetweenBatches(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			want := fillCIRepository(t, db)
			calls := 0
			var hookErr error
			pass := db.Manifests().WithPruneBatch(100).BetweenBatches(func() {
				calls++
				if calls > 1 {
					return
				}
				wctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				hookErr = errors.Join(
					db.Manifests().PutManifest(wctx, meta.PutManifest{Repository: pruneRepo, Manifest: manifestOf("fresh"), Tag: "zz-fresh"}),
					db.Manifests().PutManifest(wctx, meta.PutManifest{Repository: pruneRepo, Manifest: manifestOf("moved"), Tag: "t-2050"}),
					func() error {
						_, err := db.Policies().CreateTagPolicy(wctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", Repository: pruneRepo,
							TagPattern: "^t-2060$", TagPatternMatches: true})
						return err
					}())
			})
			gone, err := pass.PruneRepository(ctx, pruneRepo, time.Now(), "berth-autoprune")
			if err != nil {
				t.Fatal(err)
			}
			if hookErr != nil {
				t.Fatalf("writes between two batches of the pass: %v", hookErr)
			}
			want = append(want, "t-2050", "t-2060", "zz-fresh")
			slices.Sort(want)
			if got := tagNames(t, db, pruneRepo); !slices.Equal(got, want) {
				t.Fatalf("tags left %v, want %v", got, want)
			}
			if len(gone) != 2098 || len(prunedEvents(t, db)) != 2098 || calls != 20 {
				t.Fatalf("%d tags pruned, %d announced, in %d batches; want 2098 in 21", len(gone), len(prunedEvents(t, db)), calls+1)
			}
			if m, _ := db.Manifests().GetManifest(ctx, pruneRepo, "t-2050", "", false); m.Digest != manifestOf("moved").Digest {
				t.Fatalf("t-2050 points at %s, want the image pushed while the pass ran", m.Digest)
			}
		})
		t.Run(dialect+"/policy deleted", func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			fillCIRepository(t, db)
			ps, err := db.Policies().TagPolicies(ctx, meta.PolicyAutoPrune, "acme", "")
			if err != nil || len(ps) != 1 {
				t.Fatalf("policies: %v %v", ps, err)
			}
			var hookErr error
			calls := 0
			gone, err := db.Manifests().WithPruneBatch(100).BetweenBatches(func() {
				if calls++; calls == 1 {
					hookErr = db.Policies().DeleteTagPolicy(ctx, meta.PolicyAutoPrune, ps[0].UUID)
				}
			}).PruneRepository(ctx, pruneRepo, time.Now(), "berth-autoprune")
			if err != nil || hookErr != nil {
				t.Fatalf("pass: %v; policy delete: %v", err, hookErr)
			}
			if n := len(tagNames(t, db, pruneRepo)); len(gone) != 100 || n != 2104-100 {
				t.Fatalf("the policy deleted after the first batch, the pass pruned %d tags and left %d, want the first batch's 100 and %d", len(gone), n, 2104-100)
			}
		})
		t.Run(dialect+"/cancelled", func(t *testing.T) {
			db := metatest.Open(t, dialect)
			want := fillCIRepository(t, db)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			gone, err := db.Manifests().WithPruneBatch(100).BetweenBatches(cancel).PruneRepository(ctx, pruneRepo, time.Now(), "berth-autoprune")
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("cancelled pass: %v", err)
			}
			after := tagNames(t, db, pruneRepo)
			if len(after) != 2104-100 {
				t.Fatalf("%d tags after a pass cancelled after its first batch, want %d", len(after), 2104-100)
			}
			if len(gone) != 100 || slices.ContainsFunc(gone, func(g string) bool { return slices.Contains(after, g) }) {
				t.Fatalf("a pass cancelled after its first batch reports %d tags pruned (%v...), want that batch's 100", len(gone), gone[:min(len(gone), 3)])
			}
			rest, err := db.Manifests().WithPruneBatch(100).PruneRepository(context.Background(), pruneRepo, time.Now(), "berth-autoprune")
			if err != nil || len(rest) != 2000 {
				t.Fatalf("the next pass pruned %d tags (%v), want the other 2000", len(rest), err)
			}
			if got := tagNames(t, db, pruneRepo); !slices.Equal(got, want) {
				t.Fatalf("tags left %v, want %v", got, want)
			}
		})
	}
}

// TestAutoPruneKeepsTheSignatureOfAnImagePushedAgain: a tag the pass
// chose that is pushed again with its image between two batches stays
// (renewed), and so does its image's cosign signature tag, which the
// plan had doomed with the image's tags (before, the signature's batch,
// the last, deleted it: a freshly pushed tag without its signature).
func TestAutoPruneKeepsTheSignatureOfAnImagePushedAgain(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			want := fillCIRepository(t, db)
			build3 := manifestOf("build 3")
			calls := 0
			var hookErr error
			_, err := db.Manifests().WithPruneBatch(100).BetweenBatches(func() {
				if calls++; calls == 1 {
					hookErr = db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: pruneRepo, Manifest: build3, Tag: "t-0350"})
				}
			}).PruneRepository(ctx, pruneRepo, time.Now(), "berth-autoprune")
			if err != nil || hookErr != nil {
				t.Fatalf("pass: %v; push again: %v", err, hookErr)
			}
			want = append(want, "t-0350", sigTag(build3.Digest))
			slices.Sort(want)
			if got := tagNames(t, db, pruneRepo); !slices.Equal(got, want) {
				t.Fatalf("tags left %v, want %v", got, want)
			}
		})
	}
}
