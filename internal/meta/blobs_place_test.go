package meta_test

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
)

// placeEnv is a store and a filesystem driver, for the placement protocol
// of StoreBlob.
type placeEnv struct {
	t       *testing.T
	ctx     context.Context
	db      *meta.DB
	store   storage.Driver
	content []byte
	d       digest.Digest
	staged  int
}

func forPlacement(t *testing.T, f func(t *testing.T, e *placeEnv)) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			store, err := fs.New(t.TempDir(), fs.Options{Fsync: true})
			if err != nil {
				t.Fatal(err)
			}
			content := []byte("layer bytes for " + t.Name())
			f(t, &placeEnv{t: t, ctx: context.Background(), db: metatest.Open(t, dialect), store: store,
				content: content, d: digest.FromBytes(content)})
		})
	}
}

// stage writes the content at a new upload path, as an upload leaves it.
func (e *placeEnv) stage() string {
	e.t.Helper()
	e.staged++
	p := storage.UploadPath("ab" + string(rune('a'+e.staged)) + "-upload")
	if err := e.store.PutContent(e.ctx, p, e.content); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// hooked runs then after the early placement, before StoreBlob's
// transaction: what another request or the collector does in between.
type hooked struct {
	storage.Placement
	then func()
}

func (h hooked) PlaceEarly(ctx context.Context) (bool, error) {
	ok, err := h.Placement.PlaceEarly(ctx)
	if ok && err == nil {
		h.then()
	}
	return ok, err
}

func (e *placeEnv) storeBlob(ctx context.Context, repo string, b meta.BlobBytes) error {
	_, err := e.db.Blobs().StoreBlob(ctx, repo, meta.Blob{Digest: e.d, Size: int64(len(e.content))}, meta.UploadClaim{}, meta.Writer{}, b)
	return err
}

// wantBytes checks what the content address holds.
func (e *placeEnv) wantBytes(there bool) {
	e.t.Helper()
	got, err := e.store.GetContent(e.ctx, storage.BlobPath(e.d))
	switch {
	case there && (err != nil || !bytes.Equal(got, e.content)):
		e.t.Fatalf("bytes at the address: %q, %v; want the content", got, err)
	case !there && !errors.Is(err, storage.ErrNotFound):
		e.t.Fatalf("bytes at the address: %q, %v; want none", got, err)
	}
}

func (e *placeEnv) wantRow(there bool) {
	e.t.Helper()
	_, err := e.db.Blobs().StoredBlob(e.ctx, e.d)
	if there != (err == nil) {
		e.t.Fatalf("blob row: %v, want recorded = %v", err, there)
	}
}

// condemn has a collection condemn the blob, stored and linked nowhere:
// its row is gone and the deletion of its bytes queued.
func (e *placeEnv) condemn() {
	e.t.Helper()
	if err := e.storeBlob(e.ctx, "", storage.Staged(e.store, e.stage(), e.d)); err != nil {
		e.t.Fatal(err)
	}
	if n, err := e.db.Collector().CondemnBlobs(e.ctx, []digest.Digest{e.d}, time.Now().Add(time.Second)); n != 1 || err != nil {
		e.t.Fatalf("condemn = %d, %v", n, err)
	}
}

func (e *placeEnv) finishDeletes() int {
	e.t.Helper()
	n, err := e.db.Collector().FinishBlobDeletes(e.ctx, []digest.Digest{e.d}, func(ctx context.Context, d digest.Digest) error {
		return storage.DeleteBlob(ctx, e.store, d)
	})
	if err != nil {
		e.t.Fatal(err)
	}
	return n
}

// TestStoreBlobEarlyPlacement: a new blob's bytes are at their address
// before its transaction, and the staged copy is still there for a second
// placement; one already stored is not placed again.
func TestStoreBlobEarlyPlacement(t *testing.T) {
	forPlacement(t, func(t *testing.T, e *placeEnv) {
		staged := e.stage()
		early := false
		if err := e.storeBlob(e.ctx, "org/app", hooked{storage.Staged(e.store, staged, e.d), func() { early = true; e.wantRow(false); e.wantBytes(true) }}); err != nil {
			t.Fatal(err)
		}
		if !early {
			t.Fatal("a new blob on a driver that links was not placed early")
		}
		e.wantRow(true)
		e.wantBytes(true)
		if _, err := e.store.Stat(e.ctx, staged); err != nil {
			t.Fatalf("the staged copy is gone: %v", err)
		}
		again := false
		if err := e.storeBlob(e.ctx, "org/other", hooked{storage.Staged(e.store, e.stage(), e.d), func() { again = true }}); err != nil {
			t.Fatal(err)
		}
		if again {
			t.Fatal("a stored blob was placed again")
		}
		if rs, err := e.db.Blobs().RepositoriesWithBlob(e.ctx, e.d, 10); err != nil || len(rs) != 2 {
			t.Fatalf("links = %v, %v", rs, err)
		}
	})
}

// TestStoreBlobEarlyPlacementRacesCollection: a blob condemned by a
// collection is uploaded again, and the collection deletes the bytes after
// the upload placed them early and before its transaction: the
// transaction finds them gone, places them again, and the blob is whole.
// Uploaded again while the deletion is still queued, the bytes placed
// early stay and the collection no longer deletes them.
func TestStoreBlobEarlyPlacementRacesCollection(t *testing.T) {
	forPlacement(t, func(t *testing.T, e *placeEnv) {
		e.condemn()
		deleted := 0
		if err := e.storeBlob(e.ctx, "org/app", hooked{storage.Staged(e.store, e.stage(), e.d), func() { deleted = e.finishDeletes() }}); err != nil {
			t.Fatal(err)
		}
		if deleted != 1 {
			t.Fatalf("the collection deleted %d blobs in between, want 1", deleted)
		}
		e.wantRow(true)
		e.wantBytes(true)
	})
	forPlacement(t, func(t *testing.T, e *placeEnv) {
		e.condemn()
		if err := e.storeBlob(e.ctx, "org/app", storage.Staged(e.store, e.stage(), e.d)); err != nil {
			t.Fatal(err)
		}
		if n := e.finishDeletes(); n != 0 {
			t.Fatalf("the collection deleted the bytes of a blob uploaded again (%d)", n)
		}
		e.wantRow(true)
		e.wantBytes(true)
	})
}

// TestStoreBlobEarlyPlacementFails: a store whose transaction fails after
// its early placement deletes the bytes again, unless another store
// recorded the blob meanwhile; then they stay, with the other's row.
func TestStoreBlobEarlyPlacementFails(t *testing.T) {
	forPlacement(t, func(t *testing.T, e *placeEnv) {
		ctx, cancel := context.WithCancel(e.ctx)
		defer cancel()
		if err := e.storeBlob(ctx, "org/app", hooked{storage.Staged(e.store, e.stage(), e.d), cancel}); !errors.Is(err, context.Canceled) {
			t.Fatalf("store under a cancelled context: %v", err)
		}
		e.wantRow(false)
		e.wantBytes(false)
	})
	forPlacement(t, func(t *testing.T, e *placeEnv) {
		ctx, cancel := context.WithCancel(e.ctx)
		defer cancel()
		other := func() {
			if err := e.storeBlob(e.ctx, "org/other", storage.Staged(e.store, e.stage(), e.d)); err != nil {
				t.Fatal(err)
			}
			cancel()
		}
		if err := e.storeBlob(ctx, "org/app", hooked{storage.Staged(e.store, e.stage(), e.d), other}); !errors.Is(err, context.Canceled) {
			t.Fatalf("store under a cancelled context: %v", err)
		}
		e.wantRow(true)
		e.wantBytes(true)
	})
}

// TestStoreBlobInRollsBack: a blob recorded in a scan's transaction
// (StoreBlobIn, from SaveScan's also) commits with the scan, and a
// transaction that fails after it records neither; UnplaceBlob then takes
// back the bytes placed early, which a stored blob keeps.
func TestStoreBlobInRollsBack(t *testing.T) {
	forPlacement(t, func(t *testing.T, e *placeEnv) {
		blob := meta.Blob{Digest: e.d, Size: int64(len(e.content))}
		bytes := storage.Content(e.store, e.content, e.d)
		scanned := digest.FromString("image " + t.Name()).String()
		result := meta.ScanResult{Digest: scanned, Status: meta.ScanScanned, IndexerVersion: 1}
		failed := errors.New("a later write of the transaction failed")

		early, err := bytes.PlaceEarly(e.ctx)
		if err != nil || !early {
			t.Fatalf("place early: %v %v", early, err)
		}
		err = e.db.Scans().SaveScan(e.ctx, result, func(ctx context.Context, tx meta.Tx) error {
			if placed, err := e.db.Blobs().StoreBlobIn(ctx, tx, blob, bytes, early); err != nil || !placed {
				t.Errorf("StoreBlobIn: placed %v, %v", placed, err)
			}
			return failed
		})
		if !errors.Is(err, failed) {
			t.Fatalf("SaveScan: %v, want the failure of also", err)
		}
		if _, err := e.db.Scans().ManifestScan(e.ctx, scanned); !errors.Is(err, meta.ErrNotFound) {
			t.Fatalf("scan of the failed transaction: %v, want not found", err)
		}
		if _, err := e.db.Blobs().StoredBlob(e.ctx, e.d); !errors.Is(err, meta.ErrNotFound) {
			t.Fatalf("blob of the failed transaction: %v, want not found", err)
		}
		e.wantBytes(true) // placed early, not recorded
		if err := e.db.Blobs().UnplaceBlob(e.ctx, e.d, bytes); err != nil {
			t.Fatal(err)
		}
		e.wantBytes(false)

		// Again, committing: the scan and the blob together.
		if early, err = bytes.PlaceEarly(e.ctx); err != nil {
			t.Fatal(err)
		}
		err = e.db.Scans().SaveScan(e.ctx, result, func(ctx context.Context, tx meta.Tx) error {
			_, err := e.db.Blobs().StoreBlobIn(ctx, tx, blob, bytes, early)
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
		if st, err := e.db.Scans().ManifestScan(e.ctx, scanned); err != nil || st.Status != meta.ScanScanned {
			t.Fatalf("scan: %+v %v", st, err)
		}
		if _, err := e.db.Blobs().StoredBlob(e.ctx, e.d); err != nil {
			t.Fatalf("blob: %v", err)
		}
		// A recorded blob's bytes stay.
		if err := e.db.Blobs().UnplaceBlob(e.ctx, e.d, bytes); err != nil {
			t.Fatal(err)
		}
		e.wantBytes(true)
	})
}

// TestCondemnBlobKeepsALinkCommittedWhileItWaited (PostgreSQL): a link
// made under the blob row's share lock while the collector's delete waits
// for that row is not in the delete's snapshot, and its foreign key
// refused the delete: the whole batch failed (23503). The blob is kept,
// and the rest of the batch is condemned.
func TestCondemnBlobKeepsALinkCommittedWhileItWaited(t *testing.T) {
	ctx := context.Background()
	dsn := metatest.PostgresDSN(t)
	db, err := meta.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	linked, other := digest.FromString("linked meanwhile"), digest.FromString("orphan")
	for _, d := range []digest.Digest{linked, other} {
		if err := db.Exec(ctx, "INSERT INTO blobs (digest, size, created_at) VALUES (?, 1, 1)", d.String()); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Exec(ctx, "INSERT INTO repositories (name, created_at) VALUES ('acme/app', 1)"); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	tx, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	if _, err := tx.ExecContext(ctx, "SELECT digest FROM blobs WHERE digest = $1 FOR SHARE", linked.String()); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, "INSERT INTO repository_blobs (repository_id, digest, created_at) SELECT id, $1, 1 FROM repositories WHERE name = 'acme/app'", linked.String()); err != nil {
		t.Fatal(err)
	}
	type result struct {
		n   int
		err error
	}
	done := make(chan result, 1)
	go func() {
		n, err := db.Collector().CondemnBlobs(ctx, []digest.Digest{linked, other}, time.Now())
		done <- result{n, err}
	}()
	time.Sleep(500 * time.Millisecond) // the delete now waits for the row (it would find the link anyway if it had not started)
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil || r.n != 1 {
		t.Fatalf("condemn: %d, %v; want the orphan condemned and the linked blob kept", r.n, r.err)
	}
	if _, err := db.Blobs().StoredBlob(ctx, linked); err != nil {
		t.Fatalf("the linked blob's row: %v", err)
	}
}

// TestFinishBlobDeletesGoesOnPastAFailure: a blob whose bytes cannot be
// deleted stays queued behind the others, and the rest of its batch is
// finished; it used to fail the whole batch, which the next pass took
// again, first, for ever.
func TestFinishBlobDeletesGoesOnPastAFailure(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			var ds []digest.Digest
			for _, s := range []string{"a", "b", "c"} {
				d := digest.FromString(s)
				ds = append(ds, d)
				if err := db.Exec(ctx, "INSERT INTO blobs (digest, size, created_at) VALUES (?, 1, 1)", d.String()); err != nil {
					t.Fatal(err)
				}
				if n, err := db.Collector().CondemnBlobs(ctx, []digest.Digest{d}, time.Now()); n != 1 || err != nil {
					t.Fatalf("condemn: %d %v", n, err)
				}
				time.Sleep(2 * time.Millisecond) // queued in this order
			}
			stuck := ds[0]
			var removed []digest.Digest
			n, err := db.Collector().FinishBlobDeletes(ctx, ds[:2], func(_ context.Context, d digest.Digest) error {
				if d == stuck {
					return errors.New("permission denied")
				}
				removed = append(removed, d)
				return nil
			})
			if n != 1 || err == nil || !strings.Contains(err.Error(), stuck.String()) || len(removed) != 1 || removed[0] != ds[1] {
				t.Fatalf("finish: %d %v, removed %v", n, err, removed)
			}
			pending, err := db.Collector().PendingBlobDeletes(ctx, 10)
			if err != nil || len(pending) != 2 || pending[0] != ds[2] || pending[1] != stuck {
				t.Fatalf("pending %v (%v), want %s then the failed %s", pending, err, ds[2], stuck)
			}
		})
	}
}

// TestStoreBlobPutsBackMissingBytes: a recorded blob whose bytes are gone
// from storage (deleted by hand, a bucket rule, storage restored from an
// older copy) is whole again after a push of the same bytes; before, the
// push found the row and placed nothing, so no push could repair it.
func TestStoreBlobPutsBackMissingBytes(t *testing.T) {
	forPlacement(t, func(t *testing.T, e *placeEnv) {
		if err := e.storeBlob(e.ctx, "org/app", storage.Staged(e.store, e.stage(), e.d)); err != nil {
			t.Fatal(err)
		}
		if err := storage.DeleteBlob(e.ctx, e.store, e.d); err != nil {
			t.Fatal(err)
		}
		e.wantBytes(false)
		if err := e.storeBlob(e.ctx, "org/other", storage.Staged(e.store, e.stage(), e.d)); err != nil {
			t.Fatal(err)
		}
		e.wantRow(true)
		e.wantBytes(true)
	})
}
