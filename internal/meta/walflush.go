package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync"
	"sync/atomic"
)

// logFlusher makes SQLite's write-ahead log durable for the commits of a
// store opened with SyncFull, with one flush for every commit made while
// the previous flush ran (group commit).
//
// Every connection runs at synchronous=NORMAL, so a commit writes its
// frames to the log and returns without waiting for the disk, and the
// writer connection goes to the next transaction at once. A durable commit
// then waits in flush for an fsync of the log that began after it
// returned; that fsync covers the commit, and every commit before it, lax
// ones included: the log is one file written in commit order. At
// synchronous=FULL SQLite flushed the log inside the commit, holding the
// one writer for the whole fsync (about 70 % of a durable commit's hold
// under a push load); now the writer runs the next transactions while the
// disk flushes, and the commits that arrive meanwhile share the next
// flush.
//
// A checkpoint needs nothing from here: at NORMAL, SQLite flushes the log
// before it copies pages into the database file and the file after it, so
// a commit a checkpoint took is durable in the file even if the log is
// rewritten from its start before this flush runs.
//
// What readers see: a commit is visible to other transactions from the
// moment it returns, one flush before its caller is told it is durable.
// Whatever a writer does on the strength of what it read commits later in
// the same log, so a durable write made after seeing another commit makes
// that commit durable too; only a power cut within that window can lose a
// commit someone read, never one a caller was told is stored.
//
// A failed fsync is not retried: Linux reports a writeback error once and
// may then drop the pages, so a later fsync that succeeds proves nothing.
// The error sticks, and every later durable commit fails with it until
// the process restarts, as PostgreSQL stops on one (its "fsyncgate").
type logFlusher struct {
	path string                  // the -wal file
	sync func(path string) error // syncFile; tests count and fail flushes

	mu      sync.Mutex
	cond    sync.Cond
	started uint64 // flushes begun
	done    uint64 // the last flush that finished
	running bool
	err     error

	// flushes counts the fsyncs run, waits the commits that waited for
	// one (LogFlushes).
	flushes, waits atomic.Int64
}

func newLogFlusher(dbPath string) *logFlusher {
	f := &logFlusher{path: dbPath + "-wal", sync: syncFile}
	f.cond.L = &f.mu
	return f
}

// flush returns once a flush of the log that began after it was called
// has finished: everything committed before the call is then on disk.
// It runs the flush itself if none is running, and otherwise waits for
// the one running to finish and for the next, which one of the waiters
// runs for all of them.
func (f *logFlusher) flush() error {
	f.waits.Add(1)
	f.mu.Lock()
	defer f.mu.Unlock()
	want := f.started + 1 // the first flush that may begin from now
	for f.done < want && f.err == nil {
		if f.running {
			f.cond.Wait()
			continue
		}
		f.running = true
		f.started++
		n := f.started
		f.mu.Unlock()
		f.flushes.Add(1)
		err := f.sync(f.path)
		f.mu.Lock()
		f.running = false
		f.done = n
		if err != nil {
			f.err = fmt.Errorf("flush the database's write-ahead log: %w", err)
		}
		f.cond.Broadcast()
	}
	return f.err
}

// syncFile flushes a file's data to disk. A log that is gone was
// checkpointed into the database file and removed, which SQLite does when
// its last connection closes (the writer's, say, after an error, while no
// reader is open): at synchronous=NORMAL it flushes the database file
// after that checkpoint, so what the log held is durable, and there is
// nothing left to flush. (Open refuses a store with SyncFull that is not
// in WAL mode: checkJournal.)
func syncFile(path string) error {
	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return err
	}
	return errors.Join(file.Sync(), file.Close())
}

// writer is the pool that writes (on SQLite, its one connection). Its
// statements outside a transaction commit on their own, durably, as the
// transactions of core.tx do: after each one, on an SQLite store with
// SyncFull, it waits for the log's flush. It wraps the pool rather than
// embeds it, so that no statement reaches the pool without a flush
// unless it says it reads (ReadRowContext, ReadContext).
type writer struct {
	db  *sql.DB
	log *logFlusher // nil: nothing to flush (PostgreSQL, or SQLite without SyncFull)
}

// BeginTx begins a transaction on the pool; core.tx1 flushes its commit.
func (w writer) BeginTx(ctx context.Context, opts *sql.TxOptions) (*sql.Tx, error) {
	return w.db.BeginTx(ctx, opts)
}

// Close closes the pool.
func (w writer) Close() error { return w.db.Close() }

// Stats reports the pool's statistics.
func (w writer) Stats() sql.DBStats { return w.db.Stats() }

// failed returns the error of a flush of the log that failed, which every
// durable commit since has failed with, or nil.
func (w writer) failed() error {
	if w.log == nil {
		return nil
	}
	w.log.mu.Lock()
	defer w.log.mu.Unlock()
	return w.log.err
}

// flush waits, if the store flushes its log, until what was committed so
// far is on disk.
func (w writer) flush() error {
	if w.log == nil {
		return nil
	}
	return w.log.flush()
}

// ExecContext runs a statement that commits on its own, and flushes it.
func (w writer) ExecContext(ctx context.Context, query string, args ...any) (sql.Result, error) {
	res, err := w.db.ExecContext(ctx, query, args...)
	if err != nil {
		return nil, err
	}
	if err := w.flush(); err != nil {
		return nil, err
	}
	return res, nil
}

// QueryRowContext runs a statement that returns a row and commits on its
// own (INSERT ... RETURNING); Scan flushes it. Reads use ReadRowContext.
func (w writer) QueryRowContext(ctx context.Context, query string, args ...any) flushedRow {
	return flushedRow{row: w.db.QueryRowContext(ctx, query, args...), w: w}
}

// ReadRowContext runs a read on the writer pool (it sees the latest
// commit), which waits for no flush: it commits nothing.
func (w writer) ReadRowContext(ctx context.Context, query string, args ...any) *sql.Row {
	return w.db.QueryRowContext(ctx, query, args...)
}

// ReadContext runs a read of several rows on the writer pool, as
// ReadRowContext does.
func (w writer) ReadContext(ctx context.Context, query string, args ...any) (*sql.Rows, error) {
	return w.db.QueryContext(ctx, query, args...)
}

// flushedRow is a row whose statement committed on its own: Scan reads it
// and then waits for the log's flush.
type flushedRow struct {
	row *sql.Row
	w   writer
}

// Scan copies the row into dest, as sql.Row's Scan does, once the
// statement's commit is on disk.
func (r flushedRow) Scan(dest ...any) error {
	if err := r.row.Scan(dest...); err != nil {
		return err
	}
	return r.w.flush()
}
