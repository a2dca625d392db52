package graph_test

import (
	"compress/gzip"
	"context"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestBaseMovedWhileUntaggedFiresOnceTagged: an image indexed while not
// tagged (pushed by digest, or a gate's held candidate) whose base tag
// moves before it is tagged (PUT .../tag, a promotion) fires
// base_image_updated once it is tagged: once, old A, new B. Before, the
// move's job and the image's catch-up skipped it (untagged), and tagging
// it (a repo_push of a manifest stored before: nothing indexed) queued
// nothing: the image was stale and never fired for that move.
func TestBaseMovedWhileUntaggedFiresOnceTagged(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		for _, how := range []string{"by-digest", "held-candidate"} {
			t.Run(dialect+"/"+how, func(t *testing.T) {
				ctx := context.Background()
				e := newEnv(t, dialect)
				f := newFeed(e, 0)
				a := image(t, nil, "linux/amd64", layer(t, "base A", gzip.BestSpeed))
				ad := e.push("team/base:1", a)
				e.push("team/app:scratch", image(t, nil, "linux/amd64", layer(t, "scratch", gzip.BestSpeed)))
				f.run()
				app := image(t, a, "", layer(t, "app", gzip.BestSpeed))
				cd := digestOf(t, app)
				var g *gated
				if how == "by-digest" {
					e.push("team/app@"+cd.String(), app)
				} else {
					g = newGated(t, e, f, "team/app", `{"tags":["prod"],"policy":"tag == \"prod\""}`)
					e.push("team/app:prod", app) // held
				}
				f.run()
				if ok, err := e.db.Graph().Indexed(ctx, "team/app", cd); err != nil || !ok {
					t.Fatalf("the image was not indexed before the move: %v", err)
				}
				bd := e.push("team/base:1", image(t, nil, "linux/amd64", layer(t, "base B", gzip.BestSpeed)))
				f.run()
				if got := firedFor(f, "team/app"); len(got) != 0 {
					t.Fatalf("fired for an image not tagged: %v", got)
				}
				if how == "by-digest" {
					if err := e.db.Manifests().MoveTag(ctx, "team/app", "v1", cd, "alice"); err != nil {
						t.Fatal(err)
					}
				} else {
					c := g.candidate("team/app")
					if ev := g.evaluate(c.ID); ev.State != meta.CandidatePromoted {
						t.Fatalf("candidate %s %q", ev.State, ev.Reasons)
					}
				}
				f.run()
				got := firedFor(f, "team/app")
				if len(got) != 1 {
					t.Fatalf("%d base_image_updated for team/app, tagged after its base moved; want 1: %v", len(got), got)
				}
				if b, _ := got[0]["base"].(map[string]any); got[0]["digest"] != cd.String() || b["tag"] != "1" || b["old_digest"] != ad.String() || b["new_digest"] != bd.String() {
					t.Fatalf("the event: digest %v, base %v; want %s built on %s, moved to %s", got[0]["digest"], got[0]["base"], cd, ad, bd)
				}
				// Tagged again: nothing more.
				if err := e.db.Manifests().MoveTag(ctx, "team/app", "again", cd, "alice"); err != nil {
					t.Fatal(err)
				}
				f.run()
				if got := firedFor(f, "team/app"); len(got) != 1 {
					t.Fatalf("fired again on another tag: %v", got)
				}
			})
		}
	}
}
