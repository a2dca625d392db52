package registry_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// skew makes the next claim as a replica whose clock runs a minute behind
// the others' makes it: its lease has run out, for every other request,
// as soon as it is recorded, while the replica itself sees it end a
// minute later. The registry is handed the claim's token (its lease's
// end) a minute later than the store recorded it, and every token it
// hands back is shifted back (real).
type skew struct {
	mu     sync.Mutex
	next   bool
	tokens map[int64]int64 // the token the registry holds -> the store's
}

const skewMicros = int64(time.Minute / time.Microsecond)

// show records a skewed claim's token and returns the one the registry
// is handed.
func (s *skew) show(stored int64) int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.tokens[stored+skewMicros] = stored
	return stored + skewMicros
}

// real returns the store's token for one the registry holds.
func (s *skew) real(held int64) (int64, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	stored, ok := s.tokens[held]
	if !ok {
		return held, false
	}
	return stored, true
}

func (s *skew) take() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	taken := s.next
	s.next = false
	return taken
}

// skewedUploads makes the next claim skewed.
type skewedUploads struct {
	registry.UploadStore
	skew *skew
}

func (u skewedUploads) ClaimUpload(ctx context.Context, repo, id string, lease time.Duration) (meta.Upload, error) {
	if !u.skew.take() {
		return u.UploadStore.ClaimUpload(ctx, repo, id, lease)
	}
	up, err := u.UploadStore.ClaimUpload(ctx, repo, id, time.Microsecond)
	if err == nil {
		up.Claim = u.skew.show(up.Claim)
	}
	return up, err
}

func (u skewedUploads) RenewUpload(ctx context.Context, id string, claim int64, lease time.Duration) (int64, error) {
	stored, skewed := u.skew.real(claim)
	if !skewed {
		return u.UploadStore.RenewUpload(ctx, id, claim, lease)
	}
	next, err := u.UploadStore.RenewUpload(ctx, id, stored, time.Microsecond)
	if err != nil {
		return claim, err
	}
	return u.skew.show(next), nil
}

func (u skewedUploads) ReleaseUpload(ctx context.Context, id string, claim int64) error {
	stored, _ := u.skew.real(claim)
	return u.UploadStore.ReleaseUpload(ctx, id, stored)
}

func (u skewedUploads) AdvanceUpload(ctx context.Context, id string, claim, oldSize, newSize int64, hashState, storageState []byte) error {
	stored, _ := u.skew.real(claim)
	return u.UploadStore.AdvanceUpload(ctx, id, stored, oldSize, newSize, hashState, storageState)
}

func (u skewedUploads) DeleteUpload(ctx context.Context, id string, claim int64) error {
	stored, _ := u.skew.real(claim)
	return u.UploadStore.DeleteUpload(ctx, id, stored)
}

// pausedBlobs holds StoreBlob until released.
type pausedBlobs struct {
	registry.BlobStore
	skew             *skew
	entered, release chan struct{}
}

func (b pausedBlobs) StoreBlob(ctx context.Context, repo string, blob meta.Blob, up meta.UploadClaim, w meta.Writer, bytes meta.BlobBytes) (bool, error) {
	if up.ID != "" {
		b.entered <- struct{}{}
		<-b.release
		up.Claim, _ = b.skew.real(up.Claim)
	}
	return b.BlobStore.StoreBlob(ctx, repo, blob, up, w, bytes)
}

