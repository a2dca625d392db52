package e2e

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Media types, spelled out so that a check reads as the wire value.
const (
	mtOCIManifest    = "application/vnd.oci.image.manifest.v1+json"
	mtOCIIndex       = "application/vnd.oci.image.index.v1+json"
	mtDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	mtDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"
	mtOCILayerGzip   = "application/vnd.oci.image.layer.v1.tar+gzip"
	mtDockerLayer    = "application/vnd.docker.image.rootfs.diff.tar.gzip"
)

var acceptAll = strings.Join([]string{mtOCIManifest, mtOCIIndex, mtDockerManifest, mtDockerList}, ", ")

// newImage builds a small random image of two layers for a platform, with
// OCI media types or Docker schema 2 ones.
func newImage(t *testing.T, oci bool, platform string) v1.Image {
	t.Helper()
	base := empty.Image
	layerType := types.DockerLayer
	if oci {
		base = mutate.MediaType(base, types.OCIManifestSchema1)
		base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
		layerType = types.OCILayer
	}
	src := random.WithSource(rand.NewSource(time.Now().UnixNano()))
	var layers []v1.Layer
	for i := 0; i < 2; i++ {
		l, err := random.Layer(int64(1024*(i+1)+rand.Intn(512)), layerType, src)
		if err != nil {
			t.Fatal(err)
		}
		layers = append(layers, l)
	}
	img, err := mutate.AppendLayers(base, layers...)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	cf = cf.DeepCopy()
	p, err := v1.ParsePlatform(platform)
	if err != nil {
		t.Fatal(err)
	}
	cf.OS, cf.Architecture, cf.Variant = p.OS, p.Architecture, p.Variant
	cf.Config.Labels = map[string]string{"dev.berth.e2e": t.Name()}
	img, err = mutate.ConfigFile(img, cf)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

// newIndex builds an index (OCI) or manifest list (Docker) of linux/amd64
// and linux/arm64 images; it returns the index and its images by platform.
func newIndex(t *testing.T, oci bool) (v1.ImageIndex, map[string]v1.Image) {
	t.Helper()
	var idx v1.ImageIndex = empty.Index
	if oci {
		idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	} else {
		idx = mutate.IndexMediaType(idx, types.DockerManifestList)
	}
	imgs := map[string]v1.Image{}
	for _, plat := range []string{"linux/amd64", "linux/arm64"} {
		img := newImage(t, oci, plat)
		p, _ := v1.ParsePlatform(plat)
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: p},
		})
		imgs[plat] = img
	}
	return plainIndex(t, idx), imgs
}

// plainIndex is idx without the artifactType that go-containerregistry puts
// in the descriptors of OCI image manifests: indexes made by docker buildx
// and podman have none, and skopeo 1.9 drops the field when it re-encodes an
// index, so it could not copy such an index with --preserve-digests.
type plainIndexT struct {
	base v1.ImageIndex
	raw  []byte
	im   *v1.IndexManifest
}

func plainIndex(t *testing.T, idx v1.ImageIndex) v1.ImageIndex {
	t.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	im = im.DeepCopy()
	for i := range im.Manifests {
		im.Manifests[i].ArtifactType = ""
	}
	raw, err := json.Marshal(im)
	if err != nil {
		t.Fatal(err)
	}
	return &plainIndexT{base: idx, raw: raw, im: im}
}

func (p *plainIndexT) RawManifest() ([]byte, error)                { return p.raw, nil }
func (p *plainIndexT) IndexManifest() (*v1.IndexManifest, error)   { return p.im.DeepCopy(), nil }
func (p *plainIndexT) Size() (int64, error)                        { return int64(len(p.raw)), nil }
func (p *plainIndexT) MediaType() (types.MediaType, error)         { return p.base.MediaType() }
func (p *plainIndexT) Image(h v1.Hash) (v1.Image, error)           { return p.base.Image(h) }
func (p *plainIndexT) ImageIndex(h v1.Hash) (v1.ImageIndex, error) { return p.base.ImageIndex(h) }
func (p *plainIndexT) Digest() (v1.Hash, error) {
	h, _, err := v1.SHA256(bytes.NewReader(p.raw))
	return h, err
}

