package registry_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/s3"
	"github.com/berth-dev/berth/internal/testenv/s3server"
	"github.com/berth-dev/berth/internal/wire"
)

// slowDownS3 is the S3 driver whose next copy into place fails once, as
// when S3 throttles: a Link (CopyObject, before the blob's transaction)
// or a Move (CopyObject and DeleteObject, inside it); everything else is
// the driver's own (its resumable writers and their state).
type slowDownS3 struct {
	*s3.Driver
	failMove *atomic.Bool
}

func (d slowDownS3) Move(ctx context.Context, src, dst string) error {
	if d.failMove.CompareAndSwap(true, false) {
		return errBlip
	}
	return d.Driver.Move(ctx, src, dst)
}

func (d slowDownS3) Link(ctx context.Context, src, dst string) error {
	if d.failMove.CompareAndSwap(true, false) {
		return errBlip
	}
	return d.Driver.Link(ctx, src, dst)
}

// TestS3MoveBlipKeepsTheUpload: on S3, a PUT that completed the upload's
// multipart upload and then failed to copy it to its content address is
// answered 503 with a Retry-After, the upload is kept at its recorded
// size, and the retried PUT (its body sent again) continues from the
// completed object and stores the blob. Before, the upload was deleted
// (500, then 404 BLOB_UPLOAD_UNKNOWN for the retry). The S3 writer can
// also be let go of without sending what it holds, which the registry
// relies on once a claim is lost.
func TestS3MoveBlipKeepsTheUpload(t *testing.T) {
	srv := s3server.Start(t)
	t.Setenv("AWS_CA_BUNDLE", "") // the test server speaks plain HTTP
	ctx := context.Background()
	driver, err := s3.Open(ctx, s3.Options{Endpoint: srv.Endpoint, Region: srv.Region, Bucket: srv.Bucket(t),
		PathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: s3.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	if w, err := driver.Writer(ctx, storage.UploadPath(storage.NewUploadID()), 0); err != nil {
		t.Fatal(err)
	} else if _, ok := w.(interface{ Abandon() }); !ok {
		t.Fatal("the S3 writer cannot be abandoned: a request that lost its claim would send its buffered part")
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
	// A part and a tail, then the last chunk on the PUT.
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
	if resp.Header.Get("Retry-After") == "" {
		t.Error("503 without Retry-After")
	}
	if resp, _ := do("GET", loc, nil); resp.StatusCode != 204 || resp.Header.Get("Range") != "0-6291455" {
		t.Fatalf("upload status after the move failed: %d, Range %q; want 204 and 0-6291455", resp.StatusCode, resp.Header.Get("Range"))
	}
	if resp, body := do("PUT", put, last); resp.StatusCode != 201 {
		t.Fatalf("the PUT again: %d %s", resp.StatusCode, body)
	}
	if resp, body := do("GET", "/v2/lib/app/blobs/"+d.String(), nil); resp.StatusCode != 200 || !bytes.Equal(body, blob) {
		t.Fatalf("GET the blob: %d, %d bytes", resp.StatusCode, len(body))
	}
}
