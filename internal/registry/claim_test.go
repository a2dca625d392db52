package registry_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
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
