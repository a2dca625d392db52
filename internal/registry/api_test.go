package registry_test

import (
	"bytes"
	"crypto/sha512"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
)

func TestChunkedUploadResume(t *testing.T) {
	reg := newRegistry(t, "sqlite", registry.Options{})
	data := bytes.Repeat([]byte("0123456789abcdef"), 40000) // 640 KB
	d := digest.FromBytes(data)

	resp, _ := reg.do("POST", "/v2/org/app/blobs/uploads/", nil)
	loc := resp.Header.Get("Location")
	if resp.StatusCode != 202 || !strings.HasPrefix(loc, "/v2/org/app/blobs/uploads/") || resp.Header.Get("Range") != "0-0" {
		t.Fatalf("start: %d %v", resp.StatusCode, resp.Header)
	}
	// First chunk.
	resp, _ = reg.do("PATCH", loc, data[:100000], "Content-Range", "0-99999", "Content-Type", "application/octet-stream")
	if resp.StatusCode != 202 || resp.Header.Get("Range") != "0-99999" || resp.Header.Get("Location") != loc {
		t.Fatalf("chunk 1: %d %v", resp.StatusCode, resp.Header)
	}
	// A chunk that does not start where the upload ends is refused, and
	// the answer says where it ends.
	resp, body := reg.do("PATCH", loc, data[200000:300000], "Content-Range", "200000-299999")
	expectError(t, resp, body, http.StatusRequestedRangeNotSatisfiable, registry.CodeBlobUploadInvalid)
	if resp.Header.Get("Range") != "0-99999" {
		t.Fatalf("416 Range = %q", resp.Header.Get("Range"))
	}
	// A malformed one is a bad request, not a chunk out of order.
	resp, body = reg.do("PATCH", loc, data[100000:100010], "Content-Range", "garbage")
	expectError(t, resp, body, http.StatusBadRequest, registry.CodeBlobUploadInvalid)
	// Resume: ask for the status, continue from there.
	resp, _ = reg.do("GET", loc, nil)
	if resp.StatusCode != 204 || resp.Header.Get("Range") != "0-99999" || resp.Header.Get("Docker-Upload-UUID") == "" {
		t.Fatalf("status: %d %v", resp.StatusCode, resp.Header)
	}
	// A streamed chunk without Content-Range appends.
	resp, _ = reg.do("PATCH", loc, data[100000:500000])
	if resp.StatusCode != 202 || resp.Header.Get("Range") != "0-499999" {
		t.Fatalf("chunk 2: %d %v", resp.StatusCode, resp.Header)
	}
	// The last chunk rides on the PUT.
	resp, body = reg.do("PUT", loc+"?digest="+d.String(), data[500000:], "Content-Range", fmt.Sprintf("500000-%d", len(data)-1))
	if resp.StatusCode != 201 || resp.Header.Get("Docker-Content-Digest") != d.String() ||
		resp.Header.Get("Location") != "/v2/org/app/blobs/"+d.String() {
		t.Fatalf("finish: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	resp, body = reg.do("GET", "/v2/org/app/blobs/"+d.String(), nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, data) {
		t.Fatalf("pull: %d, %d bytes", resp.StatusCode, len(body))
	}
	// The finished upload is gone.
	resp, body = reg.do("GET", loc, nil)
	expectError(t, resp, body, 404, registry.CodeBlobUploadUnknown)
}

func TestUploadErrors(t *testing.T) {
	reg := newRegistry(t, "sqlite", registry.Options{})
	content := []byte("some bytes")
	wrong := digest.FromString("other bytes")

	// Monolithic upload with the wrong digest: refused, nothing stored.
	resp, body := reg.do("POST", "/v2/app/blobs/uploads/?digest="+wrong.String(), content)
	expectError(t, resp, body, 400, registry.CodeDigestInvalid)
	resp, body = reg.do("HEAD", "/v2/app/blobs/"+wrong.String(), nil)
	expectError(t, resp, body, 404, registry.CodeBlobUnknown)
	resp, body = reg.do("POST", "/v2/app/blobs/uploads/?digest=sha256:nothex", content)
	expectError(t, resp, body, 400, registry.CodeDigestInvalid)
	resp, body = reg.do("POST", "/v2/app/blobs/uploads/?digest=md5:"+strings.Repeat("a", 32), content)
	expectError(t, resp, body, 400, registry.CodeDigestInvalid)

	// Session upload finished with the wrong digest.
	resp, _ = reg.do("POST", "/v2/app/blobs/uploads/", nil)
	loc := resp.Header.Get("Location")
	resp, body = reg.do("PUT", loc+"?digest="+wrong.String(), content)
	expectError(t, resp, body, 400, registry.CodeDigestInvalid)
	// ... which discards the upload.
	resp, body = reg.do("GET", loc, nil)
	expectError(t, resp, body, 404, registry.CodeBlobUploadUnknown)

	// Unknown and malformed upload ids.
	resp, body = reg.do("PATCH", "/v2/app/blobs/uploads/2b7c4b0e-4f3c-4b9a-9d6e-000000000000", content)
	expectError(t, resp, body, 404, registry.CodeBlobUploadUnknown)
	resp, _ = reg.do("GET", "/v2/app/blobs/uploads/../../etc", nil)
	if resp.StatusCode < 400 {
		t.Fatalf("traversal path answered %d", resp.StatusCode)
	}
	// An upload is bound to its repository.
	resp, _ = reg.do("POST", "/v2/app/blobs/uploads/", nil)
	loc = resp.Header.Get("Location")
	other := strings.Replace(loc, "/v2/app/", "/v2/other/", 1)
	resp, body = reg.do("GET", other, nil)
	expectError(t, resp, body, 404, registry.CodeBlobUploadUnknown)

	// Cancel.
	resp, _ = reg.do("DELETE", loc, nil)
	if resp.StatusCode != 204 {
		t.Fatalf("cancel: %d", resp.StatusCode)
	}
	resp, body = reg.do("PATCH", loc, content)
	expectError(t, resp, body, 404, registry.CodeBlobUploadUnknown)

	// Content-Length that disagrees with Content-Range.
	resp, _ = reg.do("POST", "/v2/app/blobs/uploads/", nil)
	loc = resp.Header.Get("Location")
	resp, body = reg.do("PATCH", loc, content, "Content-Range", "0-3")
	expectError(t, resp, body, 400, registry.CodeSizeInvalid)
	// A streamed body (no Content-Length) longer or shorter than its
	// Content-Range: refused, and nothing of it is recorded.
	chunked := func(body []byte, contentRange string) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest("PATCH", reg.url+loc, io.MultiReader(bytes.NewReader(body)))
		req.Header.Set("Content-Range", contentRange)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if resp.Request.ContentLength != -1 && resp.Request.ContentLength != 0 {
			t.Fatalf("the request was sent with Content-Length %d", resp.Request.ContentLength)
		}
		return resp, b
	}
	for _, cr := range []string{"0-3", "0-19"} {
		resp, body = chunked(content, cr)
		expectError(t, resp, body, 400, registry.CodeSizeInvalid)
		if resp, _ := reg.do("GET", loc, nil); resp.StatusCode != 204 || resp.Header.Get("Range") != "0-0" {
			t.Fatalf("after a streamed chunk of %d bytes sent as %s: status %d, Range %q; want 204, 0-0", len(content), cr, resp.StatusCode, resp.Header.Get("Range"))
		}
	}
	if resp, body = chunked(content, fmt.Sprintf("0-%d", len(content)-1)); resp.StatusCode != 202 || resp.Header.Get("Range") != fmt.Sprintf("0-%d", len(content)-1) {
		t.Fatalf("a streamed chunk its Content-Range covers: %d %q %s", resp.StatusCode, resp.Header.Get("Range"), body)
	}
	// PUT without a digest.
	resp, body = reg.do("PUT", loc, nil)
	expectError(t, resp, body, 400, registry.CodeDigestInvalid)
}

