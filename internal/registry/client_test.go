package registry_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content/memory"
	orasremote "oras.land/oras-go/v2/registry/remote"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/registry"
)

// TestGGCRPushPull pushes and pulls images and indexes in Docker and OCI
// formats with go-containerregistry, on every metadata dialect.
func TestGGCRPushPull(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			reg := newRegistry(t, dialect, registry.Options{})
			docker, err := random.Image(2048, 3)
			if err != nil {
				t.Fatal(err)
			}
			ociLayers, _ := random.Image(1024, 2)
			l, _ := ociLayers.Layers()
			oci, _ := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1), l...)
			for tag, img := range map[string]v1.Image{"docker": docker, "oci": oci} {
				ref := reg.ref("org/team/app:" + tag)
				if err := remote.Write(ref, img); err != nil {
					t.Fatalf("push %s: %v", tag, err)
				}
				got, err := remote.Image(ref)
				if err != nil {
					t.Fatalf("pull %s: %v", tag, err)
				}
				wantD, _ := img.Digest()
				gotD, _ := got.Digest()
				wantMT, _ := img.MediaType()
				gotMT, _ := got.MediaType()
				if wantD != gotD || wantMT != gotMT {
					t.Fatalf("%s: pulled %s %s, pushed %s %s", tag, gotD, gotMT, wantD, wantMT)
				}
				layers, _ := got.Layers()
				for _, layer := range layers {
					rc, err := layer.Compressed()
					if err != nil {
						t.Fatal(err)
					}
					n, err := io.Copy(io.Discard, rc) // ggcr verifies the digest while reading
					rc.Close()
					if err != nil || n == 0 {
						t.Fatalf("layer read: %d bytes, %v", n, err)
					}
				}
			}

			// A multi-platform index, OCI and Docker.
			for _, mt := range []types.MediaType{types.OCIImageIndex, types.DockerManifestList} {
				idx, err := random.Index(512, 1, 2)
				if err != nil {
					t.Fatal(err)
				}
				idx = mutate.IndexMediaType(idx, mt)
				ref := reg.ref("org/multi:" + strings.ReplaceAll(string(mt), "/", "_")[:20])
				if err := remote.WriteIndex(ref, idx); err != nil {
					t.Fatalf("push index %s: %v", mt, err)
				}
				got, err := remote.Index(ref)
				if err != nil {
					t.Fatal(err)
				}
				want, _ := idx.Digest()
				if d, _ := got.Digest(); d != want {
					t.Fatalf("index digest %s, want %s", d, want)
				}
				im, _ := got.IndexManifest()
				for _, desc := range im.Manifests {
					if _, err := remote.Image(ref.Context().Digest(desc.Digest.String())); err != nil {
						t.Fatalf("child %s: %v", desc.Digest, err)
					}
				}
			}

			// Copy across repositories: ggcr mounts the blobs from the source.
			src := reg.ref("org/team/app:docker")
			img, _ := remote.Image(src)
			dst := reg.ref("other/copy:v1")
			if err := remote.Write(dst, img); err != nil {
				t.Fatalf("copy: %v", err)
			}
			tags, err := remote.List(dst.Context())
			if err != nil || len(tags) != 1 || tags[0] != "v1" {
				t.Fatalf("tags of copy = %v, %v", tags, err)
			}
			repos, err := remote.Catalog(context.Background(), dst.Context().Registry)
			if err != nil {
				t.Fatal(err)
			}
			want := []string{"org/multi", "org/team/app", "other/copy"}
			if strings.Join(repos, ",") != strings.Join(want, ",") {
				t.Fatalf("catalog = %v, want %v", repos, want)
			}
		})
	}
}

