package graph_test

import (
	"compress/gzip"
	"context"
	"testing"

	dispatch "github.com/berth-dev/berth/internal/feed"
	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestBaseTagRecreatedFires: a base tag deleted, then pushed again to
// another digest (a mirror or a script that deletes base:1 and pushes
// base:1 anew) fires base_image_updated once for the image built on it,
// through the feed's subscriber (production) and the service's OnEvent
// alike. Before, a tag the push created queued nothing, and the image
// stayed built on the old base with no trigger. A brand new tag nothing
// was built on queues no job at all.
func TestBaseTagRecreatedFires(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		for _, viaSubscriber := range []bool{true, false} {
			name := dialect + "/on-event"
			if viaSubscriber {
				name = dialect + "/subscriber"
			}
			t.Run(name, func(t *testing.T) {
				ctx := context.Background()
				e := newEnv(t, dialect)
				f := newFeed(e, 0)
				// drain hands the new events to the graph (its feed
				// subscriber, or OnEvent) and returns how many graph jobs
				// they queued; run then runs them all.
				drain, run := f.run, f.run
				pending := func() int {
					t.Helper()
					fig, err := e.db.Figures(ctx)
					if err != nil {
						t.Fatal(err)
					}
					return int(fig.Queues[graph.Queue].Pending)
				}
				if viaSubscriber {
					d := dispatch.New(e.db.Outbox(), []dispatch.Subscriber{f.svc.NewSubscriber(e.db.Jobs())}, dispatch.Options{})
					if err := d.Subscribe(ctx); err != nil {
						t.Fatal(err)
					}
					drain = func() {
						t.Helper()
						if err := d.Drain(ctx); err != nil {
							t.Fatal(err)
						}
					}
					run = func() {
						t.Helper()
						drain()
						f.cursor = 1 << 62 // the jobs only: the subscriber has queued them
						f.run()
					}
				}
				base := image(t, nil, "linux/amd64", layer(t, "base 1", gzip.BestSpeed))
				bd := e.push("mirror/base:1", base)
				public := "public" // named in the event (TestBaseMovedHidesPrivateBase)
				if err := e.db.Repositories().UpdateRepository(ctx, "mirror/base", &public, nil, nil, nil); err != nil {
					t.Fatal(err)
				}
				run()
				ad := e.push("team/app:v1", image(t, base, "", layer(t, "app", gzip.BestSpeed)))
				run()
				e.expectBases("team/app", ad, want{"mirror/base", "1", graph.MethodLayers, bd, 1})
				// A new tag of the base, nothing built through it: no job.
				if err := e.db.Manifests().MoveTag(ctx, "mirror/base", "brand-new", bd, "alice"); err != nil {
					t.Fatal(err)
				}
				if viaSubscriber {
					drain()
					if n := pending(); n != 0 {
						t.Fatalf("a brand new tag nothing is built on queued %d graph jobs", n)
					}
				}
				run()
				// base:1 is deleted, then pushed again, elsewhere.
				if err := e.db.Manifests().DeleteTag(ctx, "mirror/base", "1", "mirror"); err != nil {
					t.Fatal(err)
				}
				patched := image(t, nil, "linux/amd64", layer(t, "base 2", gzip.BestSpeed))
				pd := e.push("mirror/base:1", patched)
				run()
				got := firedFor(f, "team/app")
				if len(got) != 1 {
					t.Fatalf("%d base_image_updated for team/app after its base tag was deleted and pushed again, want 1: %v", len(got), got)
				}
				if b, _ := got[0]["base"].(map[string]any); b["tag"] != "1" || b["old_digest"] != bd.String() || b["new_digest"] != pd.String() {
					t.Fatalf("the event's base: %v", got[0]["base"])
				}
				run()
				if got := firedFor(f, "team/app"); len(got) != 1 {
					t.Fatalf("fired again: %v", got)
				}
			})
		}
	}
}
