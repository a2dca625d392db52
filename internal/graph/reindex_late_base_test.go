package graph_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestReindexDoesNotTakeUpALaterCopy: an image indexed again (an index
// pushed over it, by its layers or naming its base by digest) keeps what
// it had, not another tenant's copy of its base stored after it: moving
// that copy's tag fires nothing for it. An image stored after the copy is
// still built on it (a copy stored first ranks), and its move fires for
// that one. Before, each child of an index was looked at again and the
// lookups ranked every copy: team/app was recorded as built on
// aaa/runtime, and Mallory's moves of her tag sent it base_image_updated.
func TestReindexDoesNotTakeUpALaterCopy(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect)
			f := newFeed(e, 0)
			osImg := image(t, nil, "linux/amd64", layer(t, "os", gzip.BestSpeed))
			runtime := image(t, osImg, "", layer(t, "runtime", gzip.BestSpeed))
			app := image(t, runtime, "", layer(t, "app", gzip.BestSpeed))
			ad := e.push("team/app:v1", app)
			f.run()
			e.expectBases("team/app", ad)
			// Another tenant's copy of the runtime, public, stored later.
			rd := e.push("aaa/runtime:1", runtime)
			public := "public"
			if err := e.db.Repositories().UpdateRepository(ctx, "aaa/runtime", &public, nil, nil, nil); err != nil {
				t.Fatal(err)
			}
			f.run()
			e.expectBases("team/app", ad)
			// An index over the existing image: by its layers.
			platform := v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}
			idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex), mutate.IndexAddendum{Add: app, Descriptor: platform})
			e.push("team/app:multi", idx)
			f.run()
			e.expectBases("team/app", ad)
			// An index naming the base by digest (as upstream's name).
			named := mutate.Annotations(idx, map[string]string{
				graph.AnnotationBaseName:   "docker.io/library/runtime:1",
				graph.AnnotationBaseDigest: rd.String(),
			}).(v1.ImageIndex)
			e.push("team/app:named", named)
			f.run()
			e.expectBases("team/app", ad)
			// An image stored after the copy: built on it.
			nd := e.push("team/new:1", image(t, runtime, "", layer(t, "new", gzip.BestSpeed)))
			f.run()
			e.expectBases("team/new", nd, want{"aaa/runtime", "1", graph.MethodLayers, rd, 1})
			// Mallory moves her tag: team/new fires, team/app does not.
			e.push("aaa/runtime:1", image(t, osImg, "", layer(t, "runtime 2", gzip.BestSpeed)))
			f.run()
			if got := firedFor(f, "team/new"); len(got) != 1 {
				t.Fatalf("%d base_image_updated for team/new, built on aaa/runtime:1 after it was stored; want 1: %v", len(got), got)
			}
			if got := firedFor(f, "team/app"); len(got) != 0 {
				t.Fatalf("%d base_image_updated for team/app, stored before aaa/runtime; want 0: %v", len(got), got)
			}
		})
	}
}

// TestBacklogDoesNotTakeUpALaterCopy: an image indexed for the first time
// only after another tenant's copy of its base, stored after it, was (the
// graph's queue behind) is not built on that copy.
func TestBacklogDoesNotTakeUpALaterCopy(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect)
			osImg := image(t, nil, "linux/amd64", layer(t, "os", gzip.BestSpeed))
			runtime := image(t, osImg, "", layer(t, "runtime", gzip.BestSpeed))
			ad := e.push("team/app:v1", image(t, runtime, "", layer(t, "app", gzip.BestSpeed)))
			rd := e.push("aaa/runtime:1", runtime)
			e.index("aaa/runtime", rd)
			e.index("team/app", ad)
			e.expectBases("team/app", ad)
		})
	}
}

// TestHeldBaseDoesNotLinkALaterCopy: a base of the namespace held by a
// gate when it is indexed (nobody's base until published) does not link
// the namespace's earlier images to another tenant's copy of it stored
// after them instead. Before, the images built on its layers were
// recorded on the best published copy, which was Mallory's.
func TestHeldBaseDoesNotLinkALaterCopy(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect)
			f := newFeed(e, 0)
			osImg := image(t, nil, "linux/amd64", layer(t, "os", gzip.BestSpeed))
			ad := e.push("team/app:v1", image(t, osImg, "", layer(t, "app", gzip.BestSpeed)))
			f.run()
			e.push("aaa/os:1", osImg)
			public := "public"
			if err := e.db.Repositories().UpdateRepository(ctx, "aaa/os", &public, nil, nil, nil); err != nil {
				t.Fatal(err)
			}
			f.run()
			e.expectBases("team/app", ad)
			e.push("team/os:scratch", image(t, nil, "linux/amd64", layer(t, "scratch", gzip.BestSpeed)))
			if err := e.db.Gates().PutGate(ctx, meta.Gate{Repository: "team/os", Tags: []string{"prod"},
				Config: json.RawMessage(`{"tags":["prod"]}`)}); err != nil {
				t.Fatal(err)
			}
			e.push("team/os:prod", osImg) // a candidate: held
			f.run()
			e.expectBases("team/app", ad)
		})
	}
}