func TestBadNames(t *testing.T) {
	reg := newRegistry(t, "sqlite", registry.Options{})
	for _, p := range []string{
		"/v2/UPPER/tags/list", "/v2/a//b/tags/list", "/v2/-a/tags/list", "/v2/a_-b/manifests/latest",
		"/v2/" + strings.Repeat("a", 256) + "/tags/list", "/v2/a/b./blobs/uploads/",
	} {
		resp, body := reg.do("GET", p, nil)
		if p == "/v2/a/b./blobs/uploads/" {
			resp, body = reg.do("POST", p, nil)
		}
		expectError(t, resp, body, 400, registry.CodeNameInvalid)
	}
	resp, body := reg.do("GET", "/v2/a/manifests/bad:tag:x", nil)
	expectError(t, resp, body, 400, registry.CodeDigestInvalid)
	// A reference that can be no tag names no manifest: 404 to read or
	// delete (the conformance suite's .INVALID_MANIFEST_NAME), TAG_INVALID
	// to push.
	for _, ref := range []string{"-tag", ".INVALID_MANIFEST_NAME", strings.Repeat("t", 129)} {
		for _, method := range []string{"GET", "HEAD", "DELETE"} {
			resp, body = reg.do(method, "/v2/a/manifests/"+ref, nil)
			if method == "HEAD" {
				if resp.StatusCode != 404 {
					t.Errorf("HEAD %s: %d, want 404", ref, resp.StatusCode)
				}
				continue
			}
			expectError(t, resp, body, 404, registry.CodeManifestUnknown)
		}
		resp, body = reg.do("PUT", "/v2/a/manifests/"+ref, []byte(`{}`))
		expectError(t, resp, body, 400, registry.CodeTagInvalid)
	}
	resp, body = reg.do("GET", "/v2/a/blobs/notadigest", nil)
	expectError(t, resp, body, 400, registry.CodeDigestInvalid)
	resp, body = reg.do("GET", "/v2/nope/tags/list", nil)
	expectError(t, resp, body, 404, registry.CodeNameUnknown)
	resp, body = reg.do("GET", "/v2/nope/manifests/latest", nil)
	expectError(t, resp, body, 404, registry.CodeManifestUnknown)
	resp, body = reg.do("POST", "/v2/a/manifests/latest", nil)
	expectError(t, resp, body, 405, registry.CodeUnsupported)
}

