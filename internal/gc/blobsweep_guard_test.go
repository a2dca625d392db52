package gc

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/storage"
)

// recorded writes content at its blob address and records the blob (no
// repository links it), last modified at mtime.
func (e *env) recorded(t *testing.T, content string, mtime time.Time) digest.Digest {
	t.Helper()
	d := e.placed(t, content, mtime)
	if _, err := e.db.Blobs().StoreBlob(context.Background(), "", meta.Blob{Digest: d, Size: int64(len(content))}, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(e.root, filepath.FromSlash(storage.BlobPath(d))), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestBlobSweepRefusesAStoreTheDatabaseDoesNotKnow: against a database
// that records none of the blobs storage holds (a new, empty database: an
// operator's shell without BERTH_DATABASE_URL), the blob sweep removes
// nothing and the pass fails saying why, dry or not, whatever the
// interval; once the database records a blob storage holds, the sweep
// removes what no row records. Recent unrecorded bytes alone (a first
// push in progress) are no reason to fail.
func TestBlobSweepRefusesAStoreTheDatabaseDoesNotKnow(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		for _, iv := range []time.Duration{0, 10 * time.Minute} {
			t.Run(fmt.Sprintf("%s/interval=%s", dialect, iv), func(t *testing.T) {
				ctx := context.Background()
				e := newEnv(t, dialect, Options{UploadExpiry: time.Hour, Interval: iv})
				if _, err := e.c.Pass(ctx, false); err != nil {
					t.Fatalf("pass over an empty store: %v", err)
				}
				inProgress := e.placed(t, "a push in progress", time.Now())
				if _, err := e.c.Pass(ctx, false); err != nil {
					t.Fatalf("pass with only a recent placement: %v", err)
				}
				old := time.Now().Add(-72 * time.Hour)
				var blobs []digest.Digest
				for i := range 40 {
					blobs = append(blobs, e.placed(t, fmt.Sprintf("production layer %d", i), old))
				}
				// A pass with an interval sweeps the first blob's directory.
				slot := int64(blobSweepCycle / blobShards)
				shard, _ := strconv.ParseInt(blobs[0].Encoded()[:2], 16, 64)
				clock := time.Now().Truncate(blobSweepCycle).Add(time.Duration(shard * slot))
				e.c.now = func() time.Time { return clock }
				// The push is still in progress at the pass's clock, which
				// may be hours after the real time (the slot's start).
				inPath := filepath.Join(e.root, filepath.FromSlash(storage.BlobPath(inProgress)))
				if err := os.Chtimes(inPath, clock, clock); err != nil {
					t.Fatal(err)
				}
				for _, dry := range []bool{true, false} {
					rep, err := e.c.Pass(ctx, dry)
					if !errors.Is(err, ErrNoBlobRecorded) || !strings.Contains(err.Error(), "records none of them") {
						t.Fatalf("dry=%v: pass = %v, want ErrNoBlobRecorded", dry, err)
					}
					if rep.BlobLeftovers != 0 {
						t.Fatalf("dry=%v: %d blobs counted as removable", dry, rep.BlobLeftovers)
					}
				}
				for _, d := range blobs {
					if !e.exists(storage.BlobPath(d)) {
						t.Fatalf("%s removed by a refused sweep", d)
					}
				}

				kept := e.recorded(t, "recorded layer", old)
				rep, err := e.c.Pass(ctx, false)
				if err != nil {
					t.Fatal(err)
				}
				if iv == 0 && rep.BlobLeftovers != len(blobs) {
					t.Fatalf("removed %d unrecorded blobs, want %d", rep.BlobLeftovers, len(blobs))
				}
				if e.exists(storage.BlobPath(blobs[0])) {
					t.Fatal("the unrecorded blob of the swept directory is still there once the database records a blob")
				}
				if !e.exists(storage.BlobPath(kept)) {
					t.Fatal("the recorded blob was removed")
				}
			})
		}
	}
}
