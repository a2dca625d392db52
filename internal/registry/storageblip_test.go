package registry_test

import (
	"bytes"
	"context"
	"crypto/sha512"
	"errors"
	"fmt"
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
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// errBlip is a storage failure that passes (S3 throttling, a timeout).
var errBlip = errors.New("s3: 503 SlowDown: please reduce your request rate")

// blippyDisk is storage whose next writer's Close or Commit fails once,
// as S3's UploadPart or CompleteMultipartUpload does when S3 stumbles, or
// whose next Move (S3's CopyObject and DeleteObject) or Reader fails once.
// It embeds storage.Driver only, so a blob is placed with Move (no Link).
type blippyDisk struct {
	storage.Driver
	failClose, failCommit, failMove, failRead *atomic.Bool
}

func (d blippyDisk) Move(ctx context.Context, src, dst string) error {
	if d.failMove.CompareAndSwap(true, false) {
		return errBlip
	}
	return d.Driver.Move(ctx, src, dst)
}

func (d blippyDisk) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	if d.failRead.CompareAndSwap(true, false) {
		return nil, errBlip
	}
	return d.Driver.Reader(ctx, path, offset)
}

func (d blippyDisk) Writer(ctx context.Context, path string, offset int64) (storage.FileWriter, error) {
	w, err := d.Driver.Writer(ctx, path, offset)
	if err != nil {
		return nil, err
	}
	return blippyWriter{w, d}, nil
}

type blippyWriter struct {
	storage.FileWriter
	d blippyDisk
}

func (w blippyWriter) Close() error {
	err := w.FileWriter.Close()
	if w.d.failClose.CompareAndSwap(true, false) {
		return errBlip
	}
	return err
}

func (w blippyWriter) Commit(ctx context.Context) error {
	if w.d.failCommit.CompareAndSwap(true, false) {
		return errBlip
	}
	return w.FileWriter.Commit(ctx)
}