// TestLostClaimStoresNothing: a request finishing an upload whose claim
// ran out, and which another request took over and wrote into, does not
// record the blob: on the filesystem the file it hashed holds the other
// request's bytes by then, and the blob would have been served, under its
// digest, with bytes that are not its.
func TestLostClaimStoresNothing(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			db := metatest.Open(t, dialect)
			driver, err := fs.New(t.TempDir(), fs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			skewed := &skew{tokens: map[int64]int64{}}
			paused := pausedBlobs{db.Blobs(), skewed, make(chan struct{}), make(chan struct{})}
			stores := wire.RegistryStores(db)
			stores.Blobs = paused
			stores.Uploads = skewedUploads{db.Uploads(), skewed}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
			srv := httptest.NewServer(registry.New(stores, driver, registry.Options{Policy: policy, Logger: log}))
			t.Cleanup(srv.Close)
			do := func(method, path string, body []byte) (*http.Response, []byte) {
				req, _ := http.NewRequest(method, srv.URL+path, bytes.NewReader(body))
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Error(err)
					return &http.Response{}, nil
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp, b
			}

			resp, _ := do("POST", "/v2/app/blobs/uploads/", nil)
			loc := resp.Header.Get("Location")
			if resp.StatusCode != http.StatusAccepted || loc == "" {
				t.Fatalf("start upload: %d", resp.StatusCode)
			}
			first, last := bytes.Repeat([]byte("a"), 4096), bytes.Repeat([]byte("b"), 4096)
			if resp, body := do("PATCH", loc, first); resp.StatusCode != http.StatusAccepted {
				t.Fatalf("PATCH: %d %s", resp.StatusCode, body)
			}
			want := digest.FromBytes(append(append([]byte{}, first...), last...))

			// The finishing PUT claims with a lease that has run out for
			// everyone but itself, and waits before storing the blob it
			// hashed.
			skewed.mu.Lock()
			skewed.next = true
			skewed.mu.Unlock()
			done := make(chan int, 1)
			go func() {
				sep := "?"
				if strings.Contains(loc, "?") {
					sep = "&"
				}
				resp, _ := do("PUT", loc+sep+"digest="+want.String(), last)
				done <- resp.StatusCode
			}()
			<-paused.entered
			// Another request takes the session over and writes into it.
			if resp, body := do("PATCH", loc, bytes.Repeat([]byte("X"), 4096)); resp.StatusCode != http.StatusAccepted {
				t.Fatalf("taking PATCH: %d %s", resp.StatusCode, body)
			}
			close(paused.release)
			if code := <-done; code != http.StatusConflict {
				t.Errorf("the PUT whose claim was lost answered %d, want 409", code)
			}
			resp, body := do("GET", "/v2/app/blobs/"+want.String(), nil)
			if resp.StatusCode == http.StatusOK {
				if got := sha256.Sum256(body); digest.NewDigestFromBytes(digest.SHA256, got[:]) != want {
					t.Fatalf("%s is served with other bytes (%d bytes, digest %x)", want, len(body), got)
				}
				t.Fatalf("the blob was stored by a request that had lost its claim")
			}
		})
	}
}

// heldDisk is storage whose writers hold what they are given until Close
// or Commit sends it on, as the S3 driver's hold up to a part: sent
// counts the bytes they send on, commits the Commits that ran.
type heldDisk struct {
	storage.Driver
	sent, commits *atomic.Int64
	received      chan struct{} // a writer was given bytes (not waited for)
}

func (d heldDisk) Writer(ctx context.Context, path string, offset int64) (storage.FileWriter, error) {
	w, err := d.Driver.Writer(ctx, path, offset)
	if err != nil {
		return nil, err
	}
	return &heldWriter{FileWriter: w, d: d}, nil
}

type heldWriter struct {
	storage.FileWriter
	d   heldDisk
	buf []byte
}

func (w *heldWriter) Write(p []byte) (int, error) {
	w.buf = append(w.buf, p...)
	select {
	case w.d.received <- struct{}{}:
	default:
	}
	return len(p), nil
}

func (w *heldWriter) Size() int64 { return w.FileWriter.Size() + int64(len(w.buf)) }

func (w *heldWriter) send() error {
	w.d.sent.Add(int64(len(w.buf)))
	_, err := w.FileWriter.Write(w.buf)
	w.buf = nil
	return err
}

func (w *heldWriter) Close() error {
	return errors.Join(w.send(), w.FileWriter.Close())
}

func (w *heldWriter) Commit(ctx context.Context) error {
	w.d.commits.Add(1)
	if err := w.send(); err != nil {
		return err
	}
	return w.FileWriter.Commit(ctx)
}

// Abandon drops what the writer holds, as the S3 writer's does.
func (w *heldWriter) Abandon() {
	w.buf = nil
	w.FileWriter.Close()
}

// losingUploads hands out, once armed, a claim that its request loses:
// recorded with a lease shorter than the registry's, so that its first
// renewal is due soon, and that renewal waits until the claim is doomed,
// then reports it lost.
type losingUploads struct {
	registry.UploadStore
	*losing
}

type losing struct {
	mu     sync.Mutex
	lease  time.Duration // of the next claim; 0: the registry's
	lose   chan struct{} // closed when the next claim is lost
	doomed map[int64]chan struct{}
}

// arm makes the next claim one recorded with lease and lost once the
// returned function is called.
func (u losingUploads) arm(t *testing.T, lease time.Duration) func() {
	lose := make(chan struct{})
	u.mu.Lock()
	u.lease, u.lose = lease, lose
	u.mu.Unlock()
	var once sync.Once
	end := func() { once.Do(func() { close(lose) }) }
	t.Cleanup(end) // a renewal waiting for it holds up its request's end
	return end
}

func (u losingUploads) ClaimUpload(ctx context.Context, repo, id string, lease time.Duration) (meta.Upload, error) {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.lease == 0 {
		return u.UploadStore.ClaimUpload(ctx, repo, id, lease)
	}
	up, err := u.UploadStore.ClaimUpload(ctx, repo, id, u.lease)
	if err == nil {
		u.doomed[up.Claim] = u.lose
		u.lease, u.lose = 0, nil
	}
	return up, err
}

