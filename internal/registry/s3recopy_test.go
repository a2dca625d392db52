package registry_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/s3"
	"github.com/berth-dev/berth/internal/testenv/s3server"
	"github.com/berth-dev/berth/internal/wire"
)

// TestS3RecopyFailureKeepsTheUpload: a PUT completed the upload's
// multipart upload and could not place the blob (503, the upload kept);
// the retried PUT continues from the completed object into a new
// multipart upload, and S3 refuses that (500 to every part, after the
// SDK's retries). The retry is answered 503 again and the object stays,
// so the third PUT stores the blob. Before, the failed continuation was
// cancelled, which deleted the completed object, the upload's only copy
// of its bytes: the third PUT was answered 404 BLOB_UPLOAD_UNKNOWN though
// the client had been told the upload was kept.
func TestS3RecopyFailureKeepsTheUpload(t *testing.T) {
	srv := s3server.Start(t)
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	var failParts atomic.Bool
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// UploadPart and UploadPartCopy: PUT ?partNumber=.
		if failParts.Load() && r.Method == http.MethodPut && r.URL.Query().Has("partNumber") {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>`+
				`<Message>We encountered an internal error. Please try again.</Message></Error>`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	t.Setenv("AWS_CA_BUNDLE", "") // the test server speaks plain HTTP
	driver, err := s3.Open(context.Background(), s3.Options{Endpoint: front.URL, Region: srv.Region, Bucket: srv.Bucket(t),
		PathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: s3.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	var failMove atomic.Bool
	db := metatest.Open(t, "sqlite")
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	h := httptest.NewServer(registry.New(wire.RegistryStores(db), slowDownS3{driver, &failMove},
		registry.Options{Policy: policy, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(h.Close)
	do := func(method, path string, body []byte) (*http.Response, []byte) {
		t.Helper()
		req, _ := http.NewRequest(method, h.URL+path, bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b
	}
	blob := patternBytes(s3.MinPartSize + 2<<20)
	first, last := blob[:s3.MinPartSize+1<<20], blob[s3.MinPartSize+1<<20:]
	d := digest.FromBytes(blob)
	resp, _ := do("POST", "/v2/lib/app/blobs/uploads/", nil)
	loc := strings.TrimPrefix(resp.Header.Get("Location"), h.URL)
	if resp, body := do("PATCH", loc, first); resp.StatusCode != 202 {
		t.Fatalf("first chunk: %d %s", resp.StatusCode, body)
	}
	put := loc + "?digest=" + d.String()
	if strings.Contains(loc, "?") {
		put = loc + "&digest=" + d.String()
	}
	failMove.Store(true)
	resp, body := do("PUT", put, last)
	expectError(t, resp, body, http.StatusServiceUnavailable, registry.CodeUnavailable)

	failParts.Store(true)
	resp, body = do("PUT", put, last)
	failParts.Store(false)
	expectError(t, resp, body, http.StatusServiceUnavailable, registry.CodeUnavailable)
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}

	if resp, body := do("PUT", put, last); resp.StatusCode != 201 || resp.Header.Get("Docker-Content-Digest") != d.String() {
		t.Fatalf("the third PUT: %d, digest %q, %s; want 201 and %s", resp.StatusCode, resp.Header.Get("Docker-Content-Digest"), body, d)
	}
	if resp, body := do("GET", "/v2/lib/app/blobs/"+d.String(), nil); resp.StatusCode != 200 || !bytes.Equal(body, blob) {
		t.Fatalf("GET the blob: %d, %d bytes", resp.StatusCode, len(body))
	}
}
