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

// endPeriod sets when the periods of a tag on d ended (they must have).
func endPeriod(t *testing.T, db *meta.DB, repo, tag string, d digest.Digest, at time.Time) {
	t.Helper()
	if err := db.Exec(context.Background(), `UPDATE tag_history SET until_at = ? WHERE tag = ? AND digest = ? AND until_at > 0
		AND repository_id = (SELECT id FROM repositories WHERE name = ?)`, at.UnixMicro(), tag, d.String(), repo); err != nil {
		t.Fatal(err)
	}
}

func periods(t *testing.T, db *meta.DB, repo, tag string) []string {
	t.Helper()
	hist, err := db.Manifests().TagHistory(context.Background(), repo, tag, 100)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, p := range hist {
		out = append(out, fmt.Sprintf("%s open=%v", p.Digest, p.Until.IsZero()))
	}
	return out
}

// TestTagHistoryBoundedByTimeMachine: a pass prunes the periods of tags
// that ended before the time machine's window (a tag flipped back and
// forth leaves one per move, a bulk of them in batches), keeps those
// that ended inside it and every open one however old, and prunes the
// records of expiry notices whose expiration has passed, not the others
// (a notice still ahead is not announced again).
func TestTagHistoryBoundedByTimeMachine(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			a, b, c := manifestOf("a"), manifestOf("b"), manifestOf("c")
			for _, p := range []meta.PutManifest{
				{Repository: "acme/app", Manifest: a, Tag: "x"},
				{Repository: "acme/app", Manifest: b, Tag: "x"}, // x left a
				{Repository: "acme/app", Manifest: c, Tag: "y"},
				{Repository: "acme/app", Manifest: a, Tag: "open"},
			} {
				if err := db.Manifests().PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Manifests().DeleteTag(ctx, "acme/app", "y", "alice"); err != nil {
				t.Fatal(err)
			}
			now := time.Now()
			endPeriod(t, db, "acme/app", "x", a.Digest, now.Add(-2*time.Hour))    // past a window of an hour
			endPeriod(t, db, "acme/app", "y", c.Digest, now.Add(-30*time.Minute)) // inside it
			if err := db.Exec(ctx, "UPDATE tag_history SET from_at = ? WHERE tag = 'open'", now.Add(-30*24*time.Hour).UnixMicro()); err != nil {
				t.Fatal(err)
			}
			// A tag flipped 2500 times long ago.
			if err := db.Exec(ctx, `INSERT INTO tag_history (repository_id, tag, digest, from_at, until_at)
				WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 2500)
				SELECT (SELECT id FROM repositories WHERE name = 'acme/app'), 'flip', ?, ?, ? FROM n`,
				a.Digest.String(), now.Add(-48*time.Hour).UnixMicro(), now.Add(-47*time.Hour).UnixMicro()); err != nil {
				t.Fatal(err)
			}

			// Expiry notices: one for a tag expiring tomorrow (recorded by
			// the notification), one for an expiration a day past.
			if _, err := db.Notifications().CreateNotification(ctx, meta.Notification{UUID: "expiry", Scope: "repository", Target: "acme/app",
				Event: "repo_image_expiry", Method: "webhook", Config: json.RawMessage(`{"url":"https://example.com"}`),
				EventConfig: json.RawMessage(`{"days":3}`)}); err != nil {
				t.Fatal(err)
			}
			if err := db.Manifests().SetTagExpiration(ctx, "acme/app", "open", now.Add(24*time.Hour)); err != nil {
				t.Fatal(err)
			}
			if n, err := db.Manifests().NoticeExpiringTags(ctx, now); err != nil || n != 1 {
				t.Fatalf("notices: %d %v", n, err)
			}
			if err := db.Exec(ctx, `INSERT INTO expiry_notices (notification_uuid, repository_id, tag, expires_at)
				VALUES ('expiry', (SELECT id FROM repositories WHERE name = 'acme/app'), 'gone', ?)`, now.Add(-24*time.Hour).UnixMicro()); err != nil {
				t.Fatal(err)
			}

			gc := db.Collector().WithTimeMachine(time.Hour)
			dry, err := gc.Prune(ctx, meta.Retention{}, true)
			if err != nil || dry.TagHistory != 2501 || dry.ExpiryNotices != 1 {
				t.Fatalf("dry prune: %+v %v", dry, err)
			}
			got, err := gc.Prune(ctx, meta.Retention{}, false)
			if err != nil || got.TagHistory != 2501 || got.ExpiryNotices != 1 {
				t.Fatalf("prune: %+v %v", got, err)
			}
			if p := periods(t, db, "acme/app", "x"); !slices.Equal(p, []string{b.Digest.String() + " open=true"}) {
				t.Errorf("x: %v (its period on a ended two hours ago)", p)
			}
			if p := periods(t, db, "acme/app", "y"); !slices.Equal(p, []string{c.Digest.String() + " open=false"}) {
				t.Errorf("y: %v (its period ended inside the window)", p)
			}
			if p := periods(t, db, "acme/app", "open"); !slices.Equal(p, []string{a.Digest.String() + " open=true"}) {
				t.Errorf("open: %v (an open period is never pruned)", p)
			}
			if p := periods(t, db, "acme/app", "flip"); len(p) != 0 {
				t.Errorf("flip: %d periods left", len(p))
			}
			if again, _ := gc.Prune(ctx, meta.Retention{}, true); again.TagHistory != 0 || again.ExpiryNotices != 0 {
				t.Errorf("left to prune: %+v", again)
			}
			if n, err := db.Manifests().NoticeExpiringTags(ctx, time.Now()); err != nil || n != 0 {
				t.Errorf("a live notice was pruned: announced again (%d) %v", n, err)
			}
			deleted, err := db.Manifests().DeletedTags(ctx, "acme/app", 10)
			if err != nil || len(deleted) != 1 || deleted[0].Tag != "y" {
				t.Errorf("deleted tags: %+v %v", deleted, err)
			}
		})
	}
}

