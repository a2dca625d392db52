package gc

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage"
)

// lockedBlobs refuses to delete blobs' bytes while locked, as S3 does for
// objects under an object lock.
type lockedBlobs struct {
	storage.Driver
	locked atomic.Bool
}

func (d *lockedBlobs) Delete(ctx context.Context, p string) error {
	if d.locked.Load() && strings.HasPrefix(p, "/blobs/") {
		return errors.New("AccessDenied: object is WORM protected")
	}
	return d.Driver.Delete(ctx, p)
}

// passes records what each pass told the metrics.
type passes struct{ reports []Report }

func (p *passes) GCPass(rep Report, _ error) { p.reports = append(p.reports, rep) }

// TestDeletedBytesCountedWhenDeleted: the bytes a pass reports (and
// registry_gc_storage_deleted_bytes_total adds) are those deleted from
// storage: none while the store refuses to delete a condemned blob, all
// of them by the pass that finally deletes them, and never twice.
func TestDeletedBytesCountedWhenDeleted(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, dialect, time.Hour)
			layer := []byte(strings.Repeat("a layer no tag keeps ", 100))
			d, raw := w.image("app", "", layer) // untagged
			var m oci.Manifest
			if err := json.Unmarshal(raw, &m); err != nil {
				t.Fatal(err)
			}
			var size int64 // of the blobs as stored: the config and the layer
			for _, b := range m.Blobs() {
				fi, err := w.store.Stat(ctx, storage.BlobPath(b.Digest))
				if err != nil {
					t.Fatal(err)
				}
				size += fi.Size
			}
			layerPath := storage.BlobPath(digest.FromBytes(layer))
			store := &lockedBlobs{Driver: w.store}
			store.locked.Store(true)
			rec := &passes{}
			w.c.store, w.c.opts.Metrics = store, rec
			w.c.now = func() time.Time { return time.Now().Add(2 * time.Hour) }

			// The manifest, its links and its blobs (the layer and the
			// config) are condemned; the store refuses to delete the bytes.
			rep, err := w.c.Pass(ctx, false)
			if err == nil {
				t.Fatal("a pass whose blob deletions were refused reported no error")
			}
			if rep.Collected.Manifests != 1 || rep.Collected.Blobs != 2 {
				t.Fatalf("collected %+v, want the manifest %s and its 2 blobs", rep.Collected, d)
			}
			if rep.Collected.Bytes != 0 || rec.reports[0].Collected.Bytes != 0 {
				t.Fatalf("a pass whose deletions the store refused reports %d deleted bytes (metrics told %d), want 0",
					rep.Collected.Bytes, rec.reports[0].Collected.Bytes)
			}
			if !w.exists(layerPath) {
				t.Fatal("the layer's bytes are gone although the store refused")
			}

			// The lock ends: the next pass deletes the pending bytes and
			// counts them; the one after counts nothing more.
			store.locked.Store(false)
			rep, err = w.c.Pass(ctx, false)
			if err != nil {
				t.Fatal(err)
			}
			if w.exists(layerPath) {
				t.Fatal("the layer's bytes are still stored")
			}
			if rep.Collected.Bytes != size || rec.reports[1].Collected.Bytes != size {
				t.Fatalf("the pass that deleted the bytes reports %d (metrics told %d), want the layer's and the config's %d",
					rep.Collected.Bytes, rec.reports[1].Collected.Bytes, size)
			}
			deleted := rep.Collected.Bytes
			if rep, err = w.c.Pass(ctx, false); err != nil || rep.Collected.Bytes != 0 {
				t.Fatalf("a pass with nothing left to delete reports %d bytes (%v), after %d deleted", rep.Collected.Bytes, err, deleted)
			}
		})
	}
}
