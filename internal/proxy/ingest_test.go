package proxy_test

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/oci"
)

// rawManifest pushes manifest bytes as they are.
type rawManifest struct {
	body      []byte
	mediaType types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.body, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mediaType, nil }

// TestEmptyConfigUpstreamLacks: the cache stores manifests through the
// one ingest function, so the empty config is supplied as for a push: an
// image-spec 1.1 artifact whose upstream never had the empty blob (a
// client may skip uploading it) is served whole, and the two bytes are
// not asked of upstream.
func TestEmptyConfigUpstreamLacks(t *testing.T) {
	up := startUpstream(t)
	e := newEnv(t)
	e.configure(t, "hub", up, "", 60)
	repo, err := name.NewRepository(up.host+"/reports", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	report := []byte("a report")
	if err := remote.WriteLayer(repo, static.NewLayer(report, "text/plain"), upAuth); err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageManifest, "artifactType": "application/vnd.example.report",
		"config": map[string]any{"mediaType": oci.MediaTypeEmptyJSON, "digest": oci.EmptyJSONDigest, "size": 2},
		"layers": []map[string]any{{"mediaType": "text/plain", "digest": digest.FromBytes(report), "size": len(report)}}})
	if err := remote.Put(repo.Tag("r1"), rawManifest{body, oci.MediaTypeImageManifest}, upAuth); err != nil {
		t.Fatal(err)
	}
	up.reset()
	get := func(path string) (int, []byte) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("http://%s/v2/hub/reports/%s", e.host, path), nil)
		req.Header.Set("Accept", oci.MediaTypeImageManifest)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	if st, b := get("manifests/r1"); st != 200 || digest.FromBytes(b) != digest.FromBytes(body) {
		t.Fatalf("manifest: %d %s", st, b)
	}
	if st, b := get("blobs/" + oci.EmptyJSONDigest); st != 200 || string(b) != "{}" {
		t.Fatalf("empty config: %d %q", st, b)
	}
	if st, b := get("blobs/" + digest.FromBytes(report).String()); st != 200 || string(b) != string(report) {
		t.Fatalf("layer: %d %q", st, b)
	}
	if n := up.count("GET blobs"); n != 1 {
		t.Fatalf("%d upstream blob GETs, want 1 (the layer only)", n)
	}
}
