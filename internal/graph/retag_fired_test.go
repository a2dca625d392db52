package graph_test

import (
	"compress/gzip"
	"context"
	"testing"

	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestRetagAfterFiredQueuesNoMove: an image tagged when its base tag
// moved heard of the move then; tagging it again (PUT .../tag, a second
// tag pushed) queues no graph job for that move, however many times it
// is retagged, as an index or not. Before, each retag's repo_push queued
// a moved job per base move the image was built before (MissedMoves did
// not ask whether it had fired), each finding nothing to fire.
func TestRetagAfterFiredQueuesNoMove(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect)
			f := newFeed(e, 0)
			a := image(t, nil, "linux/amd64", layer(t, "base A", gzip.BestSpeed))
			e.push("team/base:1", a)
			f.run()
			app := image(t, a, "", layer(t, "app", gzip.BestSpeed))
			cd := e.push("team/app:v1", app)
			f.run()
			e.push("team/base:1", image(t, nil, "linux/amd64", layer(t, "base B", gzip.BestSpeed)))
			f.run()
			if got := firedFor(f, "team/app"); len(got) != 1 {
				t.Fatalf("%d base_image_updated for team/app after its base moved; want 1: %v", len(got), got)
			}
			for _, tag := range []string{"again", "v1"} {
				if err := e.db.Manifests().MoveTag(ctx, "team/app", tag, cd, "alice"); err != nil {
					t.Fatal(err)
				}
			}
			e.push("team/app:pushed-again", app)
			evs, err := e.db.Outbox().EventsAfter(ctx, f.cursor, 100)
			if err != nil {
				t.Fatal(err)
			}
			queued := 0
			for _, ev := range evs {
				js, err := f.svc.Jobs(ctx, ev)
				if err != nil {
					t.Fatal(err)
				}
				queued += len(js)
			}
			if queued != 0 {
				t.Fatalf("retagging an image that heard of its base's move queued %d graph jobs; want 0", queued)
			}
		})
	}
}
