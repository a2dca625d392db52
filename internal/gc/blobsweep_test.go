package gc

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/storage"
)

// placed writes content at its blob address, as an early placement does,
// with no blob row, last modified at mtime.
func (e *env) placed(t *testing.T, content string, mtime time.Time) digest.Digest {
	t.Helper()
	d := digest.FromString(content)
	if err := e.store.PutContent(context.Background(), storage.BlobPath(d), []byte(content)); err != nil {
		t.Fatal(err)
	}
	if err := os.Chtimes(filepath.Join(e.root, filepath.FromSlash(storage.BlobPath(d))), mtime, mtime); err != nil {
		t.Fatal(err)
	}
	return d
}

// TestSweepUnrecordedBlobBytes: bytes at a blob's address that no blob
// row records (a crash between placing a new blob's bytes and its
// transaction) go once they are older than the upload expiry; recorded
// blobs, recent placements (a push about to record them) and files that
// are not a blob's stay. A dry run counts and removes nothing.
func TestSweepUnrecordedBlobBytes(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, dialect, time.Hour)
			w.c.opts.UploadExpiry = time.Hour
			old := time.Now().Add(-3 * time.Hour)
			orphan := w.placed(t, "crashed before its transaction", old)
			recent := w.placed(t, "placed a moment ago", time.Now())
			kept := w.blob("acme/app", []byte("pushed and recorded"))
			if err := os.Chtimes(filepath.Join(w.root, filepath.FromSlash(storage.BlobPath(kept))), old, old); err != nil {
				t.Fatal(err)
			}
			stray := "/blobs/sha256/" + orphan.Encoded()[:2] + "/not-a-digest"
			if err := w.store.PutContent(ctx, stray, []byte("x")); err != nil {
				t.Fatal(err)
			}

			dry, err := w.c.Pass(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			if dry.BlobLeftovers != 1 || dry.BlobLeftoverBytes != int64(len("crashed before its transaction")) || !w.exists(storage.BlobPath(orphan)) {
				t.Fatalf("dry run: %d unrecorded blobs, %d bytes, orphan there %v; want 1, 30, true",
					dry.BlobLeftovers, dry.BlobLeftoverBytes, w.exists(storage.BlobPath(orphan)))
			}
			rep, err := w.c.Pass(ctx, false)
			if err != nil {
				t.Fatal(err)
			}
			if rep.BlobLeftovers != 1 || w.exists(storage.BlobPath(orphan)) {
				t.Fatalf("pass: %d unrecorded blobs removed, orphan there %v; want 1, false", rep.BlobLeftovers, w.exists(storage.BlobPath(orphan)))
			}
			for name, p := range map[string]string{"recent placement": storage.BlobPath(recent), "recorded blob": storage.BlobPath(kept), "stray file": stray} {
				if !w.exists(p) {
					t.Errorf("%s %s was removed", name, p)
				}
			}
			// The recorded blob is still served whole.
			if st, body := w.do("GET", "/v2/acme/app/blobs/"+kept.String(), nil); st != 200 || string(body) != "pushed and recorded" {
				t.Fatalf("GET recorded blob: %d %q", st, body)
			}
		})
	}
}

// TestUnrecordedBytesRemovedUnderTheLock: the removal re-checks under the
// digest's lock, so bytes recorded after the unlocked read (a push that
// placed them early and then committed) stay.
func TestUnrecordedBytesRemovedUnderTheLock(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			w := newWorld(t, dialect, time.Hour)
			d := w.blob("acme/app", []byte("recorded between the read and the removal"))
			n, err := w.db.Collector().RemoveUnrecordedBlobs(ctx, []digest.Digest{d}, func(ctx context.Context, d digest.Digest) error {
				return storage.DeleteBlob(ctx, w.store, d)
			})
			if err != nil || n != 0 || !w.exists(storage.BlobPath(d)) {
				t.Fatalf("removed %d (err %v); bytes there %v: a recorded blob's bytes must stay", n, err, w.exists(storage.BlobPath(d)))
			}
		})
	}
}

// TestBlobSweepCoversTheStoreOverItsCycle: with an interval, each pass
// lists only its share of /blobs, chosen by the clock (so that a process
// restarted often still covers it all), and the whole store once per
// cycle.
func TestBlobSweepCoversTheStoreOverItsCycle(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "sqlite", Options{UploadExpiry: time.Hour, Interval: blobSweepCycle / 128})
	old := time.Now().Add(-72 * time.Hour)
	clock := time.Now().Truncate(blobSweepCycle) // the cycle's start: shard 00 first
	e.c.now = func() time.Time { return clock }
	e.recorded(t, "pushed and recorded", old) // the database is this storage's
	byShard := map[string]digest.Digest{}
	for i := 0; len(byShard) < 2 || byShard["00"] == "" || byShard["ff"] == ""; i++ {
		d := digest.FromString(fmt.Sprint(i))
		if sh := d.Encoded()[:2]; sh == "00" || sh == "ff" {
			if byShard[sh] == "" {
				byShard[sh] = e.placed(t, fmt.Sprint(i), old)
			}
		}
	}
	rep, err := e.c.Pass(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.BlobLeftovers != 1 || e.exists(storage.BlobPath(byShard["00"])) || !e.exists(storage.BlobPath(byShard["ff"])) {
		t.Fatalf("first pass removed %d; shard 00 there %v, ff there %v: want only 00's (two shards per pass)",
			rep.BlobLeftovers, e.exists(storage.BlobPath(byShard["00"])), e.exists(storage.BlobPath(byShard["ff"])))
	}
	// A new process (a restart) a little later goes on from the clock.
	e.c = New(Stores{Uploads: e.db.Uploads(), Collector: e.db.Collector(), Retention: e.db.Collector(), Sweep: e.db.Collector()}, e.store, e.c.opts)
	for range 127 {
		clock = clock.Add(blobSweepCycle / 128)
		e.c.now = func() time.Time { return clock }
		if _, err := e.c.Pass(ctx, false); err != nil {
			t.Fatal(err)
		}
	}
	if e.exists(storage.BlobPath(byShard["ff"])) {
		t.Fatal("after a whole cycle of passes shard ff's unrecorded bytes are still there")
	}
}

// TestLateBlobSweepSkipsNoShard: a pass that comes late (a missed tick)
// goes on from where the last one stopped rather than from where the
// clock points, so no directory is skipped.
func TestLateBlobSweepSkipsNoShard(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "sqlite", Options{UploadExpiry: time.Hour, Interval: blobSweepCycle / 128})
	old := time.Now().Add(-72 * time.Hour)
	clock := time.Now().Truncate(blobSweepCycle) // shards 00 and 01 first
	e.c.now = func() time.Time { return clock }
	e.recorded(t, "pushed and recorded", old) // the database is this storage's
	var in02, in03 digest.Digest
	for i := 0; in02 == "" || in03 == ""; i++ {
		d := digest.FromString(fmt.Sprint(i))
		switch d.Encoded()[:2] {
		case "02":
			if in02 == "" {
				in02 = e.placed(t, fmt.Sprint(i), old)
			}
		case "03":
			if in03 == "" {
				in03 = e.placed(t, fmt.Sprint(i), old)
			}
		}
	}
	if _, err := e.c.Pass(ctx, false); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(2 * blobSweepCycle / 128) // a tick missed: the clock points at 04
	if _, err := e.c.Pass(ctx, false); err != nil {
		t.Fatal(err)
	}
	if e.exists(storage.BlobPath(in02)) || e.exists(storage.BlobPath(in03)) {
		t.Fatal("a late pass skipped shards 02 and 03")
	}
}