func (u losingUploads) RenewUpload(ctx context.Context, id string, claim int64, lease time.Duration) (int64, error) {
	u.mu.Lock()
	lose := u.doomed[claim]
	u.mu.Unlock()
	if lose == nil {
		return u.UploadStore.RenewUpload(ctx, id, claim, lease)
	}
	<-lose
	return claim, meta.ErrUploadClaimLost
}

// TestLostClaimSendsNothing: a request whose claim on an upload is lost
// sends storage nothing more. What its writer holds (on S3, the bytes
// buffered for the next part) is dropped, not sent by the Close that keeps
// a chunk, nothing of the chunk is recorded, and a PUT commits nothing.
// Before, Close sent the buffer and Commit ran before the claim was
// checked: on S3 a stale request's part N overwrote the part N the request
// that took the upload over recorded, and completing the upload failed
// (InvalidPart) at every retry until the upload expired. The client
// resumes where the upload was recorded and finishes it.
func TestLostClaimSendsNothing(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			db := metatest.Open(t, dialect)
			driver, err := fs.New(t.TempDir(), fs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var sent, commits atomic.Int64
			disk := heldDisk{driver, &sent, &commits, make(chan struct{}, 1)}
			uploads := losingUploads{db.Uploads(), &losing{doomed: map[int64]chan struct{}{}}}
			stores := wire.RegistryStores(db)
			stores.Uploads = uploads
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
			srv := httptest.NewServer(registry.New(stores, disk, registry.Options{Policy: policy, Logger: log}))
			t.Cleanup(srv.Close)
			do := func(method, path string, body io.Reader) (*http.Response, []byte) {
				t.Helper()
				req, _ := http.NewRequest(method, srv.URL+path, body)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp, b
			}
			status := func(what, loc, wantRange string) {
				t.Helper()
				resp, _ := do("GET", loc, nil)
				if resp.StatusCode != 204 || resp.Header.Get("Range") != wantRange {
					t.Fatalf("%s: upload status %d, Range %q; want 204 and %q", what, resp.StatusCode, resp.Header.Get("Range"), wantRange)
				}
			}
			blob := patternBytes(1 << 20)
			d := digest.FromBytes(blob)
			resp, _ := do("POST", "/v2/app/blobs/uploads/", nil)
			loc := strings.TrimPrefix(resp.Header.Get("Location"), srv.URL)
			if resp, body := do("PATCH", loc, bytes.NewReader(blob[:4096])); resp.StatusCode != 202 {
				t.Fatalf("first chunk: %d %s", resp.StatusCode, body)
			}

			// A PATCH streams; its claim is lost once its writer holds
			// bytes, and the body goes on until the answer comes.
			lose := uploads.arm(t, 8*time.Second)
			sent.Store(0)
			pr, pw := io.Pipe()
			answered := make(chan struct{})
			go func() {
				piece := bytes.Repeat([]byte("x"), 16<<10)
				for i := 0; i < 4096; i++ {
					if _, err := pw.Write(piece); err != nil {
						return
					}
					select {
					case <-answered:
						pw.Close()
						return
					default:
					}
				}
				pw.Close()
			}()
			go func() {
				<-disk.received
				lose()
			}()
			resp, body := do("PATCH", loc, pr)
			close(answered)
			pr.Close()
			expectError(t, resp, body, http.StatusConflict, registry.CodeBlobUploadInvalid)
			if n := sent.Load(); n != 0 {
				t.Errorf("a request that lost its claim sent %d bytes to storage as it closed its writer", n)
			}
			status("after the PATCH that lost its claim", loc, "0-4095")

			// The client resumes; the PUT that finishes the upload loses its
			// claim before it completes the upload.
			if resp, body := do("PATCH", loc, bytes.NewReader(blob[4096:])); resp.StatusCode != 202 {
				t.Fatalf("the rest: %d %s", resp.StatusCode, body)
			}
			uploads.arm(t, 2*time.Second)() // its safe end has passed when it is recorded
			commits.Store(0)
			put := loc + "?digest=" + d.String()
			if strings.Contains(loc, "?") {
				put = loc + "&digest=" + d.String()
			}
			resp, body = do("PUT", put, nil)
			expectError(t, resp, body, http.StatusConflict, registry.CodeBlobUploadInvalid)
			if n := commits.Load(); n != 0 {
				t.Errorf("a PUT that had lost its claim completed the upload's file %d times", n)
			}
			if resp, body := do("PUT", put, nil); resp.StatusCode != 201 {
				t.Fatalf("the PUT again: %d %s", resp.StatusCode, body)
			}
			if resp, body := do("GET", "/v2/app/blobs/"+d.String(), nil); resp.StatusCode != 200 || !bytes.Equal(body, blob) {
				t.Fatalf("GET the blob: %d, %d bytes", resp.StatusCode, len(body))
			}
		})
	}
}
