package graph_test

import (
	"compress/gzip"
	"context"
	"testing"

	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestBaseIndexedAfterItsDependent: an image pushed before its base (an
// application built on upstream's image before the mirror brought it, a
// namespace's base pushed after its applications) gets that base once
// the base is indexed: one of the application's own namespace, each at its
// depth (the levels renumbered), and the base's tag then fires for it.
// Another tenant's copy stored after the application is not taken up, a
// mirror (which any repository admin can make) no more than any. Before, an image's bases were
// looked up only when it was indexed: team/app stayed built on nothing.
func TestBaseIndexedAfterItsDependent(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect)
			f := newFeed(e, 0)
			osImg := image(t, nil, "linux/amd64", layer(t, "os", gzip.BestSpeed))
			runtime := image(t, osImg, "", layer(t, "runtime", gzip.BestSpeed))
			ad := e.push("team/app:v1", image(t, runtime, "", layer(t, "app", gzip.BestSpeed)))
			f.run()
			e.expectBases("team/app", ad)
			// Another tenant's copy of the runtime, public: not team/app's.
			e.push("aaa/runtime:1", runtime)
			public := "public"
			if err := e.db.Repositories().UpdateRepository(ctx, "aaa/runtime", &public, nil, nil, nil); err != nil {
				t.Fatal(err)
			}
			f.run()
			e.expectBases("team/app", ad)
			// Another tenant's mirror of the OS, set up now: not taken up.
			e.push("evil/os:1", osImg)
			state := "MIRROR"
			if err := e.db.Repositories().UpdateRepository(ctx, "evil/os", &public, &state, nil, nil); err != nil {
				t.Fatal(err)
			}
			f.run()
			e.expectBases("team/app", ad)
			// The namespace's mirror of the OS, set up now.
			od := e.push("team/os:1", osImg)
			if err := e.db.Repositories().UpdateRepository(ctx, "team/os", nil, &state, nil, nil); err != nil {
				t.Fatal(err)
			}
			f.run()
			e.expectBases("team/app", ad, want{"team/os", "1", graph.MethodLayers, od, 1})
			// The namespace's runtime, pushed last: the immediate base.
			rd := e.push("team/runtime:1", runtime)
			f.run()
			e.expectBases("team/app", ad, want{"team/runtime", "1", graph.MethodLayers, rd, 1}, want{"team/os", "1", graph.MethodLayers, od, 2})
			// Its tag moves: team/app fires, once.
			e.push("team/runtime:1", image(t, osImg, "", layer(t, "runtime 2", gzip.BestSpeed)))
			f.run()
			if got := firedFor(f, "team/app"); len(got) != 1 {
				t.Fatalf("%d base_image_updated for team/app after its late base moved, want 1: %v", len(got), got)
			}
		})
	}
}