// writeLayout writes images into an OCI layout directory, each under the
// org.opencontainers.image.ref.name annotation given as its key.
func writeLayout(t *testing.T, dir string, imgs map[string]v1.Image) layout.Path {
	t.Helper()
	p, err := layout.Write(dir, empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	for tag, img := range imgs {
		if err := p.AppendImage(img, layout.WithAnnotations(map[string]string{
			"org.opencontainers.image.ref.name": tag,
		})); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

type digester interface {
	Digest() (v1.Hash, error)
}

func digestOf(t *testing.T, x digester) string {
	t.Helper()
	h, err := x.Digest()
	if err != nil {
		t.Fatal(err)
	}
	return h.String()
}

func layerDigests(t *testing.T, img v1.Image) []string {
	t.Helper()
	m, err := img.Manifest()
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range m.Layers {
		out = append(out, l.Digest.String())
	}
	return out
}

func parseRef(t *testing.T, ref string) name.Reference {
	t.Helper()
	r, err := name.ParseReference(ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// pushImage writes an image with go-containerregistry's client.
func pushImage(t *testing.T, ref string, img v1.Image) {
	t.Helper()
	if err := remote.Write(parseRef(t, ref), img); err != nil {
		t.Fatalf("push %s: %v", ref, err)
	}
}

// pushIndex writes an index and its images with go-containerregistry's client.
func pushIndex(t *testing.T, ref string, idx v1.ImageIndex) {
	t.Helper()
	if err := remote.WriteIndex(parseRef(t, ref), idx); err != nil {
		t.Fatalf("push index %s: %v", ref, err)
	}
}

func sha256Digest(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

type httpResult struct {
	Status int
	Header http.Header
	Body   []byte
}

func (r httpResult) String() string {
	body := string(r.Body)
	if len(body) > 2000 {
		body = body[:2000] + "...(cut)"
	}
	return fmt.Sprintf("HTTP %d, Content-Type %q, Docker-Content-Digest %q, body: %s",
		r.Status, r.Header.Get("Content-Type"), r.Header.Get("Docker-Content-Digest"), body)
}

// regDo sends one plain-HTTP request to the registry under test.
func regDo(t *testing.T, method, path string, header map[string]string, body []byte) httpResult {
	t.Helper()
	return hostDo(t, registryHost, "", "", method, path, header, body)
}

// hostDo sends one plain-HTTP request to host, with Basic credentials when
// user is not empty.
func hostDo(t *testing.T, host, user, pass, method, path string, header map[string]string, body []byte) httpResult {
	t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, "http://"+host+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.SetBasicAuth(user, pass)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := (&http.Client{Timeout: time.Minute}).Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return httpResult{Status: resp.StatusCode, Header: resp.Header, Body: b}
}

// getManifest fetches a manifest with every common media type accepted.
func getManifest(t *testing.T, repo, ref string) httpResult {
	t.Helper()
	return regDo(t, http.MethodGet, "/v2/"+repo+"/manifests/"+ref, map[string]string{"Accept": acceptAll}, nil)
}

// requireManifest fetches a manifest by digest and checks that the registry
// returns exactly those bytes, with the expected Content-Type.
func requireManifest(t *testing.T, repo, digest, mediaType string) []byte {
	t.Helper()
	r := getManifest(t, repo, digest)
	if r.Status != http.StatusOK {
		t.Fatalf("GET /v2/%s/manifests/%s: %s", repo, digest, r)
	}
	if got := sha256Digest(r.Body); got != digest {
		t.Fatalf("GET /v2/%s/manifests/%s: body digest %s", repo, digest, got)
	}
	if ct := r.Header.Get("Content-Type"); mediaType != "" && ct != mediaType {
		t.Fatalf("GET /v2/%s/manifests/%s: Content-Type %q, want %q", repo, digest, ct, mediaType)
	}
	if dcd := r.Header.Get("Docker-Content-Digest"); dcd != "" && dcd != digest {
		t.Fatalf("GET /v2/%s/manifests/%s: Docker-Content-Digest %q", repo, digest, dcd)
	}
	return r.Body
}

// tagList reads GET /v2/<repo>/tags/list; a 404 (no such repository) is an
// empty list.
func tagList(t *testing.T, repo string) []string {
	t.Helper()
	r := regDo(t, http.MethodGet, "/v2/"+repo+"/tags/list", nil, nil)
	if r.Status == http.StatusNotFound {
		return nil
	}
	if r.Status != http.StatusOK {
		t.Fatalf("GET /v2/%s/tags/list: %s", repo, r)
	}
	var tl struct {
		Name string   `json:"name"`
		Tags []string `json:"tags"`
	}
	if err := json.Unmarshal(r.Body, &tl); err != nil {
		t.Fatalf("GET /v2/%s/tags/list: %v: %s", repo, err, r.Body)
	}
	if tl.Name != repo {
		t.Fatalf("GET /v2/%s/tags/list: name %q", repo, tl.Name)
	}
	return tl.Tags
}

// referrers reads the OCI 1.1 referrers API for a digest.
func referrers(t *testing.T, repo, digest, artifactType string) (v1.IndexManifest, httpResult) {
	t.Helper()
	path := "/v2/" + repo + "/referrers/" + digest
	if artifactType != "" {
		path += "?artifactType=" + artifactType
	}
	r := regDo(t, http.MethodGet, path, nil, nil)
	var idx v1.IndexManifest
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s (OCI 1.1 referrers API): %s", path, r)
	}
	if ct := r.Header.Get("Content-Type"); ct != mtOCIIndex {
		t.Fatalf("GET %s: Content-Type %q, want %q", path, ct, mtOCIIndex)
	}
	if err := json.Unmarshal(r.Body, &idx); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, r.Body)
	}
	return idx, r
}
