package registry_test

import (
	"bytes"
	"context"
	"database/sql/driver"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// faultyDisk is the filesystem driver with faults to inject, each once
// (an armed fault is disarmed by the call it fails): the next writer's
// Commit or a Link into blobs/ fails as a full disk's do (ENOSPC); the
// next Writer, Write or Reader fails with readErr or errBlip (S3
// throttling); budget, when not negative, is how many more bytes writes
// take before the disk is full.
type faultyDisk struct {
	storage.Driver
	failCommit, failLink, failWriter, failWrite *atomic.Bool
	readErr                                     *atomic.Pointer[error]
	budget                                      *atomic.Int64
	// blockRead makes the next Reader wait for its context to end, and
	// fail with its error (a client gone while S3 opens the blob).
	blockRead *atomic.Bool
}

func newFaultyDisk(t *testing.T) faultyDisk {
	t.Helper()
	d, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fd := faultyDisk{Driver: d, failCommit: new(atomic.Bool), failLink: new(atomic.Bool), failWriter: new(atomic.Bool),
		failWrite: new(atomic.Bool), readErr: new(atomic.Pointer[error]), budget: new(atomic.Int64), blockRead: new(atomic.Bool)}
	fd.budget.Store(-1)
	return fd
}

func (d faultyDisk) Link(ctx context.Context, src, dst string) error {
	if d.failLink.CompareAndSwap(true, false) {
		return &os.LinkError{Op: "link", Old: src, New: dst, Err: syscall.ENOSPC}
	}
	return d.Driver.(storage.Linker).Link(ctx, src, dst)
}

func (d faultyDisk) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	if err := d.readErr.Swap(nil); err != nil {
		return nil, *err
	}
	if d.blockRead.CompareAndSwap(true, false) {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	return d.Driver.Reader(ctx, path, offset)
}

func (d faultyDisk) Writer(ctx context.Context, path string, offset int64) (storage.FileWriter, error) {
	if d.failWriter.CompareAndSwap(true, false) {
		return nil, errBlip
	}
	w, err := d.Driver.Writer(ctx, path, offset)
	if err != nil {
		return nil, err
	}
	return faultyWriter{w, d, path}, nil
}

type faultyWriter struct {
	storage.FileWriter
	d    faultyDisk
	path string
}

func (w faultyWriter) Write(p []byte) (int, error) {
	if w.d.failWrite.CompareAndSwap(true, false) {
		return 0, errBlip
	}
	if left := w.d.budget.Load(); left >= 0 && int64(len(p)) > left {
		n, err := w.FileWriter.Write(p[:left])
		w.d.budget.Store(-1) // full once: space is freed at once
		if err == nil {
			err = &os.PathError{Op: "write", Path: w.path, Err: syscall.ENOSPC}
		}
		return n, err
	} else if left >= 0 {
		w.d.budget.Add(-int64(len(p)))
	}
	return w.FileWriter.Write(p)
}

func (w faultyWriter) Commit(ctx context.Context) error {
	if w.d.failCommit.CompareAndSwap(true, false) {
		return &os.PathError{Op: "sync", Path: w.path, Err: syscall.ENOSPC}
	}
	return w.FileWriter.Commit(ctx)
}

// flakyBlobs is the blob store whose next StoreBlob fails with fail, as a
// full database, a restarting PostgreSQL or a dropped connection does.
type flakyBlobs struct {
	registry.BlobStore
	fail *atomic.Pointer[error]
}

func (b flakyBlobs) StoreBlob(ctx context.Context, repo string, blob meta.Blob, up meta.UploadClaim, w meta.Writer, bytes meta.BlobBytes) (bool, error) {
	if err := b.fail.Swap(nil); err != nil {
		return false, *err
	}
	return b.BlobStore.StoreBlob(ctx, repo, blob, up, w, bytes)
}

type faultyRegistry struct {
	t    *testing.T
	url  string
	disk faultyDisk
	// failStore, when set, is what the next StoreBlob fails with.
	failStore *atomic.Pointer[error]
	// srv serves the registry; logs holds what it logged.
	srv  *httptest.Server
	logs *lockedBuffer
}

// lockedBuffer is a log's buffer, written by handlers, read by the test.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func newFaultyRegistry(t *testing.T, dialect string) *faultyRegistry {
	t.Helper()
	db := metatest.Open(t, dialect)
	disk := newFaultyDisk(t)
	fail := new(atomic.Pointer[error])
	stores := wire.RegistryStores(db)
	stores.Blobs = flakyBlobs{stores.Blobs, fail}
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	logs := &lockedBuffer{}
	srv := httptest.NewServer(registry.New(stores, disk, registry.Options{Policy: policy, Logger: slog.New(slog.NewTextHandler(logs, nil))}))
	t.Cleanup(srv.Close)
	return &faultyRegistry{t: t, url: srv.URL, disk: disk, failStore: fail, srv: srv, logs: logs}
}

