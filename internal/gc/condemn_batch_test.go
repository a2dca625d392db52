package gc

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/storage"
)

// queueWatch notes, before each condemnation, how many deletions of
// blobs' bytes are queued.
type queueWatch struct {
	Collection
	t      *testing.T
	queued int // the most seen
}

func (w *queueWatch) CondemnBlobs(ctx context.Context, ds []digest.Digest, cutoff time.Time) (int, error) {
	pending, err := w.PendingBlobDeletes(ctx, dryLimit)
	if err != nil {
		w.t.Fatal(err)
	}
	w.queued = max(w.queued, len(pending))
	return w.Collection.CondemnBlobs(ctx, ds, cutoff)
}

// TestCondemnedBytesDeletedBatchByBatch: a pass deletes the bytes of each
// batch of blobs it condemned before it condemns the next, so what it
// keeps of them (their sizes, for the report) is one batch's however many
// blobs it condemns (it kept every candidate's until all were condemned:
// hundreds of megabytes for millions of orphans). Every byte is deleted
// and counted once, as before.
func TestCondemnedBytesDeletedBatchByBatch(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, Options{Delay: time.Hour, UploadExpiry: 24 * time.Hour})
			const blobs = collectBatch + 1
			var size int64
			var ds []digest.Digest
			for i := range blobs {
				content := []byte(fmt.Sprintf("orphan %d %s", i, make([]byte, i%7)))
				d := digest.FromBytes(content)
				if err := e.store.PutContent(ctx, storage.BlobPath(d), content); err != nil {
					t.Fatal(err)
				}
				b := meta.Blob{Digest: d, Size: int64(len(content))}
				if _, err := e.db.Blobs().StoreBlob(ctx, "app", b, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
					t.Fatal(err)
				}
				if err := e.db.Blobs().UnlinkBlob(ctx, "app", d); err != nil {
					t.Fatal(err)
				}
				size += b.Size
				ds = append(ds, d)
			}
			w := &queueWatch{Collection: e.c.gc, t: t}
			e.c.gc = w
			e.c.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
			rep, err := e.c.Pass(ctx, false)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Collected.Blobs != blobs || rep.Collected.Bytes != size {
				t.Fatalf("condemned %d blobs and deleted %d bytes, want %d and %d", rep.Collected.Blobs, rep.Collected.Bytes, blobs, size)
			}
			if w.queued >= collectBatch {
				t.Fatalf("%d deletions were queued before a condemnation, want fewer than a batch (%d)", w.queued, collectBatch)
			}
			if pending, err := e.db.Collector().PendingBlobDeletes(ctx, 10); err != nil || len(pending) != 0 {
				t.Fatalf("deletions left queued: %v, %v", pending, err)
			}
			for _, d := range ds {
				if e.exists(storage.BlobPath(d)) {
					t.Fatalf("the bytes of %s are still stored", d)
				}
			}
		})
	}
}
