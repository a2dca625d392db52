package graph_test

import (
	"compress/gzip"
	"context"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestImagePushedToItsOwnBaseTagDoesNotFireForItself: v2 built FROM
// base:latest (v1) and pushed as base:latest (a chained build, a
// `FROM app:latest` rebuild) is no dependent of the move it makes: no
// base_image_updated for v2 (old v1, new v2), and v2 is neither stale
// nor shown on a moved base; an index pushed so (its platform built on
// v1's) neither. Before, latest's period at v1 ended a few µs after v2
// was stored, so v2 was recorded as reached through latest: the move (and
// its catch-up) fired for v2 itself, and a rebuild pipeline pushing to
// latest looped forever.
func TestImagePushedToItsOwnBaseTagDoesNotFireForItself(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		for _, asIndex := range []bool{false, true} {
			name := dialect + "/image"
			if asIndex {
				name = dialect + "/index"
			}
			t.Run(name, func(t *testing.T) {
				ctx := context.Background()
				e := newEnv(t, dialect)
				f := newFeed(e, 0)
				wrap := func(img v1.Image) remote.Taggable {
					if !asIndex {
						return img
					}
					return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
						mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
				}
				v1img := image(t, nil, "linux/amd64", layer(t, "v1", gzip.BestSpeed))
				v2img := image(t, v1img, "", layer(t, "v2", gzip.BestSpeed))
				e.push("team/base:latest", wrap(v1img))
				f.run()
				e.push("team/base:latest", wrap(v2img))
				f.run()
				if got := firedFor(f, "team/base"); len(got) != 0 {
					t.Fatalf("%d base_image_updated for team/base, whose v2 was pushed to the tag it was built from; want 0: %v", len(got), got)
				}
				v1d, v2d := digestOf(t, v1img), digestOf(t, v2img)
				deps, err := e.db.Graph().Dependents(ctx, "team/base", v1d, false, 10)
				if err != nil {
					t.Fatal(err)
				}
				if len(deps) != 1 || deps[0].Digest != v2d || deps[0].Stale {
					t.Fatalf("dependents of v1: %+v; want v2, not stale (the tag it is built through points at v2 itself)", deps)
				}
				bases, err := e.db.Graph().Bases(ctx, "team/base", v2d)
				if err != nil || len(bases) != 1 || bases[0].Digest != v1d || bases[0].Moved {
					t.Fatalf("bases of v2: %+v %v; want v1, not moved", bases, err)
				}
			})
		}
	}
}
