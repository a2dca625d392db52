package meta

import (
	"context"
	"database/sql"
	"fmt"
	"time"
)

// Read-only figures for monitoring (Prometheus gauges read at scrape
// time) and readiness. Each query walks a partial or leading-column index:
// live jobs (jobs_key), dead jobs (jobs_status), unsequenced events
// (events_unsequenced), live gate candidates (gate_candidates_live); the
// feed's head and cursors are one row per subscriber.

// QueueFigures describe one job queue.
type QueueFigures struct {
	Pending, Running, Dead int64
	// OldestReady is how long the oldest pending job whose run_at has
	// come has waited since then (0 when none is ready).
	OldestReady time.Duration
}

// Figures are the store's gauges at one moment.
type Figures struct {
	Queues map[string]QueueFigures
	// FeedLag is, per subscriber of the change feed, how many sequenced
	// events it has not handled yet (feed head minus its cursor). Only
	// the subscribers the retention of events waits for are listed (see
	// FiguresRetaining): not a built-in one no process has subscribed yet
	// (its feature off since the database was made), nor one abandoned
	// (its feature turned off, its process gone), whose lag only grows.
	FeedLag map[string]int64
	// Unsequenced counts committed events the sequencer has not numbered
	// yet (normally 0 or a handful).
	Unsequenced int64
	// GateCandidates counts live (pending or blocked) gate candidates per
	// state.
	GateCandidates map[string]int64
}

// Figures reads the monitoring gauges, as FiguresRetaining does for
// events kept forever (gc.retention.events 0): FeedLag lists the
// subscribers seen within a week.
func (db *DB) Figures(ctx context.Context) (Figures, error) {
	return db.FiguresRetaining(ctx, 0)
}

