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
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/s3"
	"github.com/berth-dev/berth/internal/testenv/s3server"
	"github.com/berth-dev/berth/internal/wire"
)

// isCompletion matches CompleteMultipartUpload (POST ?uploadId=).
func isCompletion(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Query().Has("uploadId")
}

// s3Completing is a registry on S3 behind a front proxy whose handling of
// CompleteMultipartUpload the test chooses; other requests pass.
type s3Completing struct {
	h      *httptest.Server
	driver *s3.Driver
}

func startS3Completing(t *testing.T, complete func(w http.ResponseWriter, r *http.Request, pass http.Handler, d *s3.Driver)) *s3Completing {
	t.Helper()
	srv := s3server.Start(t)
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	var driver atomic.Pointer[s3.Driver]
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if isCompletion(r) {
			complete(w, r, rp, driver.Load())
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	t.Setenv("AWS_CA_BUNDLE", "") // the test server speaks plain HTTP
	d, err := s3.Open(context.Background(), s3.Options{Endpoint: front.URL, Region: srv.Region, Bucket: srv.Bucket(t),
		PathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: s3.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	driver.Store(d)
	db := metatest.Open(t, "sqlite")
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	h := httptest.NewServer(registry.New(wire.RegistryStores(db), d,
		registry.Options{Policy: policy, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(h.Close)
	return &s3Completing{h: h, driver: d}
}

func (s *s3Completing) do(t *testing.T, method, path string, body []byte) (*http.Response, []byte) {
	t.Helper()
	req, _ := http.NewRequest(method, s.h.URL+path, bytes.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// pushChunked pushes blob as a chunk of a part and a tail, then the rest
// on the PUT, and returns the PUT's answer and the upload's location.
func (s *s3Completing) pushChunked(t *testing.T, blob []byte) (*http.Response, []byte, string) {
	t.Helper()
	resp, _ := s.do(t, "POST", "/v2/lib/app/blobs/uploads/", nil)
	loc := strings.TrimPrefix(resp.Header.Get("Location"), s.h.URL)
	split := s3.MinPartSize + 1<<20
	if resp, body := s.do(t, "PATCH", loc, blob[:split]); resp.StatusCode != 202 {
		t.Fatalf("first chunk: %d %s", resp.StatusCode, body)
	}
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	resp, body := s.do(t, "PUT", loc+sep+"digest="+digest.FromBytes(blob).String(), blob[split:])
	return resp, body, loc
}

// TestS3CompletionAnswerLost: S3 completes the upload's multipart upload
// but its answer is lost, and the SDK's retry is answered NoSuchUpload (as
// S3 may: the upload is an object now). The PUT
// stores the blob. Before, the commit was taken for data that is gone:
// the upload, and the completed object with it, was deleted and the PUT
// answered 500, and the client had to push the whole blob again.
func TestS3CompletionAnswerLost(t *testing.T) {
	var completions atomic.Int32
	s := startS3Completing(t, func(w http.ResponseWriter, r *http.Request, pass http.Handler, _ *s3.Driver) {
		if completions.Add(1) > 1 {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchUpload</Code>`+
				`<Message>The specified multipart upload does not exist.</Message></Error>`)
			return
		}
		rec := httptest.NewRecorder()
		pass.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			t.Errorf("the completion whose answer is lost: %d %s", rec.Code, rec.Body)
		}
		if conn, _, err := http.NewResponseController(w).Hijack(); err == nil {
			conn.Close()
		}
	})
	blob := patternBytes(s3.MinPartSize + 2<<20)
	if resp, body, _ := s.pushChunked(t, blob); resp.StatusCode != http.StatusCreated {
		t.Fatalf("PUT: %d %s; want 201", resp.StatusCode, body)
	}
	if n := completions.Load(); n < 2 {
		t.Fatalf("%d completions; want the first (its answer lost) and a retry", n)
	}
	d := digest.FromBytes(blob)
	if resp, body := s.do(t, "GET", "/v2/lib/app/blobs/"+d.String(), nil); resp.StatusCode != 200 || !bytes.Equal(body, blob) {
		t.Fatalf("GET the blob: %d, %d bytes", resp.StatusCode, len(body))
	}
}

// TestS3AbortedUploadIsUnknown: a PUT whose multipart upload was aborted
// before it could be completed (its data gone) is answered 404
// BLOB_UPLOAD_UNKNOWN, which makes the client start the blob over, as
// docs/storage.md says, not 500.
func TestS3AbortedUploadIsUnknown(t *testing.T) {
	s := startS3Completing(t, func(w http.ResponseWriter, r *http.Request, pass http.Handler, d *s3.Driver) {
		ups, err := d.MultipartUploads(r.Context(), "/uploads", time.Now().Add(time.Hour))
		if err != nil || len(ups) != 1 {
			t.Errorf("multipart uploads: %v, %v; want 1", ups, err)
		}
		for _, u := range ups {
			if err := d.AbortMultipartUpload(r.Context(), u); err != nil {
				t.Error(err)
			}
		}
		pass.ServeHTTP(w, r)
	})
	resp, body, loc := s.pushChunked(t, patternBytes(s3.MinPartSize+2<<20))
	expectError(t, resp, body, http.StatusNotFound, registry.CodeBlobUploadUnknown)
	if resp, _ := s.do(t, "GET", loc, nil); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("upload status after the PUT: %d; want 404", resp.StatusCode)
	}
	if got, err := s.driver.List(context.Background(), "/uploads"); err == nil {
		t.Fatalf("left under /uploads: %v", got)
	}
}