// TestRestoreWithinTimeMachine: Quay's restore puts a tag back only on a
// digest it left within the time machine's window, whether or not a pass
// pruned the period yet (404 past it); a gate's guarded tag is rolled
// back to any promotion, however old.
func TestRestoreWithinTimeMachine(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			a, b := manifestOf("a"), manifestOf("b")
			for _, p := range []meta.PutManifest{
				{Repository: "acme/app", Manifest: a, Tag: "x"},
				{Repository: "acme/app", Manifest: b, Tag: "x"},
				{Repository: "acme/app", Manifest: a, Tag: "z"},
				{Repository: "acme/app", Manifest: b, Tag: "z"},
			} {
				if err := db.Manifests().PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			endPeriod(t, db, "acme/app", "x", a.Digest, time.Now().Add(-2*time.Hour))
			endPeriod(t, db, "acme/app", "z", a.Digest, time.Now().Add(-2*time.Hour))
			if err := db.Manifests().WithTimeMachine(time.Hour).RestoreTag(ctx, "acme/app", "x", a.Digest, "alice"); !errors.Is(err, meta.ErrTagHistoryNotFound) {
				t.Fatalf("restore past the window: %v", err)
			}
			if err := db.Manifests().WithTimeMachine(3*time.Hour).RestoreTag(ctx, "acme/app", "x", a.Digest, "alice"); err != nil {
				t.Fatalf("restore inside the window: %v", err)
			}
			// Once a pass pruned z's period, no restore finds it.
			if _, err := db.Collector().WithTimeMachine(time.Hour).Prune(ctx, meta.Retention{}, false); err != nil {
				t.Fatal(err)
			}
			if err := db.Manifests().RestoreTag(ctx, "acme/app", "z", a.Digest, "alice"); !errors.Is(err, meta.ErrTagHistoryNotFound) {
				t.Fatalf("restore of a pruned period: %v", err)
			}

			// A guarded tag's rollback to its first promotion, long ago.
			e := newGateEnv(t, dialect)
			var first digest.Digest
			for i := range 2 {
				img := manifestOf(fmt.Sprint("15-alpine v", i))
				e.put(meta.PutManifest{Repository: "mirror/node", Manifest: img, Tag: "15-alpine"})
				cands := e.live("15-alpine")
				if len(cands) != 1 {
					t.Fatalf("candidates: %+v", cands)
				}
				if _, err := e.db.Gates().Promote(ctx, meta.Promotion{CandidateID: cands[0].ID, RollbackTag: func(n int64) string { return fmt.Sprintf("15-alpine-%d", n) },
					Detail: json.RawMessage(`{"state":"promoted"}`), Actor: "berth-gate"}); err != nil {
					t.Fatal(err)
				}
				if i == 0 {
					first = img.Digest
				}
			}
			endPeriod(t, e.db, "mirror/node", "15-alpine", first, time.Now().Add(-30*24*time.Hour))
			if _, err := e.db.Collector().WithTimeMachine(time.Hour).Prune(ctx, meta.Retention{}, false); err != nil {
				t.Fatal(err)
			}
			if err := e.db.Manifests().WithTimeMachine(time.Hour).RestoreTag(ctx, "mirror/node", "15-alpine", first, "alice"); err != nil {
				t.Fatalf("rollback to a promotion past the window: %v", err)
			}
			if e.tagged("15-alpine") != first {
				t.Fatal("the rollback did not move the tag")
			}
		})
	}
}

