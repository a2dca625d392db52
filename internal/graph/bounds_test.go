package graph_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/storage"
)

// countingBlobs is a graph.Blobs that counts the reads of each blob.
type countingBlobs struct {
	graph.Blobs
	mu    sync.Mutex
	reads map[string]int
}

func (c *countingBlobs) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	c.mu.Lock()
	c.reads[path]++
	c.mu.Unlock()
	return c.Blobs.Reader(ctx, path, offset)
}

func (c *countingBlobs) readsOf(d digest.Digest) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.reads[storage.BlobPath(d)]
}

// rawManifest is a manifest pushed as written (remote.Put).
type rawManifest struct {
	b  []byte
	mt types.MediaType
}

func (r rawManifest) RawManifest() ([]byte, error)        { return r.b, nil }
func (r rawManifest) MediaType() (types.MediaType, error) { return r.mt, nil }

// putRaw pushes a manifest as written, its blobs pushed before.
func (e *env) putRaw(repo string, mt types.MediaType, v any) digest.Digest {
	e.t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		e.t.Fatal(err)
	}
	ref, err := name.ParseReference(e.host+"/"+repo, name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := remote.Put(ref, rawManifest{b, mt}); err != nil {
		e.t.Fatal(err)
	}
	return digest.FromBytes(b)
}

// TestIndexBoundsRepeatedEntries: an index listing its image 1,000
// times, or whose attestation lists its provenance statement 1,000 times,
// is indexed reading each blob once, and finds the same base. Before,
// every entry was read and worked through again: the image's
// configuration read 1,000 times, the statement 1,000 times (a 4 MiB
// manifest listing a 4 MiB statement ~18,000 times: ~70 GiB read, and as
// many materials looked up, per attempt of the job).
func TestIndexBoundsRepeatedEntries(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect)
			base := image(t, nil, "linux/amd64", layer(t, "node 22", gzip.BestSpeed))
			bd := e.push("mirror/node:22", base)
			e.index("mirror/node", bd)
			app := image(t, base, "", layer(t, "app", gzip.BestSpeed))
			ad := e.push("team/web:app", app)
			st, _ := json.Marshal(map[string]any{"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2",
				"predicate": map[string]any{"materials": []map[string]any{
					{"uri": "pkg:docker/node@22?platform=linux%2Famd64", "digest": map[string]string{"sha256": bd.Encoded()}},
				}}})
			statement := static.NewLayer(st, "application/vnd.in-toto+json")
			attest, err := mutate.Append(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON),
				mutate.Addendum{Layer: statement, Annotations: map[string]string{"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}})
			if err != nil {
				t.Fatal(err)
			}
			e.push("team/web:attest", attest) // its blobs
			am, err := attest.Manifest()
			if err != nil {
				t.Fatal(err)
			}
			sd := digest.Digest(am.Layers[0].Digest.String())
			appDesc := v1.Descriptor{MediaType: types.OCIManifestSchema1, Size: mustSize(t, app), Digest: mustHash(t, app),
				Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}
			cfg, err := app.ConfigName()
			if err != nil {
				t.Fatal(err)
			}
			const n = 1000

			t.Run("statement listed 1000 times", func(t *testing.T) {
				many := *am
				many.Layers = nil
				for range n {
					many.Layers = append(many.Layers, am.Layers[0])
				}
				manyAttest := e.putRaw("team/web:attest-many", types.OCIManifestSchema1, many)
				h, _ := v1.NewHash(manyAttest.String())
				idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{appDesc,
					{MediaType: types.OCIManifestSchema1, Size: int64(len(mustJSON(t, many))), Digest: h,
						Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": ad.String()}}}}
				id := e.putRaw("team/web:1", types.OCIImageIndex, idx)
				blobs := &countingBlobs{Blobs: e.driver, reads: map[string]int{}}
				x := graph.NewIndexer(e.db.Manifests(), e.db.Graph(), blobs, slog.New(slog.DiscardHandler))
				if err := x.Index(ctx, "team/web", id); err != nil {
					t.Fatal(err)
				}
				if got := blobs.readsOf(sd); got != 1 {
					t.Fatalf("the provenance statement, listed %d times, was read %d times; want 1", n, got)
				}
				e.expectBases("team/web", ad, want{"mirror/node", "22", graph.MethodProvenance, bd, 1})
			})

			t.Run("image listed 1000 times", func(t *testing.T) {
				idx := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
				for range n {
					idx.Manifests = append(idx.Manifests, appDesc)
				}
				id := e.putRaw("team/web:2", types.OCIImageIndex, idx)
				blobs := &countingBlobs{Blobs: e.driver, reads: map[string]int{}}
				x := graph.NewIndexer(e.db.Manifests(), e.db.Graph(), blobs, slog.New(slog.DiscardHandler))
				if err := x.Index(ctx, "team/web", id); err != nil {
					t.Fatal(err)
				}
				if got := blobs.readsOf(digest.Digest(cfg.String())); got != 1 {
					t.Fatalf("the image's configuration, the image listed %d times, was read %d times; want 1", n, got)
				}
				if ok, err := e.db.Graph().Indexed(ctx, "team/web", id); err != nil || !ok {
					t.Fatalf("the index was not recorded as looked at: %v", err)
				}
			})
		})
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func mustSize(t *testing.T, img v1.Image) int64 {
	t.Helper()
	n, err := img.Size()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func mustHash(t *testing.T, img v1.Image) v1.Hash {
	t.Helper()
	h, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h
}
