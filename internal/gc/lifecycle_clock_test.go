package gc

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestPruneJudgesEachRepositoryWhenItIsPlanned: a tag that expires after
// a pass started, before its repository is pruned, is gone by then, and
// not among the newest tags a number_of_tags policy keeps: with a policy
// keeping 2 and tags A (newest, expired meanwhile), B and C, the pass
// keeps B and C (it kept A and B and pruned C, leaving B alone).
func TestPruneJudgesEachRepositoryWhenItIsPlanned(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := openNoMinimum(t, dialect)
			u, err := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: "x"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Organizations().CreateOrganization(ctx, "acme", u.ID); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for _, tag := range []string{"C", "B", "A"} { // oldest first
				m := meta.Manifest{Digest: digest.FromString("image " + tag), MediaType: "application/vnd.oci.image.manifest.v1+json", Content: []byte("image " + tag)}
				p := meta.PutManifest{Repository: "acme/app", Manifest: m, Tag: tag}
				if tag == "A" {
					p.ExpiresAt = start.Add(30 * time.Minute) // after the pass starts, before the repository is pruned
				}
				if err := db.Manifests().PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * time.Millisecond)
			}
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyAutoPrune, Namespace: "acme", Method: meta.PruneByCount, Value: "2", TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			c := New(Stores{Uploads: db.Uploads(), Collector: db.Collector(), Retention: db.Collector(), Lifecycle: db.Manifests()}, nil,
				Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			// The pass starts at start; an hour has gone by at each later reading.
			var calls atomic.Int64
			c.now = func() time.Time {
				if calls.Add(1) == 1 {
					return start
				}
				return start.Add(time.Hour)
			}
			rep := Report{}
			if err := c.lifecycle(ctx, &rep); err != nil {
				t.Fatal(err)
			}
			if rep.PrunedTags != 0 {
				t.Errorf("pruned %d tags, want none (A expired: B and C are the newest 2)", rep.PrunedTags)
			}
			tags, err := db.Manifests().ListTags(ctx, "acme/app", "", 10)
			if err != nil || !slices.Contains(tags, "B") || !slices.Contains(tags, "C") {
				t.Fatalf("tags after the pass: %v %v; want B and C kept", tags, err)
			}
		})
	}
}