func (r *faultyRegistry) do(method, path string, body []byte, headers ...string) (*http.Response, []byte) {
	r.t.Helper()
	req, _ := http.NewRequest(method, r.url+path, bytes.NewReader(body))
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

// start opens an upload session and sends chunks, each answered 202.
func (r *faultyRegistry) start(chunks ...[]byte) string {
	r.t.Helper()
	resp, _ := r.do("POST", "/v2/lib/app/blobs/uploads/", nil)
	if resp.StatusCode != 202 {
		r.t.Fatalf("start an upload: %d", resp.StatusCode)
	}
	loc := strings.TrimPrefix(resp.Header.Get("Location"), r.url)
	for i, c := range chunks {
		if resp, body := r.do("PATCH", loc, c); resp.StatusCode != 202 {
			r.t.Fatalf("chunk %d: %d %s", i, resp.StatusCode, body)
		}
	}
	return loc
}

// kept checks that a failed request's answer says where the upload stands
// (Location, Range) and that its status says the same.
func (r *faultyRegistry) kept(what string, resp *http.Response, loc string, size int) {
	r.t.Helper()
	want := fmt.Sprintf("0-%d", size-1)
	if got := strings.TrimPrefix(resp.Header.Get("Location"), r.url); got != loc || resp.Header.Get("Range") != want {
		r.t.Errorf("%s: Location %q, Range %q; want %q and %q", what, got, resp.Header.Get("Range"), loc, want)
	}
	if resp, _ := r.do("GET", loc, nil); resp.StatusCode != 204 || resp.Header.Get("Range") != want {
		r.t.Fatalf("%s: upload status %d, Range %q; want 204 and %q", what, resp.StatusCode, resp.Header.Get("Range"), want)
	}
}

// finish PUTs the upload and pulls the blob back.
func (r *faultyRegistry) finish(loc string, blob []byte) {
	r.t.Helper()
	d := digest.FromBytes(blob)
	if resp, body := r.do("PUT", loc+"?digest="+d.String(), nil); resp.StatusCode != 201 {
		r.t.Fatalf("the PUT again: %d %s", resp.StatusCode, body)
	}
	if resp, body := r.do("GET", "/v2/lib/app/blobs/"+d.String(), nil); resp.StatusCode != 200 || digest.FromBytes(body) != d {
		r.t.Fatalf("GET the blob: %d, %d bytes, digest %s", resp.StatusCode, len(body), digest.FromBytes(body))
	}
}

func expectFull(t *testing.T, what string, resp *http.Response, body []byte) {
	t.Helper()
	if msg := expectError(t, resp, body, http.StatusInsufficientStorage, registry.CodeUnavailable); !strings.Contains(msg, "storage is full") {
		t.Errorf("%s: %q, want a message saying the storage is full", what, msg)
	}
}

func expectUnavailable(t *testing.T, what string, resp *http.Response, body []byte) {
	t.Helper()
	expectError(t, resp, body, http.StatusServiceUnavailable, registry.CodeUnavailable)
	if resp.Header.Get("Retry-After") == "" {
		t.Errorf("%s: 503 without Retry-After", what)
	}
}

// TestFinishKeepsUploadOnFullStorage: a PUT that finds the disk full
// while it completes the upload's file or links it to its content address
// is 507 with the upload's Location and Range, the session is kept at its
// recorded size, and the same PUT finishes it once space is freed. Before,
// the session and its bytes were deleted and the retry was 404
// BLOB_UPLOAD_UNKNOWN.
func TestFinishKeepsUploadOnFullStorage(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			r := newFaultyRegistry(t, dialect)
			blob := patternBytes(3 << 20)
			loc := r.start(blob[:1<<20], blob[1<<20:])
			put := loc + "?digest=" + digest.FromBytes(blob).String()

			r.disk.failCommit.Store(true)
			resp, body := r.do("PUT", put, nil)
			expectFull(t, "a PUT whose file the full disk could not complete", resp, body)
			r.kept("after the commit failed", resp, loc, len(blob))

			r.disk.failLink.Store(true)
			resp, body = r.do("PUT", put, nil)
			expectFull(t, "a PUT whose blob the full disk could not link into place", resp, body)
			r.kept("after the link failed", resp, loc, len(blob))
			r.finish(loc, blob)
		})
	}
}

