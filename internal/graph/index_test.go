package graph_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

type env struct {
	t      *testing.T
	db     *meta.DB
	host   string
	x      *graph.Indexer
	driver *fs.Driver
}

func newEnv(t *testing.T, dialect string) *env {
	t.Helper()
	db := metatest.Open(t, dialect)
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	srv := httptest.NewServer(registry.New(wire.RegistryStores(db), driver, registry.Options{Policy: policy, Logger: log}))
	t.Cleanup(srv.Close)
	return &env{t: t, db: db, host: strings.TrimPrefix(srv.URL, "http://"), x: graph.NewIndexer(db.Manifests(), db.Graph(), driver, log), driver: driver}
}

// layer is a gzipped tar layer holding one file; level is the gzip level,
// so the same content can be compressed two ways.
func layer(t *testing.T, file string, level int) v1.Layer {
	t.Helper()
	var raw bytes.Buffer
	tw := tar.NewWriter(&raw)
	if err := tw.WriteHeader(&tar.Header{Name: file, Mode: 0o644, Size: int64(len(file)), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	tw.Write([]byte(file))
	tw.Close()
	l, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) { return io.NopCloser(bytes.NewReader(raw.Bytes())), nil },
		tarball.WithCompressionLevel(level), tarball.WithMediaType(types.OCILayer))
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func image(t *testing.T, base v1.Image, platform string, layers ...v1.Layer) v1.Image {
	t.Helper()
	if base == nil {
		base = mutate.MediaType(empty.Image, types.OCIManifestSchema1)
		base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
		os, arch, _ := strings.Cut(platform, "/")
		cf, _ := base.ConfigFile()
		cf = cf.DeepCopy()
		cf.OS, cf.Architecture = os, arch
		var err error
		if base, err = mutate.ConfigFile(base, cf); err != nil {
			t.Fatal(err)
		}
	}
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func (e *env) push(repo string, w remote.Taggable) digest.Digest {
	e.t.Helper()
	ref, err := name.ParseReference(e.host+"/"+repo, name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	switch x := w.(type) {
	case v1.ImageIndex:
		err = remote.WriteIndex(ref, x)
	case v1.Image:
		err = remote.Write(ref, x)
	}
	if err != nil {
		e.t.Fatal(err)
	}
	d, _ := w.(interface{ Digest() (v1.Hash, error) }).Digest()
	return digest.Digest(d.String())
}

func (e *env) index(repo string, d digest.Digest) {
	e.t.Helper()
	if err := e.x.Index(context.Background(), repo, d); err != nil {
		e.t.Fatal(err)
	}
}

type want struct {
	repo, tag, method string
	digest            digest.Digest
	level             int
}

func (e *env) expectBases(repo string, d digest.Digest, wants ...want) {
	e.t.Helper()
	got, err := e.db.Graph().Bases(context.Background(), repo, d)
	if err != nil {
		e.t.Fatal(err)
	}
	var gs []string
	for _, b := range got {
		gs = append(gs, fmt.Sprintf("%s:%s@%s %s level %d", b.Repository, b.Tag, b.Digest, b.Method, b.Level))
	}
	var ws []string
	for _, w := range wants {
		ws = append(ws, fmt.Sprintf("%s:%s@%s %s level %d", w.repo, w.tag, w.digest, w.method, w.level))
	}
	if strings.Join(gs, "\n") != strings.Join(ws, "\n") {
		e.t.Fatalf("bases of %s@%s:\n%s\nwant:\n%s", repo, d, strings.Join(gs, "\n"), strings.Join(ws, "\n"))
	}
}

func digestOf(t *testing.T, w interface{ Digest() (v1.Hash, error) }) digest.Digest {
	t.Helper()
	h, err := w.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return digest.Digest(h.String())
}

// TestIndexLayers: a base is found by its layers however they were
// compressed, a second level is recorded below the first, and an image
// built on a digest its tag has left still finds it.
func TestIndexLayers(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect)
			base := image(t, nil, "linux/amd64", layer(t, "os-1", gzip.BestSpeed), layer(t, "os-2", gzip.BestSpeed))
			bd := e.push("mirror/ubi:1.9", base)
			e.index("mirror/ubi", bd)
			// The runtime recompresses the base's layers (other blob
			// digests, the same diff IDs) and adds its own.
			runtime := image(t, nil, "linux/amd64", layer(t, "os-1", gzip.BestCompression), layer(t, "os-2", gzip.BestCompression),
				layer(t, "jdk", gzip.DefaultCompression))
			bl, _ := base.Layers()
			rl, _ := runtime.Layers()
			bh, _ := bl[0].Digest()
			rh, _ := rl[0].Digest()
			if bh == rh {
				t.Fatal("the recompressed layer has the same digest: the test shows nothing")
			}
			rd := e.push("team/runtime:11", runtime)
			e.index("team/runtime", rd)
			e.expectBases("team/runtime", rd, want{"mirror/ubi", "1.9", graph.MethodLayers, bd, 1})
			app := image(t, runtime, "", layer(t, "app", gzip.DefaultCompression))
			ad := e.push("team/app:v1", app)
			e.index("team/app", ad)
			e.expectBases("team/app", ad, want{"team/runtime", "11", graph.MethodLayers, rd, 1},
				want{"mirror/ubi", "1.9", graph.MethodLayers, bd, 2})
			// Upstream moves 1.9; an image built on the old digest later
			// still finds it, through the tag's history.
			e.push("mirror/ubi:1.9", image(t, nil, "linux/amd64", layer(t, "os-1b", gzip.BestSpeed), layer(t, "os-2", gzip.BestSpeed)))
			late := image(t, base, "", layer(t, "late", gzip.DefaultCompression))
			ld := e.push("team/late:1", late)
			e.index("team/late", ld)
			bases, _ := e.db.Graph().Bases(context.Background(), "team/late", ld)
			if len(bases) != 1 || bases[0].Digest != bd || bases[0].Tag != "1.9" || !bases[0].Moved {
				t.Fatalf("late image's bases: %+v", bases)
			}
			// Its dependents, transitively.
			deps, err := e.db.Graph().Dependents(context.Background(), "mirror/ubi", bd, true, 100)
			if err != nil || len(deps) != 3 {
				t.Fatalf("dependents: %+v %v", deps, err)
			}
		})
	}
}