// TestExpiredTagIsGone: a tag past its expiration is gone the moment it
// passes, before any pass deletes its row, as in Quay: not pulled by tag,
// not in the tag lists, no expiration to set; a push to its name makes a
// new tag (the same image included), and its end is announced.
func TestExpiredTagIsGone(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := openNoMinimum(t, dialect) // tags that expired already
			orgWithRepo(t, db)
			pr, other, keep := manifestOf("pr build"), manifestOf("another build"), manifestOf("kept")
			past := time.Now().Add(-time.Minute)
			for _, p := range []meta.PutManifest{
				{Repository: "acme/app", Manifest: pr, Tag: "pr-1", ExpiresAt: past},
				{Repository: "acme/app", Manifest: pr, Tag: "pr-2", ExpiresAt: past},
				{Repository: "acme/app", Manifest: keep, Tag: "keep", ExpiresAt: time.Now().Add(time.Hour)},
			} {
				if err := db.Manifests().PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := db.Manifests().GetManifest(ctx, "acme/app", "pr-1", "", true); !errors.Is(err, meta.ErrManifestNotFound) {
				t.Fatalf("pull of an expired tag: %v", err)
			}
			if _, err := db.Manifests().GetManifest(ctx, "acme/app", "keep", "", true); err != nil {
				t.Fatalf("pull of a tag that expires later: %v", err)
			}
			if tags, err := db.Manifests().ListTags(ctx, "acme/app", "", 100); err != nil || !slices.Equal(tags, []string{"keep"}) {
				t.Fatalf("/v2 tags list: %v %v", tags, err)
			}
			page, err := db.Manifests().TagsPage(ctx, "acme/app", meta.TagQuery{Limit: 100})
			if err != nil || len(page) != 1 || page[0].Name != "keep" {
				t.Fatalf("active tags: %+v %v", page, err)
			}
			if page, _ := db.Manifests().TagsPage(ctx, "acme/app", meta.TagQuery{Name: "pr-1", Limit: 100}); len(page) != 0 {
				t.Fatalf("active tag pr-1: %+v", page)
			}
			if rows, total, err := db.Manifests().TagRows(ctx, "acme/app", meta.TagRowQuery{Limit: 100}); err != nil || total != 1 || len(rows) != 1 || rows[0].Name != "keep" {
				t.Fatalf("the web UI's tag table: %+v %d %v", rows, total, err)
			}
			if err := db.Manifests().SetTagExpiration(ctx, "acme/app", "pr-1", time.Now().Add(time.Hour)); !errors.Is(err, meta.ErrManifestNotFound) {
				t.Fatalf("expiration of an expired tag: %v", err)
			}

			// Pushed again: the same image to pr-1, another to pr-2.
			before, _ := db.Outbox().EventsAfter(ctx, 0, 1000)
			for _, p := range []meta.PutManifest{
				{Repository: "acme/app", Manifest: pr, Tag: "pr-1"},
				{Repository: "acme/app", Manifest: other, Tag: "pr-2"},
			} {
				if err := db.Manifests().PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
				got, err := db.Manifests().GetManifest(ctx, "acme/app", p.Tag, "", false)
				if err != nil || got.Digest != p.Manifest.Digest {
					t.Fatalf("pull of %s pushed again: %v %v", p.Tag, got.Digest, err)
				}
			}
			if tags, _ := db.Manifests().ListTags(ctx, "acme/app", "", 100); !slices.Equal(tags, []string{"keep", "pr-1", "pr-2"}) {
				t.Fatalf("/v2 tags list after the pushes: %v", tags)
			}
			page, _ = db.Manifests().TagsPage(ctx, "acme/app", meta.TagQuery{Name: "pr-1", Limit: 1})
			if len(page) != 1 || !page[0].ExpiresAt.IsZero() {
				t.Fatalf("pr-1 pushed again keeps an expiration: %+v", page)
			}
			if exp, _ := db.Manifests().ExpiredTags(ctx, time.Now(), 100); len(exp) != 0 {
				t.Fatalf("a pass would delete the new tags: %+v", exp)
			}
			if p := periods(t, db, "acme/app", "pr-1"); len(p) != 2 || p[0] != pr.Digest.String()+" open=true" || p[1] != pr.Digest.String()+" open=false" {
				t.Fatalf("pr-1's history: %v", p)
			}
			evs, _ := db.Outbox().EventsAfter(ctx, 0, 1000)
			var seen []string
			for _, ev := range evs[len(before):] {
				var d map[string]any
				json.Unmarshal(ev.Data, &d)
				seen = append(seen, fmt.Sprintf("%s tag=%v updated=%v expired=%v previous=%v", ev.Kind, d["tag"], d["updated_tags"], d["expired"], d["previous"] != nil))
			}
			want := []string{
				"tag_deleted tag=pr-1 updated=<nil> expired=true previous=false",
				"repo_push tag=<nil> updated=[pr-1] expired=<nil> previous=false",
				"tag_deleted tag=pr-2 updated=<nil> expired=true previous=false",
				"repo_push tag=<nil> updated=[pr-2] expired=<nil> previous=false",
			}
			if !slices.Equal(seen, want) {
				t.Fatalf("events of the pushes:\n%s\nwant\n%s", seen, want)
			}
		})
	}
}