// TestFinishKeepsUploadOnDatabaseFailure: a PUT whose blob the database
// could not record (full, restarting, a dropped connection) keeps the
// session: 507 when the database is full, else 503 with a Retry-After,
// with the upload's Location and Range; the same PUT finishes it.
func TestFinishKeepsUploadOnDatabaseFailure(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			r := newFaultyRegistry(t, dialect)
			for _, c := range []struct {
				name   string
				err    error
				expect func(*testing.T, string, *http.Response, []byte)
			}{
				{"full", fmt.Errorf("record blob: %w", &pgconn.PgError{Code: "53100", Message: "could not extend file"}), expectFull},
				{"unreachable", fmt.Errorf("record blob: %w", driver.ErrBadConn), expectUnavailable},
			} {
				blob := patternBytes(2<<20 + len(c.name))
				loc := r.start(blob[:1<<20], blob[1<<20:])
				r.failStore.Store(&c.err)
				resp, body := r.do("PUT", loc+"?digest="+digest.FromBytes(blob).String(), nil)
				c.expect(t, "a PUT the database did not record ("+c.name+")", resp, body)
				r.kept("after the database failed ("+c.name+")", resp, loc, len(blob))
				r.finish(loc, blob)
			}
		})
	}
}

// TestPartialChunkOnFullStorageSaysWhatWasKept: a chunk the disk filled
// partway is kept up to the last byte written, and its 507 answer says so
// with the upload's Location and Range (before: "nothing was stored" and
// no Range, while the session had recorded the bytes); a chunk whose
// write S3 refused is 503 with a Retry-After and the same headers.
func TestPartialChunkOnFullStorageSaysWhatWasKept(t *testing.T) {
	r := newFaultyRegistry(t, "sqlite")
	blob := patternBytes(3 << 20)
	loc := r.start(blob[:1<<20])
	const written = 300000
	r.disk.budget.Store(written)
	resp, body := r.do("PATCH", loc, blob[1<<20:])
	expectFull(t, "a chunk the disk filled partway", resp, body)
	if msg := expectError(t, resp, body, http.StatusInsufficientStorage, registry.CodeUnavailable); strings.Contains(msg, "nothing was stored") {
		t.Errorf("a chunk kept in part answered %q", msg)
	}
	r.kept("after the disk filled", resp, loc, 1<<20+written)

	r.disk.failWrite.Store(true)
	resp, body = r.do("PATCH", loc, blob[1<<20+written:])
	expectUnavailable(t, "a chunk storage refused", resp, body)
	r.kept("after storage refused the chunk", resp, loc, 1<<20+written)
	if resp, body := r.do("PATCH", loc, blob[1<<20+written:], "Content-Range", fmt.Sprintf("%d-%d", 1<<20+written, len(blob)-1)); resp.StatusCode != 202 {
		t.Fatalf("the rest: %d %s", resp.StatusCode, body)
	}
	r.finish(loc, blob)
}

// TestStorageBlipOutsideSessionsIs503: a storage failure that may pass in
// a single-request upload (opening or writing its file) or in a blob pull
// (opening the blob) is 503 UNAVAILABLE with a Retry-After, as the chunked
// path answers, not 500; the same request succeeds afterwards.
func TestStorageBlipOutsideSessionsIs503(t *testing.T) {
	r := newFaultyRegistry(t, "sqlite")
	blob := patternBytes(1 << 20)
	d := digest.FromBytes(blob)
	post := "/v2/lib/app/blobs/uploads/?digest=" + d.String()
	r.disk.failWriter.Store(true)
	resp, body := r.do("POST", post, blob)
	expectUnavailable(t, "a single-request upload whose file storage could not open", resp, body)
	r.disk.failWrite.Store(true)
	resp, body = r.do("POST", post, blob)
	expectUnavailable(t, "a single-request upload storage could not write", resp, body)
	if resp, body := r.do("POST", post, blob); resp.StatusCode != 201 {
		t.Fatalf("the upload again: %d %s", resp.StatusCode, body)
	}
	for _, rng := range []string{"", "bytes=10-99"} {
		blip := error(errBlip)
		r.disk.readErr.Store(&blip)
		resp, body := r.do("GET", "/v2/lib/app/blobs/"+d.String(), nil, "Range", rng)
		expectUnavailable(t, "a pull (Range "+rng+") storage could not open", resp, body)
	}
}

