package meta

// The store's clock. Leases and claims (of jobs, uploads) are times
// compared across processes: a replica takes over a job whose lease_until
// its clock has passed, and claims an upload whose locked_until has. With
// the replicas' own clocks, one running ahead would take over what another
// still runs. On PostgreSQL every time the store writes or compares
// follows the database server's clock instead: the store measures the
// offset of its host's clock to the server's when it opens, and again
// every clockEvery, and adds it to the host's time (core.now). Replicas'
// clocks then need not agree. SQLite's store is one host's: its offset is
// 0.

import (
	"context"
	"fmt"
	"log/slog"
	"time"
)

const (
	// clockEvery is how often a PostgreSQL store measures its offset to
	// the database's clock again (a host's clock drifts, or is stepped).
	clockEvery = 30 * time.Second
	// clockSamples is how many round trips a measure makes; the one that
	// took least time gives the offset (its error is at most half of it).
	clockSamples = 5
	// clockWarnOver is the offset past which the host's clock is wrong
	// enough to say so.
	clockWarnOver = time.Second
)

// Logger makes the store log to l (slog.Default() otherwise): that the
// host's clock is off the database's (on PostgreSQL).
func Logger(l *slog.Logger) Option {
	return func(db *core) { db.log = l }
}

// logger returns the store's logger.
func (db *core) logger() *slog.Logger {
	if db.log != nil {
		return db.log
	}
	return slog.Default()
}

// nowTime is now as a time.
func (db *core) nowTime() time.Time { return fromMicros(db.now()) }

// localTime is a time the store wrote (Unix microseconds on its clock) on
// the local clock.
func (db *core) localTime(us int64) time.Time {
	return time.UnixMicro(us - db.offset.Load())
}

// measureOffset returns the database's clock minus the local one, in
// microseconds: of clockSamples reads of the server's clock on one
// connection, the one with the shortest round trip, against the local
// time midway through it.
func (db *core) measureOffset(ctx context.Context) (int64, error) {
	conn, err := db.read.Conn(ctx)
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	var offset int64
	best := time.Duration(-1)
	for range clockSamples {
		var server int64
		before := db.localNow()
		err := conn.QueryRowContext(ctx, "SELECT (EXTRACT(EPOCH FROM clock_timestamp()) * 1000000)::BIGINT").Scan(&server)
		after := db.localNow()
		if err != nil {
			return 0, err
		}
		if rtt := after.Sub(before); best < 0 || rtt < best {
			best = rtt
			offset = server - before.Add(rtt/2).UnixMicro()
		}
	}
	return offset, nil
}

// syncClock measures the offset to the database's clock and makes now
// use it. It logs a warning when the offset passes clockWarnOver, once
// until it is back under.
func (db *core) syncClock(ctx context.Context) error {
	if db.dialect != postgres {
		return nil
	}
	us, err := db.measureOffset(ctx)
	if err != nil {
		return fmt.Errorf("read the database's clock: %w", err)
	}
	db.offset.Store(us)
	off := time.Duration(us) * time.Microsecond
	switch {
	case off.Abs() > clockWarnOver && !db.clockWarned:
		db.clockWarned = true
		db.logger().Warn("this host's clock is off the database's; leases and claims follow the database's clock, but check the host's time synchronization (NTP)",
			"offset", off.Round(time.Millisecond).String(), "host_time", db.localNow().UTC().Format(time.RFC3339Nano))
	case off.Abs() <= clockWarnOver && db.clockWarned:
		db.clockWarned = false
		db.logger().Info("this host's clock is back in step with the database's", "offset", off.Round(time.Millisecond).String())
	}
	return nil
}

// startClock measures the offset again every clockEvery until stopClock.
func (db *core) startClock() {
	if db.dialect != postgres {
		return
	}
	ctx, cancel := context.WithCancel(context.Background())
	db.clockStop, db.clockDone = cancel, make(chan struct{})
	go func() {
		defer close(db.clockDone)
		t := time.NewTicker(clockEvery)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			mctx, done := context.WithTimeout(ctx, clockEvery/2)
			if err := db.syncClock(mctx); err != nil && ctx.Err() == nil {
				// The last offset stays: clocks drift slowly.
				db.logger().Debug("measure the offset to the database's clock", "err", err)
			}
			done()
		}
	}()
}

// stopClock ends startClock's measures, and waits for them.
func (db *core) stopClock() {
	if db.clockStop == nil {
		return
	}
	db.clockStop()
	<-db.clockDone
}