// TestIndexAnnotations: the base annotations name the base even when the
// layers do not show it (a squashed image), and win over the layers.
func TestIndexAnnotations(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect)
			base := image(t, nil, "linux/amd64", layer(t, "os", gzip.BestSpeed))
			bd := e.push("mirror/debian:12", base)
			e.index("mirror/debian", bd)
			squashed := image(t, nil, "linux/amd64", layer(t, "os+app squashed", gzip.BestSpeed))
			squashed = mutate.Annotations(squashed, map[string]string{
				graph.AnnotationBaseName:   "docker.io/library/debian:12",
				graph.AnnotationBaseDigest: bd.String(),
			}).(v1.Image)
			sd := e.push("team/squashed:1", squashed)
			e.index("team/squashed", sd)
			e.expectBases("team/squashed", sd, want{"mirror/debian", "12", graph.MethodAnnotation, bd, 1})
		})
	}
}

// TestIndexMultiPlatformProvenance: an index of two platforms whose
// attestations (BuildKit's layout) name the base index; each platform is
// matched to the base's same platform.
func TestIndexMultiPlatformProvenance(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect)
			amd := image(t, nil, "linux/amd64", layer(t, "base amd64", gzip.BestSpeed))
			arm := image(t, nil, "linux/arm64", layer(t, "base arm64", gzip.BestSpeed))
			baseIdx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
				mutate.IndexAddendum{Add: amd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
				mutate.IndexAddendum{Add: arm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
			bi := e.push("mirror/node:22", baseIdx)
			e.index("mirror/node", bi)
			appAmd := image(t, amd, "", layer(t, "app", gzip.BestSpeed))
			appArm := image(t, arm, "", layer(t, "app", gzip.BestSpeed))
			// The attestation of the amd64 image: an in-toto statement
			// naming the frontend (not stored here) and the base index.
			statement := func(platform string) v1.Layer {
				st := map[string]any{"_type": "https://in-toto.io/Statement/v0.1", "predicateType": "https://slsa.dev/provenance/v0.2",
					"predicate": map[string]any{"materials": []map[string]any{
						{"uri": "pkg:docker/docker/dockerfile@1", "digest": map[string]string{"sha256": digest.FromString("frontend").Encoded()}},
						{"uri": "pkg:docker/node@22?platform=" + strings.ReplaceAll(platform, "/", "%2F"), "digest": map[string]string{"sha256": bi.Encoded()}},
					}}}
				b, _ := json.Marshal(st)
				return static.NewLayer(b, "application/vnd.in-toto+json")
			}
			attest := func(platform string) v1.Image {
				img, err := mutate.Append(mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON),
					mutate.Addendum{Layer: statement(platform), Annotations: map[string]string{"in-toto.io/predicate-type": "https://slsa.dev/provenance/v0.2"}})
				if err != nil {
					t.Fatal(err)
				}
				return img
			}
			appIdx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
				mutate.IndexAddendum{Add: appAmd, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
				mutate.IndexAddendum{Add: appArm, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}},
				mutate.IndexAddendum{Add: attest("linux/amd64"), Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"},
					Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest", "vnd.docker.reference.digest": digestOf(t, appAmd).String()}}})
			ai := e.push("team/web:1", appIdx)
			// Clients push an index's children first, each announced on
			// its own: the child is indexed alone, then again with what the
			// index says.
			e.index("team/web", digestOf(t, appAmd))
			e.index("team/web", ai)
			e.expectBases("team/web", digestOf(t, appAmd), want{"mirror/node", "22", graph.MethodProvenance, digestOf(t, amd), 1})
			e.expectBases("team/web", digestOf(t, appArm), want{"mirror/node", "22", graph.MethodLayers, digestOf(t, arm), 1})
			// Its platforms are dependents of the base index, tagged through
			// the application's index.
			deps, err := e.db.Graph().Dependents(context.Background(), "mirror/node", bi, false, 100)
			if err != nil || len(deps) != 2 {
				t.Fatalf("dependents of the base index: %+v %v", deps, err)
			}
			for _, d := range deps {
				if len(d.Tags) != 1 || d.Tags[0] != "1" || len(d.Tagged) != 1 || d.Tagged[0] != ai {
					t.Fatalf("dependent %s tagged %v as %v, want tag 1 through %s", d.Digest, d.Tags, d.Tagged, ai)
				}
			}
			// The index's bases are its platforms'.
			if bases, _ := e.db.Graph().Bases(context.Background(), "team/web", ai); len(bases) != 2 {
				t.Fatalf("bases of the index: %+v", bases)
			}
			// Artifacts are not images: the attestation is not indexed.
			if ok, _ := e.db.Graph().Indexed(context.Background(), "team/web", digestOf(t, attest("linux/amd64"))); ok {
				t.Fatal("the attestation was indexed as an image")
			}
		})
	}
}