// TestPullCancelledWhileStorageOpensIsNoOutage: a client that goes away
// while storage opens its blob (containerd cancels parallel fetches) is
// not an outage of storage: nothing is logged as an error.
func TestPullCancelledWhileStorageOpensIsNoOutage(t *testing.T) {
	r := newFaultyRegistry(t, "sqlite")
	blob := patternBytes(4096)
	d := digest.FromBytes(blob)
	if resp, body := r.do("POST", "/v2/lib/app/blobs/uploads/?digest="+d.String(), blob); resp.StatusCode != 201 {
		t.Fatalf("push: %d %s", resp.StatusCode, body)
	}
	r.disk.blockRead.Store(true)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", r.url+"/v2/lib/app/blobs/"+d.String(), nil)
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		t.Fatalf("the pull answered %d before its client went away", resp.StatusCode)
	}
	r.srv.Close() // waits for the handler to end
	if r.disk.blockRead.Load() {
		t.Fatal("the pull never opened the blob")
	}
	if logs := r.logs.String(); strings.Contains(logs, "level=ERROR") {
		t.Fatalf("a pull its client cancelled was logged as an error:\n%s", logs)
	}
}

// TestBlobErrorsAreNotCached: the year-long Cache-Control and the ETag of
// a blob are sent with its bytes (200, 206) only; a failed pull (503, 500)
// or a range past its end (416) carries neither, so a shared cache does
// not keep the failure for a year.
func TestBlobErrorsAreNotCached(t *testing.T) {
	r := newFaultyRegistry(t, "sqlite")
	blob := patternBytes(4096)
	d := digest.FromBytes(blob)
	if resp, body := r.do("POST", "/v2/lib/app/blobs/uploads/?digest="+d.String(), blob); resp.StatusCode != 201 {
		t.Fatalf("push: %d %s", resp.StatusCode, body)
	}
	path := "/v2/lib/app/blobs/" + d.String()
	cached := func(resp *http.Response) bool {
		return strings.Contains(resp.Header.Get("Cache-Control"), "max-age") || resp.Header.Get("ETag") != ""
	}
	for _, c := range []struct {
		method, rng string
		status      int
	}{{"GET", "", 200}, {"HEAD", "", 200}, {"GET", "bytes=0-9", 206}} {
		if resp, _ := r.do(c.method, path, nil, "Range", c.rng); resp.StatusCode != c.status || !cached(resp) {
			t.Errorf("%s (Range %q): %d, Cache-Control %q, ETag %q; want %d with both", c.method, c.rng, resp.StatusCode,
				resp.Header.Get("Cache-Control"), resp.Header.Get("ETag"), c.status)
		}
	}
	for _, c := range []struct {
		what    string
		readErr error
		rng     string
		status  int
	}{
		{"storage unavailable", errBlip, "", 503},
		{"bytes missing from storage", fmt.Errorf("read blob: %w", storage.ErrNotFound), "", 500},
		{"storage unavailable, a range", errBlip, "bytes=0-9", 503},
		{"a range past the end", nil, "bytes=5000-", 416},
	} {
		if c.readErr != nil {
			r.disk.readErr.Store(&c.readErr)
		}
		resp, _ := r.do("GET", path, nil, "Range", c.rng)
		if resp.StatusCode != c.status || cached(resp) {
			t.Errorf("%s: %d, Cache-Control %q, ETag %q; want %d with neither", c.what, resp.StatusCode,
				resp.Header.Get("Cache-Control"), resp.Header.Get("ETag"), c.status)
		}
		r.disk.readErr.Store(nil)
	}
}
