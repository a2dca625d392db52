package graph_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestHeldCandidateIsNoBase: a gate's held candidate (not published:
// readers of its repository do not see it) is no one's base until it is
// published: not found by its layers for an image indexed after it, not
// linked to the images indexed before it, not taken by the digest a base
// annotation names, and a base recorded on it is not shown (GET
// .../manifest/{d}/bases reads Bases). Before, its digest was recorded
// and shown as the base of published images. Published, it is a base as
// any image is.
func TestHeldCandidateIsNoBase(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect)
			f := newFeed(e, 0)
			e.push("team/base:scratch", image(t, nil, "linux/amd64", layer(t, "scratch", gzip.BestSpeed)))
			// An application of the namespace built on the base's layers,
			// pushed before the base.
			held := image(t, nil, "linux/amd64", layer(t, "os", gzip.BestSpeed))
			early := e.push("team/early:1", image(t, held, "", layer(t, "early", gzip.BestSpeed)))
			f.run()
			if err := e.db.Gates().PutGate(ctx, meta.Gate{Repository: "team/base", Tags: []string{"prod"},
				Config: json.RawMessage(`{"tags":["prod"]}`)}); err != nil {
				t.Fatal(err)
			}
			hd := e.push("team/base:prod", held) // a candidate: held
			f.run()
			if ok, err := e.db.Graph().Indexed(ctx, "team/base", hd); err != nil || !ok {
				t.Fatalf("the held candidate was not indexed: %v", err)
			}
			e.expectBases("team/early", early)
			// By layers, indexed after it.
			app := e.push("team/app:1", image(t, held, "", layer(t, "app", gzip.BestSpeed)))
			// By the digest its base annotation names.
			named := mutate.Annotations(image(t, held, "", layer(t, "named", gzip.BestSpeed)), map[string]string{
				graph.AnnotationBaseName: "reg.example/team/base:prod", graph.AnnotationBaseDigest: hd.String()}).(v1.Image)
			nd := e.push("team/named:1", named)
			f.run()
			e.expectBases("team/app", app)
			e.expectBases("team/named", nd)
			// A base recorded on it (before this was refused) is not shown.
			ri, err := e.db.Repositories().Repository(ctx, "team/base")
			if err != nil {
				t.Fatal(err)
			}
			if err := e.db.Graph().SetBases(ctx, "team/app", app, []meta.BaseLink{{RepositoryID: ri.ID, Digest: hd, Method: graph.MethodLayers, Level: 1, Layers: 1}}); err != nil {
				t.Fatal(err)
			}
			e.expectBases("team/app", app)

			// Published (the gate deleted releases what it held): shown, and
			// a base of the images indexed after.
			if err := e.db.Gates().DeleteGate(ctx, "team/base"); err != nil {
				t.Fatal(err)
			}
			e.expectBases("team/app", app, want{"team/base", "", graph.MethodLayers, hd, 1})
			later := e.push("team/later:1", image(t, held, "", layer(t, "later", gzip.BestSpeed)))
			f.run()
			e.expectBases("team/later", later, want{"team/base", "", graph.MethodLayers, hd, 1})
		})
	}
}