// TestAutoPruneFollowsCosignTags: cosign's signature, attestation and
// SBOM tags are not counted among the newest N a policy keeps; one whose
// image stays tagged (directly, or as a platform of a tagged index)
// stays; one whose image the pass prunes goes with it, whatever the
// pattern; one of an image no longer tagged goes if a policy covers it.
func TestAutoPruneFollowsCosignTags(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			cosign := func(m meta.Manifest, suffix string) string { return cosignTag(m.Digest, suffix) }
			child := manifestOf("amd64 image")
			b1, b2, b3 := manifestOf("build 1"), manifestOf("build 2"), manifestOf("build 3")
			pushes := []meta.PutManifest{
				{Repository: "acme/app", Manifest: child},
				{Repository: "acme/app", Manifest: indexOf("multi-platform"), Tag: "multi", Refs: []meta.Ref{{Digest: child.Digest, IsManifest: true}}},
				{Repository: "acme/app", Manifest: b1, Tag: "build-1"},
				{Repository: "acme/app", Manifest: b2, Tag: "build-2"},
				{Repository: "acme/app", Manifest: b3, Tag: "build-3"},
				// The signatures come last: the newest tags.
				{Repository: "acme/app", Manifest: manifestOf("sig of the amd64 image"), Tag: cosign(child, ".sig")},
				{Repository: "acme/app", Manifest: manifestOf("sig of build 1"), Tag: cosign(b1, ".sig")},
				{Repository: "acme/app", Manifest: manifestOf("sbom of build 3"), Tag: cosign(b3, ".sbom")},
				{Repository: "acme/app", Manifest: manifestOf("att of an image gone"), Tag: cosign(manifestOf("gone"), ".att")},
			}
			for _, p := range pushes {
				if err := db.Manifests().PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * time.Millisecond) // distinct push times
			}
			createPolicies(t, db,
				meta.TagPolicy{Kind: meta.PolicyAutoPrune, Namespace: "acme", Method: meta.PruneByCount, Value: "2", TagPattern: "^build-", TagPatternMatches: true},
				meta.TagPolicy{Kind: meta.PolicyAutoPrune, Namespace: "acme", Repository: "acme/app", Method: meta.PruneByCount, Value: "4", TagPatternMatches: true})
			gone, err := db.Manifests().PruneRepository(ctx, "acme/app", time.Now(), "berth-autoprune")
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"build-1", cosign(b1, ".sig"), cosign(manifestOf("gone"), ".att")}
			slices.Sort(want)
			if !slices.Equal(gone, want) {
				t.Fatalf("pruned %v, want %v", gone, want)
			}
			tags, _ := db.Manifests().ListTags(ctx, "acme/app", "", 100)
			for _, kept := range []string{"multi", "build-2", "build-3", cosign(child, ".sig"), cosign(b3, ".sbom")} {
				if !slices.Contains(tags, kept) {
					t.Errorf("%s was pruned", kept)
				}
			}
		})
	}
}

