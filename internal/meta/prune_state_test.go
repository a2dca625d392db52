package meta_test

import (
	"context"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestAutoPruneOnlyNormalRepositories: as Quay's auto-prune worker, a
// pass prunes only repositories in state NORMAL. A READ_ONLY repository
// refuses every write, a pass's too; a MIRROR repository's tags are its
// mirror's (pruned, they were copied back at the next sync, every cycle).
// Neither is listed, nor pruned when named; a NORMAL one beside them is.
func TestAutoPruneOnlyNormalRepositories(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			repos := []string{"acme/app", "acme/frozen", "acme/mirrored"}
			for _, r := range repos {
				for i := range 3 {
					if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: r, Manifest: manifestOf(fmt.Sprint(r, i)), Tag: fmt.Sprint("t", i)}); err != nil {
						t.Fatal(err)
					}
					time.Sleep(2 * time.Millisecond) // distinct push times
				}
			}
			for r, state := range map[string]string{"acme/frozen": "READ_ONLY", "acme/mirrored": "MIRROR"} {
				if err := db.Repositories().UpdateRepository(ctx, r, nil, &state, nil, nil); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyAutoPrune, Namespace: "acme", Method: meta.PruneByCount, Value: "1", TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			listed, err := db.Manifests().PrunedRepositories(ctx)
			if err != nil || !slices.Equal(listed, []string{"acme/app"}) {
				t.Fatalf("pruned repositories: %v %v, want only acme/app (NORMAL)", listed, err)
			}
			for _, r := range repos {
				gone, err := db.Manifests().PruneRepository(ctx, r, time.Now(), "berth-autoprune")
				if err != nil {
					t.Fatal(err)
				}
				tags, err := db.Manifests().ListTags(ctx, r, "", 100)
				if err != nil {
					t.Fatal(err)
				}
				if r == "acme/app" {
					if !slices.Equal(gone, []string{"t0", "t1"}) || !slices.Equal(tags, []string{"t2"}) {
						t.Fatalf("%s (NORMAL): pruned %v, left %v", r, gone, tags)
					}
					continue
				}
				if len(gone) != 0 || len(tags) != 3 {
					t.Fatalf("%s: pruned %v, left %v; a repository not NORMAL is not pruned", r, gone, tags)
				}
			}
		})
	}
}

// TestAutoPruneStopsWhenTheStateChanges: a repository made READ_ONLY
// while a pass runs is pruned no further: each batch reads the state
// again, in its transaction (on PostgreSQL holding the row, so a change
// waits for the batch or the batch sees it).
func TestAutoPruneStopsWhenTheStateChanges(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			for i := range 5 {
				if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf(fmt.Sprint("b", i)), Tag: fmt.Sprint("t", i)}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * time.Millisecond)
			}
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyAutoPrune, Namespace: "acme", Method: meta.PruneByCount, Value: "1", TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			state := "READ_ONLY"
			gone, err := db.Manifests().WithPruneBatch(1).BetweenBatches(func() {
				if err := db.Repositories().UpdateRepository(ctx, "acme/app", nil, &state, nil, nil); err != nil {
					t.Error(err)
				}
			}).PruneRepository(ctx, "acme/app", time.Now(), "berth-autoprune")
			if err != nil {
				t.Fatal(err)
			}
			tags, _ := db.Manifests().ListTags(ctx, "acme/app", "", 100)
			if !slices.Equal(gone, []string{"t0"}) || len(tags) != 4 {
				t.Fatalf("pruned %v, left %v: only the batch before the repository was made READ_ONLY may go", gone, tags)
			}
		})
	}
}
