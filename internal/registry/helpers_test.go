package registry_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/testenv"
)

type testRegistry struct {
	t    *testing.T
	url  string // http://127.0.0.1:port
	host string // 127.0.0.1:port
}

func newRegistry(t *testing.T, dialect string, opts registry.Options) *testRegistry {
	t.Helper()
	reg, _ := newRegistryDB(t, dialect, opts)
	return reg
}

// newRegistryDB is newRegistry that also returns its metadata store: the
// shared test environment in auth mode "none" (every request allowed)
// with every artifact type allowed unless opts says otherwise.
func newRegistryDB(t *testing.T, dialect string, opts registry.Options) (*testRegistry, *meta.DB) {
	t.Helper()
	env := testenv.New(t, testenv.Options{Dialect: dialect, Open: true, Registry: opts})
	return &testRegistry{t: t, url: env.URL, host: env.Host}, env.DB
}

func (r *testRegistry) ref(s string) name.Reference {
	r.t.Helper()
	ref, err := name.ParseReference(r.host+"/"+s, name.Insecure)
	if err != nil {
		r.t.Fatal(err)
	}
	return ref
}

// do sends a raw request and returns the response with its body read.
func (r *testRegistry) do(method, path string, body []byte, headers ...string) (*http.Response, []byte) {
	r.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, r.url+path, rd)
	if err != nil {
		r.t.Fatal(err)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		r.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// expectError checks a response is the spec's error JSON with the code.
func expectError(t *testing.T, resp *http.Response, body []byte, status int, code string) string {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("%s %s: status %d, want %d; body %s", resp.Request.Method, resp.Request.URL.Path, resp.StatusCode, status, body)
	}
	if resp.Request.Method == http.MethodHead {
		return ""
	}
	var e struct {
		Errors []struct{ Code, Message string } `json:"errors"`
	}
	if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 {
		t.Fatalf("error body %q is not the spec's error format: %v", body, err)
	}
	if e.Errors[0].Code != code {
		t.Fatalf("error code %s (%s), want %s", e.Errors[0].Code, e.Errors[0].Message, code)
	}
	return e.Errors[0].Message
}

// pushBlob uploads content monolithically and returns its digest.
func (r *testRegistry) pushBlob(repo string, content []byte) digest.Digest {
	r.t.Helper()
	d := digest.FromBytes(content)
	resp, body := r.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+d.String(), content)
	if resp.StatusCode != http.StatusCreated {
		r.t.Fatalf("push blob: %d %s", resp.StatusCode, body)
	}
	return d
}

// pushManifest PUTs a manifest and returns the response.
func (r *testRegistry) pushManifest(repo, ref, mediaType string, m any) (*http.Response, []byte) {
	r.t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		r.t.Fatal(err)
	}
	return r.do("PUT", "/v2/"+repo+"/manifests/"+ref, b, "Content-Type", mediaType)
}

// imageManifest builds an OCI image manifest over pushed blobs.
func (r *testRegistry) imageManifest(repo string, layers ...[]byte) map[string]any {
	r.t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	m := map[string]any{
		"schemaVersion": 2,
		"mediaType":     oci.MediaTypeImageManifest,
		"config":        map[string]any{"mediaType": oci.MediaTypeImageConfig, "digest": r.pushBlob(repo, cfg), "size": len(cfg)},
	}
	ls := []map[string]any{}
	for _, l := range layers {
		ls = append(ls, map[string]any{"mediaType": oci.MediaTypeLayerGzip, "digest": r.pushBlob(repo, l), "size": len(l)})
	}
	m["layers"] = ls
	return m
}

func digestOf(b []byte) digest.Digest { return digest.FromBytes(b) }