// TestPruneRepositoryDeletedMeanwhile: a repository deleted after a pass
// listed it has nothing to prune (not an error that stops the pass).
func TestPruneRepositoryDeletedMeanwhile(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	gone, err := db.Manifests().PruneRepository(context.Background(), "acme/deleted", time.Now(), "berth-autoprune")
	if err != nil || len(gone) != 0 {
		t.Fatalf("prune of a deleted repository: %v %v", gone, err)
	}
}

// TestExpiredImmutableTagIsNotReplaced: a tag an immutability policy covers
// whose expiration passed (set before the policy existed, as a database
// of an earlier version may hold) does not expire: a push of another image
// to its name is refused as for any immutable tag, and the same image
// leaves it as it is. Before, the push took the "expired" tag over.
// The pass then clears its expiration and keeps it.
func TestExpiredImmutableTagIsNotReplaced(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			v1, other := manifestOf("release 1"), manifestOf("something else")
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: v1, Tag: "v1"}); err != nil {
				t.Fatal(err)
			}
			createPolicies(t, db, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", TagPattern: "^v", TagPatternMatches: true})
			// An expiration from before the policy, past now.
			if err := db.Exec(ctx, "UPDATE tags SET expires_at = ? WHERE name = 'v1'", time.Now().Add(-time.Minute).UnixMicro()); err != nil {
				t.Fatal(err)
			}
			var ie *meta.ImmutableTagError
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: other, Tag: "v1"}); !errors.As(err, &ie) {
				t.Fatalf("push of another image onto an immutable tag past its expiration: %v", err)
			}
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: v1, Tag: "v1"}); err != nil {
				t.Fatalf("push of the same image: %v", err)
			}
			exp, err := db.Manifests().ExpiredTags(ctx, time.Now(), 10)
			if err != nil || len(exp) != 1 {
				t.Fatalf("expired tags: %+v %v", exp, err)
			}
			if deleted, err := db.Manifests().ExpireTag(ctx, exp[0], time.Now(), "berth-expiry"); err != nil || deleted {
				t.Fatalf("the pass deleted an immutable tag: %v %v", deleted, err)
			}
			if m, err := db.Manifests().GetManifest(ctx, "acme/app", "v1", "", false); err != nil || m.Digest != v1.Digest {
				t.Fatalf("v1 after the pass: %v %v", m.Digest, err)
			}
		})
	}
}
