package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestLaxTxSQLite checks which commits of an SQLite store with SyncFull
// wait for a flush of the write-ahead log: a durable transaction and a
// statement committed on its own do, a lax transaction, a transaction
// under LaxCommits, a failed or cancelled one and a read on the writer do
// not. Every connection
// runs at synchronous=NORMAL: the flush is the store's, after the commit.
func TestLaxTxSQLite(t *testing.T) {
	dir := t.TempDir()
	db, err := open(filepath.Join(dir, "meta.db"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	var flushes atomic.Int64
	var flushed []string
	var mu sync.Mutex
	db.write.log.sync = func(path string) error {
		flushes.Add(1)
		mu.Lock()
		flushed = append(flushed, path)
		mu.Unlock()
		return syncFile(path)
	}
	step := func(what string, want int64, fn func() error) {
		t.Helper()
		before := flushes.Load()
		if err := fn(); err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		if got := flushes.Load() - before; got != want {
			t.Errorf("%s: %d flushes of the log, want %d", what, got, want)
		}
	}
	step("a statement committed on its own", 1, func() error {
		_, err := db.write.ExecContext(ctx, "CREATE TABLE t (k INTEGER PRIMARY KEY)")
		return err
	})
	level := func(q interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}) int {
		t.Helper()
		var n int
		if err := q.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	const normal = 1
	var inside int
	step("a lax transaction", 0, func() error {
		return db.laxTx(ctx, func(tx *sql.Tx) error {
			inside = level(tx)
			_, err := tx.ExecContext(ctx, "INSERT INTO t (k) VALUES (1)")
			return err
		})
	})
	if inside != normal || level(db.read) != normal {
		t.Errorf("synchronous=%d in the writer, %d in a reader, want NORMAL (%d)", inside, level(db.read), normal)
	}
	step("a durable transaction", 1, func() error {
		return db.tx(ctx, func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO t (k) VALUES (2)")
			return err
		})
	})
	step("a transaction under LaxCommits", 0, func() error {
		return db.tx(LaxCommits(ctx), func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO t (k) VALUES (3)")
			return err
		})
	})
	var k int64
	step("INSERT ... RETURNING committed on its own", 1, func() error {
		return db.write.QueryRowContext(ctx, "INSERT INTO t (k) VALUES (4) RETURNING k").Scan(&k)
	})
	if k != 4 {
		t.Errorf("RETURNING gave %d, want 4", k)
	}
	step("a read on the writer", 0, func() error {
		return db.write.ReadRowContext(ctx, "SELECT k FROM t WHERE k = 4").Scan(&k)
	})

	boom := errors.New("boom")
	step("a failing durable transaction", 0, func() error {
		err := db.tx(ctx, func(tx *sql.Tx) error {
			if _, err := tx.ExecContext(ctx, "INSERT INTO t (k) VALUES (5)"); err != nil {
				return err
			}
			return boom
		})
		if !errors.Is(err, boom) {
			return fmt.Errorf("got %v, want boom", err)
		}
		return nil
	})
	cctx, cancel := context.WithCancel(ctx)
	step("a cancelled durable transaction", 0, func() error {
		err := db.tx(cctx, func(tx *sql.Tx) error {
			cancel()
			_, err := tx.ExecContext(cctx, "INSERT INTO t (k) VALUES (6)")
			return err
		})
		if err == nil {
			return errors.New("it committed")
		}
		return nil
	})
	var n int
	if err := db.read.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 4 {
		t.Errorf("rows = %d (%v), want the 4 committed ones", n, err)
	}
	for _, p := range flushed {
		if p != filepath.Join(dir, "meta.db-wal") {
			t.Errorf("flushed %s, want the database's log", p)
		}
	}

	// Without SyncFull nothing waits for a flush.
	plain, err := open(filepath.Join(t.TempDir(), "plain.db"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if plain.write.log != nil {
		t.Error("a store without SyncFull flushes its log")
	}
	if err := plain.tx(ctx, func(tx *sql.Tx) error { inside = level(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside != normal {
		t.Errorf("store without SyncFull: synchronous=%d, want NORMAL", inside)
	}
}

// TestLogFlushGroups checks the log's group commit: every caller returns
// only after a flush that began after its call has finished, and callers
// that arrive while a flush runs share the next one.
func TestLogFlushGroups(t *testing.T) {
	f := newLogFlusher("unused")
	type span struct{ start, end time.Time }
	var mu sync.Mutex
	var spans []span
	var running atomic.Int32
	f.sync = func(string) error {
		if running.Add(1) != 1 {
			t.Error("two flushes ran at once")
		}
		s := span{start: time.Now()}
		time.Sleep(2 * time.Millisecond)
		s.end = time.Now()
		running.Add(-1)
		mu.Lock()
		spans = append(spans, s)
		mu.Unlock()
		return nil
	}
	const callers, rounds = 20, 10
	type call struct{ called, returned time.Time }
	calls := make(chan call, callers*rounds)
	var wg sync.WaitGroup
	for range callers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range rounds {
				c := call{called: time.Now()}
				if err := f.flush(); err != nil {
					t.Error(err)
				}
				c.returned = time.Now()
				calls <- c
			}
		}()
	}
	wg.Wait()
	close(calls)
	for c := range calls {
		covered := false
		for _, s := range spans {
			if !s.start.Before(c.called) && !s.end.After(c.returned) {
				covered = true
				break
			}
		}
		if !covered {
			t.Fatalf("a flush called at %v returned at %v with no flush begun and finished in between", c.called, c.returned)
		}
	}
	// 200 flush calls, 20 at a time: one flush serves many of them (about
	// 20 flushes here; 200 would mean none is shared; half that leaves room
	// for a starved scheduler).
	if len(spans) > callers*rounds/2 {
		t.Errorf("%d flushes for %d calls by %d callers at once: the calls are not grouped", len(spans), callers*rounds, callers)
	}
	t.Logf("%d flushes for %d calls", len(spans), callers*rounds)
}

// TestLogFlushFails checks that a failed flush of the log fails the
// durable commit that waited for it, and every later one (a later fsync
// that succeeds proves nothing), while lax commits go on.
func TestLogFlushFails(t *testing.T) {
	db, err := open(filepath.Join(t.TempDir(), "meta.db"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.write.ExecContext(ctx, "CREATE TABLE t (k INTEGER PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	eio := errors.New("input/output error")
	fail := true
	db.write.log.sync = func(path string) error {
		if fail {
			fail = false
			return eio
		}
		return syncFile(path)
	}
	insert := func(k int) func(tx *sql.Tx) error {
		return func(tx *sql.Tx) error {
			_, err := tx.ExecContext(ctx, "INSERT INTO t (k) VALUES (?)", k)
			return err
		}
	}
	if err := db.tx(ctx, insert(1)); !errors.Is(err, eio) || !strings.Contains(err.Error(), "power cut") {
		t.Fatalf("durable commit whose flush failed: %v, want the flush's error and what it means", err)
	}
	if err := db.tx(ctx, insert(2)); !errors.Is(err, eio) {
		t.Errorf("the next durable commit: %v, want the flush's error again", err)
	}
	if _, err := db.write.ExecContext(ctx, "INSERT INTO t (k) VALUES (3)"); !errors.Is(err, eio) {
		t.Errorf("a statement committed on its own after the failure: %v, want the flush's error", err)
	}
	if err := db.laxTx(ctx, insert(4)); err != nil {
		t.Errorf("lax commit after the failure: %v", err)
	}
	// Health and readiness say so: the store cannot make a commit
	// durable until the process restarts.
	if err := (&DB{db.core}).Ping(ctx); !errors.Is(err, eio) {
		t.Errorf("ping after a failed flush: %v, want the flush's error", err)
	}
	if err := (&DB{db.core}).CheckSchema(ctx); !errors.Is(err, eio) {
		t.Errorf("readiness after a failed flush: %v, want the flush's error", err)
	}
}

// TestLaxTxPostgres checks that a lax transaction runs with
// synchronous_commit off and that the setting does not outlive it.
func TestLaxTxPostgres(t *testing.T) {
	dsn := os.Getenv("BERTH_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("BERTH_TEST_POSTGRES_DSN not set")
	}
	db, err := open(dsn, false)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	var server string
	if err := db.read.QueryRowContext(ctx, "SHOW synchronous_commit").Scan(&server); err != nil {
		t.Fatal(err)
	}
	if server == "off" {
		t.Skip("the server runs with synchronous_commit off")
	}
	show := func(tx *sql.Tx, into *string) error {
		return tx.QueryRowContext(ctx, "SHOW synchronous_commit").Scan(into)
	}
	var lax, durable string
	if err := db.laxTx(ctx, func(tx *sql.Tx) error { return show(tx, &lax) }); err != nil {
		t.Fatal(err)
	}
	if err := db.tx(ctx, func(tx *sql.Tx) error { return show(tx, &durable) }); err != nil {
		t.Fatal(err)
	}
	if lax != "off" || durable != server {
		t.Errorf("synchronous_commit: %q in a lax transaction, %q in a durable one; want off and %q", lax, durable, server)
	}
}

// TestLogFlushAfterTheLogIsRemade checks that the flush follows the log
// SQLite removes when its last connection closes (after checkpointing it
// into the database file) and makes anew with the next: a durable commit
// then flushes the new log, and one that finds no log at all succeeds,
// since what the removed log held is in the flushed database file.
func TestLogFlushAfterTheLogIsRemade(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	db, err := open(path, true)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	var flushed []error
	db.write.log.sync = func(p string) error {
		err := syncFile(p)
		flushed = append(flushed, err)
		return err
	}
	if _, err := db.write.ExecContext(ctx, "CREATE TABLE t (k INTEGER PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	// Close every connection: the last one checkpoints and removes the log.
	db.write.db.SetMaxIdleConns(0)
	db.read.SetMaxIdleConns(0)
	if _, err := os.Stat(path + "-wal"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the log is still there with no connection open: %v", err)
	}
	if err := db.write.flush(); err != nil {
		t.Fatalf("flush with the log removed: %v", err)
	}
	db.write.db.SetMaxIdleConns(1)
	if err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "INSERT INTO t (k) VALUES (1)")
		return err
	}); err != nil {
		t.Fatalf("durable commit into a new log: %v", err)
	}
	if _, err := os.Stat(path + "-wal"); err != nil {
		t.Fatalf("no new log after a commit: %v", err)
	}
	if len(flushed) < 3 || flushed[len(flushed)-1] != nil {
		t.Errorf("flushes: %v, want the last, of the new log, to succeed", flushed)
	}
	var n int
	if err := db.read.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
		t.Errorf("rows = %d (%v), want 1", n, err)
	}
}

// TestSyncFullNeedsWAL checks that a store whose durable commits wait for
// the log's flush refuses a database that is not in WAL mode, where that
// flush would make nothing durable.
func TestSyncFullNeedsWAL(t *testing.T) {
	path := filepath.Join(t.TempDir(), "meta.db")
	plain, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(DELETE)")
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	db := &core{write: writer{db: plain, log: newLogFlusher(path)}, dialect: sqlite}
	err = db.checkJournal(context.Background())
	if err == nil || !strings.Contains(err.Error(), `"delete"`) || !strings.Contains(err.Error(), "WAL") {
		t.Fatalf("a store in journal mode DELETE: %v, want a refusal naming the mode", err)
	}
	db.write.db = func() *sql.DB {
		w, err := open(filepath.Join(t.TempDir(), "wal.db"), true)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
		return w.write.db
	}()
	if err := db.checkJournal(context.Background()); err != nil {
		t.Fatalf("a store in WAL mode: %v", err)
	}
}

// TestLogFlushFollowsASymlinkedDatabase checks that a database opened
// through a symbolic link (database.url naming a link to a file on
// another disk) has its durable commits flush the log SQLite writes, next
// to the file the link names: before, the flush looked for the log next
// to the link, found none, and took that for a checkpointed log, so no
// commit was ever flushed.
func TestLogFlushFollowsASymlinkedDatabase(t *testing.T) {
	dir := t.TempDir()
	real := filepath.Join(dir, "disk", "meta.db")
	if err := os.MkdirAll(filepath.Dir(real), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(real, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "meta.db")
	if err := os.Symlink(real, link); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	db, err := Open(ctx, link, SyncFull())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var flushed []error
	db.write.log.sync = func(p string) error {
		_, err := os.Stat(p)
		flushed = append(flushed, err)
		return syncFile(p)
	}
	if err := db.tx(ctx, func(tx *sql.Tx) error {
		_, err := tx.ExecContext(ctx, "CREATE TABLE t (k INTEGER PRIMARY KEY)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(real + "-wal"); err != nil {
		t.Fatalf("no log next to the linked file: %v", err)
	}
	if len(flushed) == 0 || flushed[len(flushed)-1] != nil {
		t.Errorf("flushes found the log: %v, want the last to find it", flushed)
	}
}
