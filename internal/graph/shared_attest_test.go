package graph_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestIndexReadsSharedAttestationOnce: an index of 20 images (one
// configuration) whose attestation entries all name one attestation
// manifest of 16 provenance statements is indexed reading each statement
// and the configuration once, and each image still finds its base by
// provenance. Before, the attestation was worked through again for every
// image (320 statement reads; 256 images: 4,096 reads of up to 4 MiB per
// attempt of the job), and the shared configuration read 20 times.
func TestIndexReadsSharedAttestationOnce(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect)
			base := image(t, nil, "linux/amd64", layer(t, "node 22", gzip.BestSpeed))
			bd := e.push("mirror/node:22", base)
			e.index("mirror/node", bd)
			app := image(t, base, "", layer(t, "app", gzip.BestSpeed))
			const images, statements = 20, 16
			var adds []mutate.Addendum
			for i := range statements {
				st, _ := json.Marshal(map[string]any{"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2",
					"predicate": map[string]any{"materials": []map[string]any{
						{"uri": fmt.Sprintf("pkg:docker/node@22?platform=linux%%2Famd64&n=%d", i), "digest": map[string]string{"sha256": bd.Encoded()}},
					}}})
				adds = append(adds, mutate.Addendum{Layer: static.NewLayer(st, "application/vnd.in-toto+json"),
					Annotations: map[string]string{"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}})
			}
			attest, err := mutate.Append(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON), adds...)
			if err != nil {
				t.Fatal(err)
			}
			e.push("team/web:attest", attest)
			am, err := attest.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			attestDesc := v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: mustSize(t, attest), Digest: mustHash(t, attest)}
			idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
			var ds []digest.Digest
			for i := range images {
				img := mutate.Annotations(app, map[string]string{"n": fmt.Sprint(i)}).(v1.Image)
				d := e.push(fmt.Sprintf("team/web:i%d", i), img)
				ds = append(ds, d)
				idx.Manifests = append(idx.Manifests, v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: mustSize(t, img), Digest: mustHash(t, img),
					Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}})
				a := attestDesc
				a.Annotations = map[string]string{"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": d.String()}
				idx.Manifests = append(idx.Manifests, a)
			}
			id := e.putRaw("team/web:1", types.OCIImageIndex, idx)
			blobs := &countingBlobs{Blobs: e.driver, reads: map[string]int{}}
			x := graph.NewIndexer(e.db.Manifests(), e.db.Graph(), blobs, slog.New(slog.DiscardHandler))
			if err := x.Index(ctx, "team/web", id); err != nil {
				t.Fatal(err)
			}
			read := 0
			for _, l := range am.Layers {
				read += blobs.readsOf(digest.Digest(l.Digest.String()))
			}
			if read > statements {
				t.Fatalf("%d images naming one attestation of %d statements: %d statement reads; want at most %d", images, statements, read, statements)
			}
			cfg, err := app.ConfigName()
			if err != nil {
				t.Fatal(err)
			}
			if got := blobs.readsOf(digest.Digest(cfg.String())); got != 1 {
				t.Fatalf("the configuration %d images share was read %d times; want 1", images, got)
			}
			if n := len(blobs.reads); n != statements+1 {
				t.Fatalf("%d blobs read; want %d (the statements and the configuration): %v", n, statements+1, blobs.reads)
			}
			for _, d := range ds {
				e.expectBases("team/web", d, want{"mirror/node", "22", graph.MethodProvenance, bd, 1})
			}
		})
	}
}