func TestManifestErrors(t *testing.T) {
	reg := newRegistry(t, "sqlite", registry.Options{MaxManifestBytes: 2048})
	m := reg.imageManifest("app", []byte("layer"))

	// A layer that was never pushed.
	missing := digest.FromString("missing layer")
	bad := clone(m)
	bad["layers"] = []map[string]any{{"mediaType": oci.MediaTypeLayerGzip, "digest": missing, "size": 13}}
	resp, body := reg.pushManifest("app", "v1", oci.MediaTypeImageManifest, bad)
	if msg := expectError(t, resp, body, 400, registry.CodeManifestBlobUnknown); !strings.Contains(msg, missing.String()) {
		t.Fatalf("message %q does not name the missing blob", msg)
	}
	resp, body = reg.do("GET", "/v2/app/manifests/v1", nil)
	expectError(t, resp, body, 404, registry.CodeManifestUnknown)

	// A blob of another repository does not count.
	otherLayer := reg.pushBlob("elsewhere", []byte("private layer"))
	bad["layers"] = []map[string]any{{"mediaType": oci.MediaTypeLayerGzip, "digest": otherLayer, "size": 13}}
	resp, body = reg.pushManifest("app", "v1", oci.MediaTypeImageManifest, bad)
	expectError(t, resp, body, 400, registry.CodeManifestBlobUnknown)

	// Digest reference that does not match the body.
	resp, body = reg.pushManifest("app", digest.FromString("x").String(), oci.MediaTypeImageManifest, m)
	expectError(t, resp, body, 400, registry.CodeDigestInvalid)

	// Oversized.
	big := clone(m)
	big["annotations"] = map[string]string{"pad": strings.Repeat("x", 4096)}
	resp, body = reg.pushManifest("app", "big", oci.MediaTypeImageManifest, big)
	expectError(t, resp, body, http.StatusRequestEntityTooLarge, registry.CodeManifestInvalid)

	// Malformed bodies.
	for _, b := range []string{`not json`, `{"schemaVersion":1,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`,
		`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}`,
		`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:xyz","size":1}}`,
		`{"schemaVersion":2,"mediaType":"application/x-unknown"}`,
		`{"schemaVersion":1,"name":"x","tag":"y","fsLayers":[]}`} {
		resp, body = reg.do("PUT", "/v2/app/manifests/bad", []byte(b), "Content-Type", "application/vnd.oci.image.manifest.v1+json")
		expectError(t, resp, body, 400, registry.CodeManifestInvalid)
	}
	// A missing layer hidden behind a second "layers" key, which
	// encoding/json would take over the first and case-sensitive clients
	// would not: refused, and nothing stored.
	hidden, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	hidden = append(hidden[:len(hidden)-1], []byte(`,"Layers":[]}`)...)
	hidden = bytes.Replace(hidden, []byte(`"layers":[`), []byte(`"layers":[{"mediaType":"`+oci.MediaTypeLayerGzip+`","digest":"`+missing.String()+`","size":13},`), 1)
	resp, body = reg.do("PUT", "/v2/app/manifests/hidden", hidden, "Content-Type", oci.MediaTypeImageManifest)
	if msg := expectError(t, resp, body, 400, registry.CodeManifestInvalid); !strings.Contains(msg, "twice") {
		t.Fatalf("message %q does not say a key is repeated", msg)
	}
	resp, body = reg.do("GET", "/v2/app/manifests/hidden", nil)
	expectError(t, resp, body, 404, registry.CodeManifestUnknown)

	// mediaType and Content-Type disagree.
	resp, body = reg.pushManifest("app", "v1", oci.MediaTypeDockerManifest, m)
	expectError(t, resp, body, 400, registry.CodeManifestInvalid)

	// An index whose child is missing.
	idx := map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageIndex,
		"manifests": []map[string]any{{"mediaType": oci.MediaTypeImageManifest, "digest": digest.FromString("child"), "size": 10}}}
	resp, body = reg.pushManifest("app", "idx", oci.MediaTypeImageIndex, idx)
	expectError(t, resp, body, 400, registry.CodeManifestBlobUnknown)
}

