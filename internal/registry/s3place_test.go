package registry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/s3"
	"github.com/berth-dev/berth/internal/testenv/s3server"
	"github.com/berth-dev/berth/internal/wire"
)

// TestS3BlobCopiedBeforeItsTransaction: on S3 a PUT copies the upload's
// object to the blob's address before the metadata transaction that
// records it (as the filesystem links it), so a long copy (a multi-GiB
// layer) holds neither SQLite's one writer nor, on PostgreSQL, a
// transaction and the digest's lock. While the copy is held at a front
// proxy, another upload starts; once it is let go, the blob is stored
// and nothing of the upload is left under /uploads: no object, no tail,
// no multipart upload.
func TestS3BlobCopiedBeforeItsTransaction(t *testing.T) {
	srv := s3server.Start(t)
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			testS3CopyBeforeTransaction(t, srv, dialect, false)
		})
	}
}

// TestS3LongCopyKeepsTheClaim: the copy to the blob's address runs while
// the upload's claim is still renewed. A copy longer than the claim's
// lease (a multi-GiB layer) let a retried PUT (a client whose balancer
// timed the first one out) take the session over meanwhile: the first
// PUT's transaction then found its claim lost, deleted the copy and
// answered 409, and the blob was not stored.
func TestS3LongCopyKeepsTheClaim(t *testing.T) {
	if testing.Short() {
		t.Skip("holds a copy past an upload lease (10 s)")
	}
	testS3CopyBeforeTransaction(t, s3server.Start(t), "sqlite", true)
}

func testS3CopyBeforeTransaction(t *testing.T, srv *s3server.Server, dialect string, retry bool) {
	target, _ := url.Parse(srv.Endpoint)
	rp := httputil.NewSingleHostReverseProxy(target)
	copying, release := make(chan struct{}), make(chan struct{})
	var once, releaseOnce sync.Once
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Amz-Copy-Source") != "" {
			once.Do(func() { close(copying) })
			<-release
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(front.Close)
	letGo := func() { releaseOnce.Do(func() { close(release) }) }

	t.Setenv("AWS_CA_BUNDLE", "") // the test server speaks plain HTTP
	ctx := context.Background()
	driver, err := s3.Open(ctx, s3.Options{Endpoint: front.URL, Region: srv.Region, Bucket: srv.Bucket(t),
		PathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: s3.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	db := metatest.Open(t, dialect)
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	h := httptest.NewServer(registry.New(wire.RegistryStores(db), driver,
		registry.Options{Policy: policy, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(h.Close)
	t.Cleanup(letGo) // first: a handler may wait for the held copy
	do := func(method, path string, body []byte) (*http.Response, []byte, error) {
		req, _ := http.NewRequest(method, h.URL+path, bytes.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp, b, nil
	}
	mustDo := func(method, path string, body []byte, status int) *http.Response {
		t.Helper()
		resp, b, err := do(method, path, body)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != status {
			t.Fatalf("%s %s: %d %s; want %d", method, path, resp.StatusCode, b, status)
		}
		return resp
	}

	// A chunked push: a part and a tail, a chunk that is only a tail, and
	// the last bytes on the PUT.
	blob := patternBytes(s3.MinPartSize + 3<<20)
	d := digest.FromBytes(blob)
	loc := strings.TrimPrefix(mustDo("POST", "/v2/lib/app/blobs/uploads/", nil, 202).Header.Get("Location"), h.URL)
	mustDo("PATCH", loc, blob[:s3.MinPartSize+1<<20], 202)
	mustDo("PATCH", loc, blob[s3.MinPartSize+1<<20:s3.MinPartSize+2<<20], 202)
	sep := "?"
	if strings.Contains(loc, "?") {
		sep = "&"
	}
	type answer struct {
		resp *http.Response
		body []byte
		err  error
	}
	put := make(chan answer, 1)
	go func() {
		resp, b, err := do("PUT", loc+sep+"digest="+d.String(), blob[s3.MinPartSize+2<<20:])
		put <- answer{resp, b, err}
	}()
	select {
	case <-copying:
	case a := <-put:
		t.Fatalf("the PUT answered without copying the blob: %+v", a)
	case <-time.After(time.Minute):
		t.Fatal("the PUT sent no copy to S3 within a minute")
	}
	// The copy is held: the database must still take another upload.
	post := make(chan answer, 1)
	go func() {
		resp, b, err := do("POST", "/v2/lib/other/blobs/uploads/", nil)
		post <- answer{resp, b, err}
	}()
	select {
	case a := <-post:
		if a.err != nil || a.resp.StatusCode != 202 {
			t.Fatalf("POST while the blob is copied: %+v", a)
		}
		other := strings.TrimPrefix(a.resp.Header.Get("Location"), h.URL)
		mustDo("DELETE", other, nil, 204)
	case <-time.After(30 * time.Second):
		t.Fatal("another upload waited 30 s for the blob's copy: the copy holds the metadata transaction")
	}
	retried := make(chan answer, 1)
	if retry {
		// Held past the claim's lease; the client retries its PUT.
		time.Sleep(registry.UploadLease + time.Second)
		go func() {
			resp, b, err := do("PUT", loc+sep+"digest="+d.String(), blob[s3.MinPartSize+2<<20:])
			retried <- answer{resp, b, err}
		}()
		time.Sleep(time.Second)
	}
	letGo()
	a := <-put
	if a.err != nil || a.resp.StatusCode != 201 {
		t.Fatalf("PUT: %+v %s", a, a.body)
	}
	if retry {
		// It waited for the first PUT's claim, and found the upload done.
		if r := <-retried; r.err != nil || r.resp.StatusCode != http.StatusNotFound {
			t.Fatalf("the retried PUT: %+v %s, want 404 (the upload was finished by the first)", r, r.body)
		}
	}
	if _, body, _ := do("GET", "/v2/lib/app/blobs/"+d.String(), nil); !bytes.Equal(body, blob) {
		t.Fatalf("GET the blob: %d bytes, want %d", len(body), len(blob))
	}
	if got, err := driver.List(ctx, "/uploads"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("left under /uploads after the PUT: %v, %v", got, err)
	}
	if ups, err := driver.MultipartUploads(ctx, "/", time.Now().Add(time.Hour)); err != nil || len(ups) != 0 {
		t.Fatalf("multipart uploads left: %v, %v", ups, err)
	}
}
