package registry_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// fullDisk is a filesystem whose writes fail as a full one's do (ENOSPC)
// while full is set.
type fullDisk struct {
	storage.Driver
	full *atomic.Bool
}

func (d fullDisk) Writer(ctx context.Context, path string, offset int64) (storage.FileWriter, error) {
	w, err := d.Driver.Writer(ctx, path, offset)
	if err != nil {
		return nil, err
	}
	return fullWriter{w, d.full, path}, nil
}

func (d fullDisk) PutContent(ctx context.Context, path string, content []byte) error {
	if d.full.Load() {
		return &os.PathError{Op: "write", Path: path, Err: syscall.ENOSPC}
	}
	return d.Driver.PutContent(ctx, path, content)
}

type fullWriter struct {
	storage.FileWriter
	full *atomic.Bool
	path string
}

func (w fullWriter) Write(p []byte) (int, error) {
	if w.full.Load() {
		return 0, &os.PathError{Op: "write", Path: w.path, Err: syscall.ENOSPC}
	}
	return w.FileWriter.Write(p)
}

// TestStorageFull: a push that finds the storage full is told so (507,
// with a message that says what to do) rather than handed an internal
// error; nothing half-written is left, and the same push succeeds once
// there is space again.
func TestStorageFull(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			db := metatest.Open(t, dialect)
			driver, err := fs.New(t.TempDir(), fs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			var full atomic.Bool
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
			srv := httptest.NewServer(registry.New(wire.RegistryStores(db), fullDisk{driver, &full}, registry.Options{Policy: policy, Logger: log}))
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
			stored := patternBytes(64 << 10)
			blob := patternBytes(3 << 20)
			sd, d := digest.FromBytes(stored), digest.FromBytes(blob)
			if resp, _ := do("POST", "/v2/lib/app/blobs/uploads/?digest="+sd.String(), stored); resp.StatusCode != 201 {
				t.Fatalf("push before the disk fills: %d", resp.StatusCode)
			}
			full.Store(true)
			refused := func(what string, resp *http.Response, body []byte) {
				t.Helper()
				if msg := expectError(t, resp, body, http.StatusInsufficientStorage, registry.CodeUnavailable); !strings.Contains(msg, "storage is full") {
					t.Errorf("%s on a full disk: %q, want a message saying the storage is full", what, msg)
				}
			}
			resp, body := do("POST", "/v2/lib/app/blobs/uploads/?digest="+d.String(), blob)
			refused("a monolithic push", resp, body)
			resp, _ = do("POST", "/v2/lib/app/blobs/uploads/", nil)
			loc := strings.TrimPrefix(resp.Header.Get("Location"), srv.URL)
			if resp.StatusCode != 202 {
				t.Fatalf("start an upload: %d", resp.StatusCode)
			}
			resp, body = do("PATCH", loc, blob)
			refused("a PATCH", resp, body)
			if resp, _ := do("HEAD", "/v2/lib/app/blobs/"+d.String(), nil); resp.StatusCode != 404 {
				t.Errorf("the refused blob is served: %d", resp.StatusCode)
			}
			full.Store(false)
			if resp, body := do("POST", "/v2/lib/app/blobs/uploads/?digest="+d.String(), blob); resp.StatusCode != 201 {
				t.Fatalf("the same push once there is space: %d %s", resp.StatusCode, body)
			}
			for _, want := range []struct {
				d    digest.Digest
				size int
			}{{sd, len(stored)}, {d, len(blob)}} {
				if resp, body := do("GET", "/v2/lib/app/blobs/"+want.d.String(), nil); resp.StatusCode != 200 || digest.FromBytes(body) != want.d {
					t.Errorf("GET %s after the disk was full: %d, %d bytes", want.d, resp.StatusCode, len(body))
				}
			}
		})
	}
}

// patternBytes is n bytes of a fixed, non-repeating-looking pattern.
func patternBytes(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7 + i/251)
	}
	return b
}