func clone(m map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range m {
		out[k] = v
	}
	return out
}

func TestArtifactPolicy(t *testing.T) {
	reg := newRegistry(t, "sqlite", registry.Options{})
	cfg := []byte(`{}`)
	chart := []byte("chart bytes")
	helm := map[string]any{ // as helm pushes it: no mediaType field
		"schemaVersion": 2,
		"config":        map[string]any{"mediaType": oci.MediaTypeHelmConfig, "digest": reg.pushBlob("charts/app", cfg), "size": 2},
		"layers":        []map[string]any{{"mediaType": oci.MediaTypeHelmChart, "digest": reg.pushBlob("charts/app", chart), "size": len(chart)}},
	}
	resp, body := reg.pushManifest("charts/app", "0.1.0", oci.MediaTypeImageManifest, helm)
	if resp.StatusCode != 201 {
		t.Fatalf("helm chart: %d %s", resp.StatusCode, body)
	}
	resp, _ = reg.do("HEAD", "/v2/charts/app/manifests/0.1.0", nil)
	if resp.Header.Get("Content-Type") != oci.MediaTypeImageManifest {
		t.Fatalf("helm manifest served as %q", resp.Header.Get("Content-Type"))
	}
	// An unknown config type is refused with a message naming it.
	odd := clone(helm)
	odd["config"] = map[string]any{"mediaType": "application/vnd.example.weird+json", "digest": reg.pushBlob("charts/app", cfg), "size": 2}
	resp, body = reg.pushManifest("charts/app", "odd", oci.MediaTypeImageManifest, odd)
	if msg := expectError(t, resp, body, 400, registry.CodeManifestInvalid); !strings.Contains(msg, "application/vnd.example.weird+json") {
		t.Fatalf("message %q does not name the type", msg)
	}
	// A layer type the config's entry does not allow.
	wrongLayer := clone(helm)
	wrongLayer["layers"] = []map[string]any{{"mediaType": oci.MediaTypeLayerGzip, "digest": reg.pushBlob("charts/app", chart), "size": len(chart)}}
	resp, body = reg.pushManifest("charts/app", "wrong", oci.MediaTypeImageManifest, wrongLayer)
	expectError(t, resp, body, 400, registry.CodeManifestInvalid)
	// An image-spec v1.1 artifact with the empty config, which the client
	// did not upload: accepted, and the empty blob is served.
	art := map[string]any{
		"schemaVersion": 2, "mediaType": oci.MediaTypeImageManifest, "artifactType": "application/vnd.example.report",
		"config": map[string]any{"mediaType": oci.MediaTypeEmptyJSON, "digest": oci.EmptyJSONDigest, "size": 2},
		"layers": []map[string]any{{"mediaType": "text/plain", "digest": reg.pushBlob("reports", chart), "size": len(chart)}},
	}
	resp, body = reg.pushManifest("reports", "r1", oci.MediaTypeImageManifest, art)
	if resp.StatusCode != 201 {
		t.Fatalf("v1.1 artifact: %d %s", resp.StatusCode, body)
	}
	resp, body = reg.do("GET", "/v2/reports/blobs/"+oci.EmptyJSONDigest, nil)
	if resp.StatusCode != 200 || string(body) != "{}" {
		t.Fatalf("empty blob: %d %q", resp.StatusCode, body)
	}
	// With v1.1 artifacts restricted, the same push is refused.
	strict := newRegistry(t, "sqlite", registry.Options{Policy: oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts()}})
	art["layers"] = []map[string]any{{"mediaType": "text/plain", "digest": strict.pushBlob("reports", chart), "size": len(chart)}}
	resp, body = strict.pushManifest("reports", "r1", oci.MediaTypeImageManifest, art)
	expectError(t, resp, body, 400, registry.CodeManifestInvalid)

	// An index does not carry what an image may not: with v1.1 artifacts
	// restricted, an entry of a type the allow-list does not name (stored
	// as a blob) is refused, and so is an artifactType it does not name;
	// child manifests and types it names are not.
	zip := []byte("PK zip bytes")
	entry := func(mt string, d digest.Digest, size int) map[string]any {
		return map[string]any{"mediaType": mt, "digest": d, "size": size}
	}
	blobIndex := map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageIndex,
		"manifests": []map[string]any{entry("application/zip", strict.pushBlob("charts/app", zip), len(zip))}}
	resp, body = strict.pushManifest("charts/app", "zip", oci.MediaTypeImageIndex, blobIndex)
	if msg := expectError(t, resp, body, 400, registry.CodeManifestInvalid); !strings.Contains(msg, "application/zip") {
		t.Fatalf("message %q does not name the type", msg)
	}
	resp, body = strict.do("GET", "/v2/charts/app/manifests/zip", nil)
	expectError(t, resp, body, 404, registry.CodeManifestUnknown)
	helmRaw := mustJSON(t, helm)
	strict.pushBlob("charts/app", cfg)
	strict.pushBlob("charts/app", chart)
	if resp, body = strict.do("PUT", "/v2/charts/app/manifests/0.1.0", helmRaw, "Content-Type", oci.MediaTypeImageManifest); resp.StatusCode != 201 {
		t.Fatalf("helm chart: %d %s", resp.StatusCode, body)
	}
	okIndex := map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageIndex,
		"manifests": []map[string]any{
			entry(oci.MediaTypeImageManifest, digest.FromBytes(helmRaw), len(helmRaw)),
			entry(oci.MediaTypeHelmChart, digest.FromBytes(chart), len(chart)),
		}}
	if resp, body = strict.pushManifest("charts/app", "0.1.0-index", oci.MediaTypeImageIndex, okIndex); resp.StatusCode != 201 {
		t.Fatalf("index of a chart: %d %s", resp.StatusCode, body)
	}
	okIndex["artifactType"] = "application/vnd.example.unlisted"
	resp, body = strict.pushManifest("charts/app", "typed", oci.MediaTypeImageIndex, okIndex)
	expectError(t, resp, body, 400, registry.CodeManifestInvalid)
	// Where v1.1 artifacts of any type are admitted, so are both.
	reg.pushBlob("charts/app", zip)
	if resp, body = reg.pushManifest("charts/app", "zip", oci.MediaTypeImageIndex, blobIndex); resp.StatusCode != 201 {
		t.Fatalf("index with a blob entry, v1.1 artifacts allowed: %d %s", resp.StatusCode, body)
	}
	okIndex["manifests"] = []map[string]any{entry(oci.MediaTypeImageManifest, digest.FromBytes(helmRaw), len(helmRaw))}
	if resp, body = reg.pushManifest("charts/app", "typed", oci.MediaTypeImageIndex, okIndex); resp.StatusCode != 201 {
		t.Fatalf("index with an artifactType, v1.1 artifacts allowed: %d %s", resp.StatusCode, body)
	}
}

