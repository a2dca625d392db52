package registry_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// rangeDisk is storage that reads bounded ranges (as S3 does with
// storage.RangeReader), recording what it was asked.
type rangeDisk struct {
	storage.Driver
	mu    *sync.Mutex
	asked *[][2]int64
}

func (d rangeDisk) RangeReader(ctx context.Context, path string, offset, length int64) (io.ReadCloser, error) {
	d.mu.Lock()
	*d.asked = append(*d.asked, [2]int64{offset, length})
	d.mu.Unlock()
	rc, err := d.Driver.Reader(ctx, path, offset)
	if err != nil {
		return nil, err
	}
	return struct {
		io.Reader
		io.Closer
	}{io.LimitReader(rc, length), rc}, nil
}

// TestRangeGetReadsOnlyTheRange: a blob GET with a Range asks storage for
// that range only (on S3 one GET of those bytes), not for the rest of the
// blob from its start; a GET without one reads the whole blob.
func TestRangeGetReadsOnlyTheRange(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var asked [][2]int64
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	srv := httptest.NewServer(registry.New(wire.RegistryStores(db), rangeDisk{driver, &mu, &asked},
		registry.Options{Policy: policy, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(srv.Close)
	blob := patternBytes(1 << 20)
	d := digest.FromBytes(blob)
	resp, err := http.Post(srv.URL+"/v2/lib/app/blobs/uploads/?digest="+d.String(), "application/octet-stream", bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 201 {
		t.Fatalf("push: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", srv.URL+"/v2/lib/app/blobs/"+d.String(), nil)
	req.Header.Set("Range", "bytes=1000-1099")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusPartialContent || !bytes.Equal(body, blob[1000:1100]) {
		t.Fatalf("ranged GET: %d, %d bytes", resp.StatusCode, len(body))
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 1 || asked[0] != [2]int64{1000, 100} {
		t.Fatalf("storage was asked for ranges %v, want one of 100 bytes at 1000", asked)
	}
}