// FiguresRetaining reads the monitoring gauges of a store whose events are
// pruned after events (gc.retention.events; 0 keeps them forever).
// FeedLag lists the subscribers that pruning still waits for: those seen
// within the longer of events and subscriberGone (pruneEvents' rule).
func (db *DB) FiguresRetaining(ctx context.Context, events time.Duration) (Figures, error) {
	f := Figures{Queues: map[string]QueueFigures{}, FeedLag: map[string]int64{}, GateCandidates: map[string]int64{}}
	err := eachRow(ctx, db.read, db.q(`SELECT queue, status, COUNT(*) FROM jobs WHERE status IN ('pending', 'running') GROUP BY queue, status`),
		nil, func(rows *sql.Rows) error {
			var queue, status string
			var n int64
			if err := rows.Scan(&queue, &status, &n); err != nil {
				return err
			}
			q := f.Queues[queue]
			if status == "pending" {
				q.Pending = n
			} else {
				q.Running = n
			}
			f.Queues[queue] = q
			return nil
		})
	if err != nil {
		return f, fmt.Errorf("live jobs: %w", err)
	}
	ts := db.now()
	err = eachRow(ctx, db.read, db.q(`SELECT queue, MIN(run_at) FROM jobs WHERE status = 'pending' AND run_at <= ? GROUP BY queue`),
		[]any{ts}, func(rows *sql.Rows) error {
			var queue string
			var runAt int64
			if err := rows.Scan(&queue, &runAt); err != nil {
				return err
			}
			q := f.Queues[queue]
			q.OldestReady = time.Duration(ts-runAt) * time.Microsecond
			f.Queues[queue] = q
			return nil
		})
	if err != nil {
		return f, fmt.Errorf("ready jobs: %w", err)
	}
	err = eachRow(ctx, db.read, db.q(`SELECT queue, COUNT(*) FROM jobs WHERE status = 'dead' GROUP BY queue`), nil, func(rows *sql.Rows) error {
		var queue string
		var n int64
		if err := rows.Scan(&queue, &n); err != nil {
			return err
		}
		q := f.Queues[queue]
		q.Dead = n
		f.Queues[queue] = q
		return nil
	})
	if err != nil {
		return f, fmt.Errorf("dead jobs: %w", err)
	}
	seen := db.nowTime().Add(-max(subscriberGone, events))
	err = eachRow(ctx, db.read, db.q(`SELECT c.name, h.position - c.position FROM feed_cursors c CROSS JOIN feed_head h WHERE h.id = 1 AND c.seen_at > 0 AND c.seen_at >= ?`),
		[]any{seen.UnixMicro()},
		func(rows *sql.Rows) error {
			var name string
			var lag int64
			if err := rows.Scan(&name, &lag); err != nil {
				return err
			}
			f.FeedLag[name] = max(lag, 0)
			return nil
		})
	if err != nil {
		return f, fmt.Errorf("feed lag: %w", err)
	}
	if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*) FROM events WHERE position IS NULL`).Scan(&f.Unsequenced); err != nil {
		return f, fmt.Errorf("unsequenced events: %w", err)
	}
	err = eachRow(ctx, db.read, `SELECT state, COUNT(*) FROM gate_candidates WHERE state IN ('pending', 'blocked') GROUP BY state`, nil,
		func(rows *sql.Rows) error {
			var state string
			var n int64
			if err := rows.Scan(&state, &n); err != nil {
				return err
			}
			f.GateCandidates[state] = n
			return nil
		})
	if err != nil {
		return f, fmt.Errorf("gate candidates: %w", err)
	}
	return f, nil
}

func eachRow(ctx context.Context, pool *sql.DB, query string, args []any, fn func(*sql.Rows) error) error {
	rows, err := pool.QueryContext(ctx, query, args...)
	if err != nil {
		return err
	}
	defer rows.Close()
	for rows.Next() {
		if err := fn(rows); err != nil {
			return err
		}
	}
	return rows.Err()
}

// PoolStats are the connection pools' statistics by role: "read" and
// "write" on SQLite (the write pool is the single writer, so its waits
// are the SQLite writer wait), one "primary" pool on PostgreSQL.
func (db *DB) PoolStats() map[string]sql.DBStats {
	if db.read == db.write.db {
		return map[string]sql.DBStats{"primary": db.read.Stats()}
	}
	return map[string]sql.DBStats{"read": db.read.Stats(), "write": db.write.Stats()}
}

// WriterWait reports, on SQLite, how many write transactions began and
// the total time they waited to begin: for the single writer connection
// of this process and for the database's write lock (BEGIN IMMEDIATE,
// which waits while another process, `berth admin` say, writes). ok is
// false on PostgreSQL, which has no single writer.
func (db *DB) WriterWait() (n int64, total time.Duration, ok bool) {
	if db.dialect != sqlite {
		return 0, 0, false
	}
	return db.writerWaits.Load(), time.Duration(db.writerWaitNanos.Load()), true
}

// WriterHold reports, on SQLite, the total time write transactions held
// the single writer, from their start to their commit or rollback (a
// durable commit's wait for the log's flush is not counted: the writer
// is free by then). Its rate is the fraction of time the writer was busy,
// the store's ceiling for writes. ok is false on PostgreSQL.
func (db *DB) WriterHold() (total time.Duration, ok bool) {
	if db.dialect != sqlite {
		return 0, false
	}
	return time.Duration(db.writerHoldNanos.Load()), true
}

// LogFlushes reports, on an SQLite store with SyncFull, how many flushes
// of the write-ahead log ran and how many durable commits waited for one
// (logFlusher): their ratio is how many commits a flush served. ok is
// false otherwise.
func (db *DB) LogFlushes() (flushes, commits int64, ok bool) {
	if db.write.log == nil {
		return 0, 0, false
	}
	return db.write.log.flushes.Load(), db.write.log.waits.Load(), true
}

// CheckSchema reports an error unless the database answers and its schema
// is at this binary's version (the migrations Open applies; a newer
// binary sharing the database may have migrated past it).
func (db *DB) CheckSchema(ctx context.Context) error {
	if err := db.write.failed(); err != nil {
		return err // durable commits fail until a restart: not ready
	}
	var v int
	if err := db.read.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&v); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if v != len(migrations) {
		return fmt.Errorf("database schema version %d, this binary's is %d", v, len(migrations))
	}
	return nil
}