func TestPullSemantics(t *testing.T) {
	reg := newRegistry(t, "sqlite", registry.Options{})
	layer := bytes.Repeat([]byte("abcdefghij"), 100)
	m := reg.imageManifest("app", layer)
	raw := mustJSON(t, m)
	md := digest.FromBytes(raw)
	resp, body := reg.do("PUT", "/v2/app/manifests/latest", raw, "Content-Type", oci.MediaTypeImageManifest)
	if resp.StatusCode != 201 || resp.Header.Get("Docker-Content-Digest") != md.String() || resp.Header.Get("Location") != "/v2/app/manifests/"+md.String() {
		t.Fatalf("push: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	for _, ref := range []string{"latest", md.String()} {
		for _, method := range []string{"GET", "HEAD"} {
			resp, body = reg.do(method, "/v2/app/manifests/"+ref, nil, "Accept", oci.MediaTypeImageManifest+", "+oci.MediaTypeDockerManifest)
			if resp.StatusCode != 200 || resp.Header.Get("Docker-Content-Digest") != md.String() ||
				resp.Header.Get("Content-Type") != oci.MediaTypeImageManifest || resp.ContentLength != int64(len(raw)) {
				t.Fatalf("%s %s: %d %v", method, ref, resp.StatusCode, resp.Header)
			}
			if method == "GET" && !bytes.Equal(body, raw) {
				t.Fatal("manifest not served byte for byte as pushed")
			}
		}
	}
	// Accept that excludes the stored type.
	resp, body = reg.do("GET", "/v2/app/manifests/latest", nil, "Accept", oci.MediaTypeDockerManifest)
	expectError(t, resp, body, 404, registry.CodeManifestUnknown)

	// Blob ranges.
	ld := digest.FromBytes(layer)
	for _, tc := range []struct {
		rng     string
		status  int
		want    []byte
		cr      string
		ifRange string
	}{
		{"bytes=0-9", 206, layer[:10], "bytes 0-9/1000", ""},
		{"bytes=990-", 206, layer[990:], "bytes 990-999/1000", ""},
		{"bytes=-5", 206, layer[995:], "bytes 995-999/1000", ""},
		{"bytes=995-5000", 206, layer[995:], "bytes 995-999/1000", ""},
		{"bytes=1000-", 416, nil, "bytes */1000", ""},
		{"items=0-1", 200, layer, "", ""},
		// If-Range (RFC 9110 13.1.5): the range only while the
		// validator is the blob's ETag, else the whole blob.
		{"bytes=0-9", 206, layer[:10], "bytes 0-9/1000", `"` + ld.String() + `"`},
		{"bytes=0-9", 200, layer, "", `"sha256:` + strings.Repeat("0", 64) + `"`},
		{"bytes=0-9", 200, layer, "", "Sat, 05 Dec 2026 06:00:00 GMT"},
	} {
		resp, body = reg.do("GET", "/v2/app/blobs/"+ld.String(), nil, "Range", tc.rng, "If-Range", tc.ifRange)
		if resp.StatusCode != tc.status || resp.Header.Get("Content-Range") != tc.cr || (tc.want != nil && !bytes.Equal(body, tc.want)) {
			t.Fatalf("Range %s: %d %q, %d bytes", tc.rng, resp.StatusCode, resp.Header.Get("Content-Range"), len(body))
		}
		if resp.Header.Get("Docker-Content-Digest") != ld.String() {
			t.Fatalf("Range %s: no Docker-Content-Digest", tc.rng)
		}
	}
	resp, _ = reg.do("HEAD", "/v2/app/blobs/"+ld.String(), nil)
	if resp.StatusCode != 200 || resp.ContentLength != 1000 {
		t.Fatalf("HEAD blob: %d %d", resp.StatusCode, resp.ContentLength)
	}
}

func TestMount(t *testing.T) {
	reg := newRegistry(t, "sqlite", registry.Options{})
	d := reg.pushBlob("src/app", []byte("shared layer"))
	// From a repository that has it.
	resp, _ := reg.do("POST", "/v2/dst/app/blobs/uploads/?mount="+d.String()+"&from=src/app", nil)
	if resp.StatusCode != 201 || resp.Header.Get("Location") != "/v2/dst/app/blobs/"+d.String() || resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("mount: %d %v", resp.StatusCode, resp.Header)
	}
	// From a repository that does not have it: a new upload session.
	resp, _ = reg.do("POST", "/v2/dst2/app/blobs/uploads/?mount="+d.String()+"&from=nothing/here", nil)
	if resp.StatusCode != 202 || !strings.Contains(resp.Header.Get("Location"), "/blobs/uploads/") {
		t.Fatalf("mount from a repo without the blob: %d %v", resp.StatusCode, resp.Header)
	}
	// Without from: the registry finds a readable repository.
	resp, _ = reg.do("POST", "/v2/dst3/app/blobs/uploads/?mount="+d.String(), nil)
	if resp.StatusCode != 201 {
		t.Fatalf("mount without from: %d", resp.StatusCode)
	}
	resp, _ = reg.do("HEAD", "/v2/dst3/app/blobs/"+d.String(), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("mounted blob: %d", resp.StatusCode)
	}
	// An unknown blob cannot be mounted.
	resp, _ = reg.do("POST", "/v2/dst3/app/blobs/uploads/?mount="+digest.FromString("nope").String(), nil)
	if resp.StatusCode != 202 {
		t.Fatalf("mount of an unknown blob: %d", resp.StatusCode)
	}
}

