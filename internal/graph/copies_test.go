package graph_test

import (
	"compress/gzip"
	"context"
	"fmt"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestBaseCopyElsewhereIsNotTheBase: a base stored in several
// repositories is recorded once, in the repository ranked best for the
// dependent, so that another tenant's copy (aaa/..., public, sorting
// first) never becomes its base: moving that copy's tag fires nothing for
// it, moving the real base's tag fires once. Before, every copy at the
// deepest depth was a level-1 base (by layers) and the alphabetically
// first name-matching copy won (by annotation): Mallory's move of her
// copy sent team/app a base_image_updated naming her image.
func TestBaseCopyElsewhereIsNotTheBase(t *testing.T) {
	cases := []struct {
		name string
		// pushed holds the repositories storing the base, in push order;
		// real is the one the dependent must be built on.
		pushed []string
		real   string
		// mirror is a repository made a mirror (repository state MIRROR)
		// by its tenant: it ranks no better for that.
		mirror string
		// annotation is the dependent's base name annotation ("": found
		// by layers).
		annotation string
	}{
		{name: "layers, a tenant's mirror earns nothing", pushed: []string{"platform/ubi", "aaa/ubi"}, real: "platform/ubi", mirror: "aaa/ubi"},
		{name: "layers, own namespace over an earlier copy", pushed: []string{"aaa/ubi", "team/ubi"}, real: "team/ubi"},
		{name: "layers, the first stored", pushed: []string{"platform/ubi", "aaa/ubi"}, real: "platform/ubi"},
		{name: "annotation, a tenant's mirror earns nothing", pushed: []string{"platform/ubi", "aaa/ubi"}, real: "platform/ubi", mirror: "aaa/ubi",
			annotation: "docker.io/redhat/ubi:1.9"},
		{name: "annotation, the exact name over a suffix", pushed: []string{"aaa/mirror/ubi", "mirror/ubi"}, real: "mirror/ubi",
			annotation: "registry.example.com/mirror/ubi:1.9"},
		{name: "annotation, the exact name over own namespace", pushed: []string{"team/ubi", "aaa/ubi"}, real: "aaa/ubi",
			annotation: "registry.example.com/aaa/ubi:1.9"},
	}
	for _, dialect := range metatest.Dialects() {
		for _, c := range cases {
			t.Run(dialect+"/"+c.name, func(t *testing.T) {
				ctx := context.Background()
				e := newEnv(t, dialect)
				f := newFeed(e, 0)
				base := image(t, nil, "linux/amd64", layer(t, "ubi 1.9-1", gzip.BestSpeed))
				bd := digestOf(t, base)
				public := "public"
				for _, repo := range c.pushed {
					e.push(repo+":1.9", base)
					if err := e.db.Repositories().UpdateRepository(ctx, repo, &public, nil, nil, nil); err != nil {
						t.Fatal(err)
					}
					f.run()
				}
				if c.mirror != "" {
					state := "MIRROR"
					if err := e.db.Repositories().UpdateRepository(ctx, c.mirror, nil, &state, nil, nil); err != nil {
						t.Fatal(err)
					}
				}
				app := image(t, base, "", layer(t, "app", gzip.BestSpeed))
				method := graph.MethodLayers
				if c.annotation != "" {
					app = mutate.Annotations(app, map[string]string{graph.AnnotationBaseName: c.annotation, graph.AnnotationBaseDigest: bd.String()}).(v1.Image)
					method = graph.MethodAnnotation
				}
				ad := e.push("team/app:v1", app)
				f.run()
				e.expectBases("team/app", ad, want{c.real, "1.9", method, bd, 1})
				// Every other copy's tag moves: nothing fires for team/app.
				for i, repo := range c.pushed {
					if repo != c.real {
						e.push(repo+":1.9", image(t, nil, "linux/amd64", layer(t, fmt.Sprintf("someone else's %d", i), gzip.BestSpeed)))
					}
				}
				f.run()
				if got := firedFor(f, "team/app"); len(got) != 0 {
					t.Fatalf("another repository's copy moved, and team/app was told its base moved: %v", got)
				}
				// The real base's tag moves: once, naming it.
				patched := image(t, nil, "linux/amd64", layer(t, "ubi 1.9-2", gzip.BestSpeed))
				e.push(c.real+":1.9", patched)
				f.run()
				got := firedFor(f, "team/app")
				if len(got) != 1 {
					t.Fatalf("%d base_image_updated for team/app after its base moved, want 1: %v", len(got), got)
				}
				if b, _ := got[0]["base"].(map[string]any); b["repository"] != c.real || b["new_digest"] != digestOf(t, patched).String() {
					t.Fatalf("the event's base: %v", got[0]["base"])
				}
			})
		}
	}
}

// TestBaseCopiesCannotCrowdOut: more copies of a base's layers than a
// lookup used to return (100, in a repository whose name sorts first) do
// not push the real base out: it is still the image's one level-1 base,
// and the level below is still found. Before, the lookup's LIMIT was
// filled by the copies: the mirror was not among the image's bases at
// all, and each of the 100 copies was.
func TestBaseCopiesCannotCrowdOut(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect)
			osImg := image(t, nil, "linux/amd64", layer(t, "os", gzip.BestSpeed))
			od := e.push("mirror/os:1", osImg)
			e.index("mirror/os", od)
			base := image(t, osImg, "", layer(t, "runtime", gzip.BestSpeed))
			bd := e.push("mirror/runtime:1", base)
			e.index("mirror/runtime", bd)
			// 100 images with the base's layers (their configurations
			// differ), in aaa/runtime.
			for i := range 100 {
				cf, err := base.ConfigFile()
				if err != nil {
					t.Fatal(err)
				}
				cf = cf.DeepCopy()
				cf.Config.Labels = map[string]string{"copy": fmt.Sprint(i)}
				cp, err := mutate.ConfigFile(base, cf)
				if err != nil {
					t.Fatal(err)
				}
				e.index("aaa/runtime", e.push(fmt.Sprintf("aaa/runtime:c%d", i), cp))
			}
			state := "MIRROR"
			for _, repo := range []string{"mirror/os", "mirror/runtime"} {
				if err := e.db.Repositories().UpdateRepository(ctx, repo, nil, &state, nil, nil); err != nil {
					t.Fatal(err)
				}
			}
			ad := e.push("team/app:v1", image(t, base, "", layer(t, "app", gzip.BestSpeed)))
			e.index("team/app", ad)
			e.expectBases("team/app", ad, want{"mirror/runtime", "1", graph.MethodLayers, bd, 1}, want{"mirror/os", "1", graph.MethodLayers, od, 2})
		})
	}
}

// firedFor returns the base_image_updated events of a repository.
func firedFor(f *feed, repo string) []map[string]any {
	var out []map[string]any
	for _, ev := range f.fired() {
		if ev["_repository"] == repo {
			out = append(out, ev)
		}
	}
	return out
}
