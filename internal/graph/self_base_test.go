package graph_test

import (
	"compress/gzip"
	"context"
	"fmt"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

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
	pushedAsImageAndIndex(t, func(t *testing.T, e *env, f *feed, wrap func(v1.Image) remote.Taggable) {
		ctx := context.Background()
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

// TestImagePushedToItsOwnBaseTagStaysQuietWhenTheTagMovesOn: each
// version pushed to the tag it was built from and to a tag of its own
// (app:latest and app:sha1, v2 FROM app:latest as app:latest and
// app:sha2, v3 FROM app:latest as app:latest and app:sha3). Once latest
// pointed at v2, v2 is no longer reached through it: latest moving on to
// v3 fires no base_image_updated for v2 (still tagged sha2), and v2 is
// neither stale nor on a moved base. Before, only the image the tag
// points at now was left out, so the v2→v3 move fired for v2 (old v1,
// new v3), whose rebuild pushed to latest again, without end.
func TestImagePushedToItsOwnBaseTagStaysQuietWhenTheTagMovesOn(t *testing.T) {
	pushedAsImageAndIndex(t, func(t *testing.T, e *env, f *feed, wrap func(v1.Image) remote.Taggable) {
		ctx := context.Background()
		v1img := image(t, nil, "linux/amd64", layer(t, "v1", gzip.BestSpeed))
		v2img := image(t, v1img, "", layer(t, "v2", gzip.BestSpeed))
		v3img := image(t, v2img, "", layer(t, "v3", gzip.BestSpeed))
		for i, img := range []v1.Image{v1img, v2img, v3img} {
			e.push("team/base:latest", wrap(img))
			e.push(fmt.Sprintf("team/base:sha%d", i+1), wrap(img))
			f.run()
		}
		if got := firedFor(f, "team/base"); len(got) != 0 {
			t.Fatalf("%d base_image_updated for team/base, each version pushed to the tag it was built from; want 0: %v", len(got), got)
		}
		v1d, v2d, v3d := digestOf(t, v1img), digestOf(t, v2img), digestOf(t, v3img)
		for _, c := range []struct{ base, dep digest.Digest }{{v1d, v2d}, {v2d, v3d}} {
			deps, err := e.db.Graph().Dependents(ctx, "team/base", c.base, false, 10)
			if err != nil {
				t.Fatal(err)
			}
			if len(deps) != 1 || deps[0].Digest != c.dep || deps[0].Stale {
				t.Fatalf("dependents of %s: %+v; want %s, not stale (the tag it is built through has pointed at it since)", c.base, deps, c.dep)
			}
			bases, err := e.db.Graph().Bases(ctx, "team/base", c.dep)
			if err != nil || len(bases) == 0 {
				t.Fatalf("bases of %s: %+v %v; want %s", c.dep, bases, err, c.base)
			}
			for _, b := range bases {
				if b.Level == 1 && b.Digest != c.base || b.Moved {
					t.Fatalf("bases of %s: %+v; want %s immediately (through latest and its own tag), none moved", c.dep, bases, c.base)
				}
			}
		}
	})
}

// pushedAsImageAndIndex runs body on each database twice: with wrap
// pushing an image as it is, and as an OCI index of that one platform.
func pushedAsImageAndIndex(t *testing.T, body func(t *testing.T, e *env, f *feed, wrap func(v1.Image) remote.Taggable)) {
	for _, dialect := range metatest.Dialects() {
		for _, asIndex := range []bool{false, true} {
			name := dialect + "/image"
			if asIndex {
				name = dialect + "/index"
			}
			t.Run(name, func(t *testing.T) {
				e := newEnv(t, dialect)
				body(t, e, newFeed(e, 0), func(img v1.Image) remote.Taggable {
					if !asIndex {
						return img
					}
					return mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
						mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
				})
			})
		}
	}
}
