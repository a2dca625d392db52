package meta

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// OpenAt opens dsn with the migrations applied up to version only, for
// upgrade tests; Migrate then applies the rest.
func OpenAt(ctx context.Context, dsn string, version int) (*DB, error) {
	db, err := open(dsn, false)
	if err != nil {
		return nil, err
	}
	if err := db.migrateTo(ctx, version); err != nil {
		db.Close()
		return nil, err
	}
	return db, nil
}

// Migrate applies the pending migrations.
func (db *DB) Migrate(ctx context.Context) error { return db.migrate(ctx) }

// Exec runs a statement (with ? placeholders) outside any store, for
// tests that build states the stores cannot.
func (db *DB) Exec(ctx context.Context, query string, args ...any) error {
	_, err := db.write.ExecContext(ctx, db.q(query), args...)
	return err
}

// SeenAt sets when a feed subscriber was last seen.
func (db *DB) SeenAt(ctx context.Context, name string, at time.Time) error {
	return db.Exec(ctx, "UPDATE feed_cursors SET seen_at = ? WHERE name = ?", at.UnixMicro(), name)
}

// LiveJobsBehind returns, for every live job of queue, whether it is
// marked behind an older job of its key (jobs.behind).
func (db *DB) LiveJobsBehind(ctx context.Context, queue string) (map[int64]bool, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT id, behind FROM jobs WHERE queue = ? AND status IN ('pending', 'running')"), queue)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var id int64
		var behind int
		if err := rows.Scan(&id, &behind); err != nil {
			return nil, err
		}
		out[id] = behind != 0
	}
	return out, rows.Err()
}

// BuiltinSubscribers returns the cursors migration 24 creates.
func BuiltinSubscribers() []string {
	return []string{SubscriberNotify, SubscriberScan, SubscriberGraph, SubscriberGate}
}

// HeldManifests returns the digests of a repository's held manifests.
func (db *DB) HeldManifests(ctx context.Context, repo string) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT m.digest FROM manifests m JOIN repositories r ON r.id = m.repository_id
		WHERE r.name = ? AND m.held = 1`), repo)
	if err != nil {
		return nil, err
	}
	return scanStrings(rows)
}

// Deadlocks is how many transactions PostgreSQL ended as deadlocked.
func (db *DB) Deadlocks() int64 { return db.deadlocks.Load() }

// ImagesWithChains returns indexed images whose whole layer chain is one
// of chains (images that are a prefix of an image with these chain IDs),
// every copy, deepest first, at most n. The graph's indexer takes the
// best copy per depth (BestWithChains).
func (db Graph) ImagesWithChains(ctx context.Context, chains []digest.Digest, n int) ([]GraphNode, error) {
	if len(chains) == 0 {
		return nil, nil
	}
	args := make([]any, 0, len(chains)+1)
	for _, c := range chains {
		args = append(args, c.String())
	}
	args = append(args, n)
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT g.repository_id, r.name, g.digest, g.layers, g.platform, g.top_chain FROM graph_images g
		JOIN repositories r ON r.id = g.repository_id
		WHERE g.top_chain IN (?`+strings.Repeat(", ?", len(chains)-1)+`) ORDER BY g.layers DESC, r.name, g.digest LIMIT ?`), args...)
	if err != nil {
		return nil, fmt.Errorf("find images by layers: %w", err)
	}
	return scanNodes(rows)
}

// LocalClock makes the store read the local time from clock instead of
// time.Now, as a host whose clock is off would.
func LocalClock(clock func() time.Time) Option {
	return func(db *core) { db.clock = clock }
}

// ClockOffset is what the store adds to the local clock to read the
// database's.
func (db *DB) ClockOffset() time.Duration {
	return time.Duration(db.offset.Load()) * time.Microsecond
}

// LinkTimes returns when a repository's link to a blob was made or last
// confirmed (created_at) and when it was first made (linked_at).
func (db *DB) LinkTimes(ctx context.Context, repo string, d digest.Digest) (created, linked time.Time, err error) {
	var c, l int64
	err = db.read.QueryRowContext(ctx, db.q(`SELECT rb.created_at, rb.linked_at FROM repository_blobs rb
		JOIN repositories r ON r.id = rb.repository_id WHERE r.name = ? AND rb.digest = ?`), repo, d.String()).Scan(&c, &l)
	return fromMicros(c), fromMicros(l), err
}

// ReadRows runs a query (with ? placeholders) on the read pool and
// returns how many rows it read.
func (db *DB) ReadRows(ctx context.Context, query string, args ...any) (int, error) {
	rows, err := db.read.QueryContext(ctx, db.q(query), args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		n++
	}
	return n, rows.Err()
}