// TestStorageBlipKeepsTheUpload: a storage failure that passes, while a
// chunk is kept, while the last PUT completes the upload, while the
// completed bytes move to their address or while a sha512 upload is read
// back for its digest, is answered 503 with a Retry-After and leaves the
// upload as it was recorded, so the client's retry of the same request
// finishes the push (as docs/storage.md promises). Before, these were 500
// and the PUT's failure deleted the upload, so the client had to send the
// whole blob again (its retried PUT was 404 BLOB_UPLOAD_UNKNOWN).
func TestStorageBlipKeepsTheUpload(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			db := metatest.Open(t, dialect)
			driver, err := fs.New(t.TempDir(), fs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var failClose, failCommit, failMove, failRead atomic.Bool
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
			srv := httptest.NewServer(registry.New(wire.RegistryStores(db), blippyDisk{driver, &failClose, &failCommit, &failMove, &failRead}, registry.Options{Policy: policy, Logger: log}))
			t.Cleanup(srv.Close)
			do := func(method, path string, body []byte) (*http.Response, []byte) {
				t.Helper()
				req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp, b
			}
			blob := patternBytes(3 << 20)
			first, second, last := blob[:1<<20], blob[1<<20:2<<20], blob[2<<20:]
			d := digest.FromBytes(blob)
			resp, _ := do("POST", "/v2/lib/app/blobs/uploads/", nil)
			loc := strings.TrimPrefix(resp.Header.Get("Location"), srv.URL)
			if resp.StatusCode != 202 {
				t.Fatalf("start an upload: %d", resp.StatusCode)
			}
			if resp, body := do("PATCH", loc, first); resp.StatusCode != 202 {
				t.Fatalf("first chunk: %d %s", resp.StatusCode, body)
			}
			unavailable := func(what string, resp *http.Response, body []byte) {
				t.Helper()
				expectError(t, resp, body, http.StatusServiceUnavailable, registry.CodeUnavailable)
				if resp.Header.Get("Retry-After") == "" {
					t.Errorf("%s: 503 without Retry-After", what)
				}
			}
			status := func(what, loc, wantRange string) {
				t.Helper()
				resp, _ := do("GET", loc, nil)
				if resp.StatusCode != 204 || resp.Header.Get("Range") != wantRange {
					t.Fatalf("%s: upload status %d, Range %q; want 204 and %q", what, resp.StatusCode, resp.Header.Get("Range"), wantRange)
				}
			}

			failClose.Store(true)
			resp, body := do("PATCH", loc, second)
			unavailable("a chunk storage could not keep", resp, body)
			status("after the chunk was refused", loc, "0-1048575")
			if resp, body := do("PATCH", loc, second); resp.StatusCode != 202 {
				t.Fatalf("the chunk again: %d %s", resp.StatusCode, body)
			}

			failCommit.Store(true)
			put := func(loc string, d digest.Digest) string {
				if strings.Contains(loc, "?") {
					return loc + "&digest=" + d.String()
				}
				return loc + "?digest=" + d.String()
			}
			resp, body = do("PUT", put(loc, d), last)
			unavailable("a PUT storage could not complete", resp, body)
			status("after the PUT was refused", loc, "0-2097151")
			// Completed this time, the bytes fail to move to their address.
			failMove.Store(true)
			resp, body = do("PUT", put(loc, d), last)
			unavailable("a PUT whose bytes storage could not move into place", resp, body)
			status("after the move failed", loc, "0-2097151")
			if resp, body := do("PUT", put(loc, d), last); resp.StatusCode != 201 {
				t.Fatalf("the PUT again: %d %s", resp.StatusCode, body)
			}
			if resp, body := do("GET", "/v2/lib/app/blobs/"+d.String(), nil); resp.StatusCode != 200 || !bytes.Equal(body, blob) {
				t.Fatalf("GET the blob: %d, %d bytes", resp.StatusCode, len(body))
			}

			// A sha512 upload is read back for its digest: a read that
			// fails is the same.
			sum := sha512.Sum512(blob)
			d512 := digest.NewDigestFromBytes(digest.SHA512, sum[:])
			resp, _ = do("POST", "/v2/lib/app/blobs/uploads/", nil)
			loc = strings.TrimPrefix(resp.Header.Get("Location"), srv.URL)
			if resp, body := do("PATCH", loc, blob[:2<<20]); resp.StatusCode != 202 {
				t.Fatalf("sha512 upload's chunk: %d %s", resp.StatusCode, body)
			}
			failRead.Store(true)
			resp, body = do("PUT", put(loc, d512), last)
			unavailable("a sha512 PUT whose bytes storage could not read back", resp, body)
			status("after the read failed", loc, "0-2097151")
			if resp, body := do("PUT", put(loc, d512), last); resp.StatusCode != 201 {
				t.Fatalf("the sha512 PUT again: %d %s", resp.StatusCode, body)
			}
			if resp, body := do("GET", "/v2/lib/app/blobs/"+d512.String(), nil); resp.StatusCode != 200 || !bytes.Equal(body, blob) {
				t.Fatalf("GET the sha512 blob: %d, %d bytes", resp.StatusCode, len(body))
			}
		})
	}
}

// fullFileDisk is storage whose writers refuse to grow a file past what
// the backend holds in one (S3's 10,000 parts).
type fullFileDisk struct{ storage.Driver }

func (d fullFileDisk) Writer(ctx context.Context, path string, offset int64) (storage.FileWriter, error) {
	w, err := d.Driver.Writer(ctx, path, offset)
	if err != nil {
		return nil, err
	}
	return fullFileWriter{w}, nil
}

type fullFileWriter struct{ storage.FileWriter }

func (w fullFileWriter) Close() error {
	w.FileWriter.Close()
	return fmt.Errorf("s3 write: %w", storage.ErrFileTooLarge)
}

// TestBlobTooLargeForStorageIsNoRetry: a chunk the storage cannot hold in
// one file is refused with 413, not a 503 that invites a retry that
// cannot succeed.
func TestBlobTooLargeForStorageIsNoRetry(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	srv := httptest.NewServer(registry.New(wire.RegistryStores(db), fullFileDisk{driver}, registry.Options{Policy: policy, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(srv.Close)
	resp, err := http.Post(srv.URL+"/v2/lib/app/blobs/uploads/", "", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	req, _ := http.NewRequest("PATCH", srv.URL+strings.TrimPrefix(resp.Header.Get("Location"), srv.URL), bytes.NewReader(patternBytes(1000)))
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	expectError(t, resp, body, http.StatusRequestEntityTooLarge, registry.CodeBlobUploadInvalid)
}
