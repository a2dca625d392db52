package meta_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// BenchmarkGraphLookup times the graph's lookups among many stored images
// (BERTH_BENCH_GRAPH_IMAGES, default 100000): 100 bases, the rest built on
// them (one layer each on top of their base's three), spread over 100
// repositories. Setting up takes a while (every image is pushed, indexed
// and linked through the store, as the server would):
//
//	go test ./internal/meta -run '^$' -bench GraphLookup -benchtime 200x
func BenchmarkGraphLookup(b *testing.B) {
	n := 100000
	if v, err := strconv.Atoi(os.Getenv("BERTH_BENCH_GRAPH_IMAGES")); err == nil && v > 0 {
		n = v
	}
	for _, dialect := range metatest.Dialects() {
		b.Run(dialect, func(b *testing.B) {
			ctx := context.Background()
			db := metatest.Open(b, dialect)
			m, g := db.Manifests(), db.Graph()
			const bases = 100
			baseChain := func(i int) []digest.Digest {
				return chainOf(fmt.Sprintf("os-%d", i), fmt.Sprintf("lib-%d", i), fmt.Sprintf("runtime-%d", i))
			}
			var baseRepoID int64
			for i := range bases {
				man := manifestOf(fmt.Sprintf("base %d", i))
				if err := m.PutManifest(ctx, meta.PutManifest{Repository: "base/img", Manifest: man, Tag: fmt.Sprintf("v%d", i)}); err != nil {
					b.Fatal(err)
				}
				if err := g.RecordImage(ctx, meta.GraphImage{Repository: "base/img", Digest: man.Digest, Platform: "linux/amd64", Chain: baseChain(i)}); err != nil {
					b.Fatal(err)
				}
			}
			nodes, err := g.ImagesWithChains(ctx, baseChain(0)[2:], 1)
			if err != nil || len(nodes) != 1 {
				b.Fatalf("%v %v", nodes, err)
			}
			baseRepoID = nodes[0].RepositoryID
			for i := range n - bases {
				k := i % bases
				man := manifestOf(fmt.Sprintf("app %d", i))
				repo := fmt.Sprintf("apps/r-%d", i%100)
				if err := m.PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: man, Tag: fmt.Sprintf("t%d", i)}); err != nil {
					b.Fatal(err)
				}
				chain := append(baseChain(k), digest.FromString(fmt.Sprintf("app layer %d", i)))
				if err := g.RecordImage(ctx, meta.GraphImage{Repository: repo, Digest: man.Digest, Platform: "linux/amd64", Chain: chain}); err != nil {
					b.Fatal(err)
				}
				link := []meta.BaseLink{{RepositoryID: baseRepoID, Digest: manifestOf(fmt.Sprintf("base %d", k)).Digest, Method: "layers", Level: 1, Layers: 3}}
				if err := g.SetBases(ctx, repo, man.Digest, link); err != nil {
					b.Fatal(err)
				}
			}
			probe := append(baseChain(7), digest.FromString("a new image's layer"))
			b.Run("BaseOfANewImage", func(b *testing.B) {
				for range b.N {
					if nodes, err := g.ImagesWithChains(ctx, probe[:len(probe)-1], 100); err != nil || len(nodes) != 1 {
						b.Fatalf("%v %v", nodes, err)
					}
				}
			})
			base7 := manifestOf("base 7").Digest
			want := (n - bases) / bases
			b.Run("DependentsOfABase", func(b *testing.B) {
				for range b.N {
					if deps, err := g.Dependents(ctx, "base/img", base7, false, 5000); err != nil || len(deps) != want {
						b.Fatalf("%d dependents, %v; want %d", len(deps), err, want)
					}
				}
			})
			app := manifestOf("app 7").Digest
			b.Run("BasesOfAnImage", func(b *testing.B) {
				for range b.N {
					if bs, err := g.Bases(ctx, "apps/r-7", app); err != nil || len(bs) != 1 {
						b.Fatalf("%v %v", bs, err)
					}
				}
			})
		})
	}
}