func TestListsAndPagination(t *testing.T) {
	reg := newRegistry(t, "sqlite", registry.Options{})
	m := reg.imageManifest("app", []byte("x"))
	tags := []string{"a", "b", "c", "d", "e"}
	for _, tag := range tags {
		if resp, body := reg.pushManifest("app", tag, oci.MediaTypeImageManifest, m); resp.StatusCode != 201 {
			t.Fatalf("tag %s: %d %s", tag, resp.StatusCode, body)
		}
	}
	var got []string
	next := "/v2/app/tags/list?n=2"
	for pages := 0; next != ""; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		resp, body := reg.do("GET", next, nil)
		var page struct {
			Name string   `json:"name"`
			Tags []string `json:"tags"`
		}
		json.Unmarshal(body, &page)
		if page.Name != "app" {
			t.Fatalf("name = %q", page.Name)
		}
		got = append(got, page.Tags...)
		next = ""
		if link := resp.Header.Get("Link"); link != "" {
			next = link[1:strings.Index(link, ">")]
		}
	}
	if strings.Join(got, ",") != strings.Join(tags, ",") {
		t.Fatalf("paged tags = %v", got)
	}
	resp, body := reg.do("GET", "/v2/app/tags/list?n=0", nil)
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"tags":[]`) {
		t.Fatalf("n=0: %d %s", resp.StatusCode, body)
	}
	resp, body = reg.do("GET", "/v2/app/tags/list?n=-1", nil)
	expectError(t, resp, body, 400, registry.CodePaginationInvalid)
	for _, r := range []string{"b/x", "c/y/z"} {
		reg.pushBlob(r, []byte("x"))
	}
	resp, body = reg.do("GET", "/v2/_catalog?n=1&last=app", nil)
	if resp.StatusCode != 200 || string(body) != `{"repositories":["b/x"]}` || !strings.Contains(resp.Header.Get("Link"), "last=b%2Fx") {
		t.Fatalf("catalog page: %s %v", body, resp.Header.Get("Link"))
	}
}

func TestDeletes(t *testing.T) {
	reg := newRegistry(t, "sqlite", registry.Options{})
	m := reg.imageManifest("app", []byte("layer-x"))
	raw := mustJSON(t, m)
	md := digest.FromBytes(raw)
	reg.pushManifest("app", "v1", oci.MediaTypeImageManifest, m)
	reg.pushManifest("app", "v2", oci.MediaTypeImageManifest, m)
	// Delete a tag: the manifest stays.
	resp, _ := reg.do("DELETE", "/v2/app/manifests/v1", nil)
	if resp.StatusCode != 202 {
		t.Fatalf("delete tag: %d", resp.StatusCode)
	}
	resp, _ = reg.do("HEAD", "/v2/app/manifests/"+md.String(), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("manifest gone with its tag: %d", resp.StatusCode)
	}
	// Delete the manifest: its tags go too.
	resp, _ = reg.do("DELETE", "/v2/app/manifests/"+md.String(), nil)
	if resp.StatusCode != 202 {
		t.Fatalf("delete manifest: %d", resp.StatusCode)
	}
	resp, body := reg.do("GET", "/v2/app/manifests/v2", nil)
	expectError(t, resp, body, 404, registry.CodeManifestUnknown)
	resp, body = reg.do("DELETE", "/v2/app/manifests/"+md.String(), nil)
	expectError(t, resp, body, 404, registry.CodeManifestUnknown)
	// Delete a blob.
	ld := digest.FromString("layer-x")
	resp, _ = reg.do("DELETE", "/v2/app/blobs/"+ld.String(), nil)
	if resp.StatusCode != 202 {
		t.Fatalf("delete blob: %d", resp.StatusCode)
	}
	resp, body = reg.do("GET", "/v2/app/blobs/"+ld.String(), nil)
	expectError(t, resp, body, 404, registry.CodeBlobUnknown)
}

func TestSHA512(t *testing.T) {
	reg := newRegistry(t, "sqlite", registry.Options{})
	content := []byte("sha512 content")
	sum := sha512.Sum512(content)
	d := digest.NewDigestFromBytes(digest.SHA512, sum[:])
	resp, body := reg.do("POST", "/v2/app/blobs/uploads/?digest="+d.String(), content)
	if resp.StatusCode != 201 {
		t.Fatalf("sha512 blob: %d %s", resp.StatusCode, body)
	}
	resp, body = reg.do("GET", "/v2/app/blobs/"+d.String(), nil)
	if resp.StatusCode != 200 || !bytes.Equal(body, content) {
		t.Fatalf("sha512 pull: %d", resp.StatusCode)
	}
	m := reg.imageManifest("app", content)
	raw := mustJSON(t, m)
	msum := sha512.Sum512(raw)
	md := digest.NewDigestFromBytes(digest.SHA512, msum[:])
	resp, body = reg.do("PUT", "/v2/app/manifests/"+md.String(), raw, "Content-Type", oci.MediaTypeImageManifest)
	if resp.StatusCode != 201 || resp.Header.Get("Docker-Content-Digest") != md.String() {
		t.Fatalf("sha512 manifest: %d %s", resp.StatusCode, body)
	}
	resp, _ = reg.do("GET", "/v2/app/manifests/"+md.String(), nil)
	if resp.StatusCode != 200 {
		t.Fatalf("sha512 manifest pull: %d", resp.StatusCode)
	}
}

// TestConcurrentPushes has clients push the same blob and the same tag at
// once; the end state must be consistent, on every dialect.
func TestConcurrentPushes(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			reg := newRegistry(t, dialect, registry.Options{})
			layer := bytes.Repeat([]byte("concurrent"), 5000)
			const n = 10
			var wg sync.WaitGroup
			digests := make([]digest.Digest, n)
			for i := 0; i < n; i++ {
				wg.Add(1)
				go func(i int) {
					defer wg.Done()
					m := reg.imageManifest("race/app", layer, []byte(fmt.Sprint("own layer ", i)))
					raw, _ := json.Marshal(m)
					digests[i] = digest.FromBytes(raw)
					resp, body := reg.do("PUT", "/v2/race/app/manifests/latest", raw, "Content-Type", oci.MediaTypeImageManifest)
					if resp.StatusCode != 201 {
						t.Errorf("push %d: %d %s", i, resp.StatusCode, body)
					}
				}(i)
			}
			wg.Wait()
			resp, body := reg.do("GET", "/v2/race/app/manifests/latest", nil)
			if resp.StatusCode != 200 || digest.FromBytes(body).String() != resp.Header.Get("Docker-Content-Digest") {
				t.Fatalf("latest: %d", resp.StatusCode)
			}
			for _, d := range digests {
				if resp, _ := reg.do("HEAD", "/v2/race/app/manifests/"+d.String(), nil); resp.StatusCode != 200 {
					t.Fatalf("manifest %s missing", d)
				}
			}
			resp, body = reg.do("GET", "/v2/race/app/blobs/"+digest.FromBytes(layer).String(), nil)
			if resp.StatusCode != 200 || !bytes.Equal(body, layer) {
				t.Fatalf("shared layer: %d", resp.StatusCode)
			}
		})
	}
}