// TestIndexNamedBaseTag: an image whose base annotation names a tag is
// recorded through that tag, so that it is stale once the tag moves, even
// while another tag (a gate's immutable rollback tag, a version tag)
// still points at its base, and even when it is indexed after the move.
// Before, the other tag hid the move: the image was never stale and no
// later move fired for it.
func TestIndexNamedBaseTag(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect)
			ctx := context.Background()
			base := image(t, nil, "linux/amd64", layer(t, "node 20.1", gzip.BestSpeed))
			bd := e.push("mirror/node:20", base)
			e.push("mirror/node:20-1", base)
			e.index("mirror/node", bd)
			e.push("mirror/node:20", image(t, nil, "linux/amd64", layer(t, "node 20.2", gzip.BestSpeed)))
			app := image(t, base, "linux/amd64", layer(t, "app", gzip.BestSpeed))
			app = mutate.Annotations(app, map[string]string{
				graph.AnnotationBaseName:   "docker.io/library/node:20",
				graph.AnnotationBaseDigest: bd.String(),
			}).(v1.Image)
			ad := e.push("team/app:1", app)
			e.index("team/app", ad)
			e.expectBases("team/app", ad, want{"mirror/node", "20", graph.MethodAnnotation, bd, 1})
			bases, err := e.db.Graph().Bases(ctx, "team/app", ad)
			if err != nil || len(bases) != 1 || !bases[0].Moved {
				t.Fatalf("the base's named tag moved, yet the image is not stale: %+v %v", bases, err)
			}
		})
	}
}