// TestORASReferrers pushes an artifact and a referrer with oras-go and
// lists it through the referrers API.
func TestORASReferrers(t *testing.T) {
	reg := newRegistry(t, "sqlite", registry.Options{})
	ctx := context.Background()
	repo, err := orasremote.NewRepository(reg.host + "/org/artifacts")
	if err != nil {
		t.Fatal(err)
	}
	repo.PlainHTTP = true
	store := memory.New()
	push := func(mediaType string, data []byte) ocispec.Descriptor {
		d := ocispec.Descriptor{MediaType: mediaType, Digest: digestOf(data), Size: int64(len(data))}
		if err := store.Push(ctx, d, bytes.NewReader(data)); err != nil {
			t.Fatal(err)
		}
		return d
	}
	layer := push("text/plain", []byte("hello artifact"))
	subject, err := oras.PackManifest(ctx, store, oras.PackManifestVersion1_1, "application/vnd.example.thing",
		oras.PackManifestOptions{Layers: []ocispec.Descriptor{layer}})
	if err != nil {
		t.Fatal(err)
	}
	if err := store.Tag(ctx, subject, "v1"); err != nil {
		t.Fatal(err)
	}
	if _, err := oras.Copy(ctx, store, "v1", repo, "v1", oras.DefaultCopyOptions); err != nil {
		t.Fatalf("oras push: %v", err)
	}
	sbom := push("application/spdx+json", []byte(`{"spdxVersion":"SPDX-2.3"}`))
	referrer, err := oras.PackManifest(ctx, store, oras.PackManifestVersion1_1, "application/vnd.example.sbom",
		oras.PackManifestOptions{Subject: &subject, Layers: []ocispec.Descriptor{sbom},
			ManifestAnnotations: map[string]string{"org.example.kind": "sbom"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := oras.CopyGraph(ctx, store, repo, referrer, oras.DefaultCopyGraphOptions); err != nil {
		t.Fatalf("oras attach: %v", err)
	}
	var found []ocispec.Descriptor
	if err := repo.Referrers(ctx, subject, "", func(r []ocispec.Descriptor) error {
		found = append(found, r...)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(found) != 1 || found[0].Digest != referrer.Digest || found[0].ArtifactType != "application/vnd.example.sbom" ||
		found[0].Annotations["org.example.kind"] != "sbom" {
		t.Fatalf("referrers = %+v, want the sbom %s", found, referrer.Digest)
	}

	// Filtering by artifactType, and the header that says so.
	resp, body := reg.do("GET", "/v2/org/artifacts/referrers/"+subject.Digest.String()+"?artifactType=application/vnd.example.other", nil)
	var idx ocispec.Index
	json.Unmarshal(body, &idx)
	if resp.StatusCode != 200 || resp.Header.Get("OCI-Filters-Applied") != "artifactType" || idx.Manifests == nil || len(idx.Manifests) != 0 ||
		resp.Header.Get("Content-Type") != ocispec.MediaTypeImageIndex {
		t.Fatalf("filtered referrers: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	// Pulling the artifact back gives the same bytes.
	fetched, err := oras.Copy(ctx, repo, "v1", memory.New(), "v1", oras.DefaultCopyOptions)
	if err != nil || fetched.Digest != subject.Digest {
		t.Fatalf("oras pull: %v %v", fetched.Digest, err)
	}
	rc, err := repo.Blobs().Fetch(ctx, layer)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != "hello artifact" {
		t.Fatalf("artifact content = %q", got)
	}
}

// TestSubjectHeader checks the OCI-Subject header on a push with subject,
// and that the subject need not exist.
func TestSubjectHeader(t *testing.T) {
	reg := newRegistry(t, "sqlite", registry.Options{})
	m := reg.imageManifest("app", []byte("l"))
	subject := map[string]any{"mediaType": ocispec.MediaTypeImageManifest, "digest": digestOf([]byte("absent")), "size": 6}
	m["subject"] = subject
	resp, body := reg.pushManifest("app", digestOf(mustJSON(t, m)).String(), ocispec.MediaTypeImageManifest, m)
	if resp.StatusCode != http.StatusCreated || resp.Header.Get("OCI-Subject") != subject["digest"].(interface{ String() string }).String() {
		t.Fatalf("push with subject: %d %s %v", resp.StatusCode, body, resp.Header)
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
