package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Event kinds appended by the registry core.
const (
	EventRepoPush        = "repo_push"
	EventTagDeleted      = "tag_deleted"
	EventManifestDeleted = "manifest_deleted"
	EventRepoCreated     = "repo_created"
	EventRepoDeleted     = "repo_deleted"
)

// The built-in subscribers of the change feed, by cursor name. Their
// cursors exist from the database's creation (migration 24, which names
// them too), whether or not their feature is on: an event committed
// before a process first subscribes them (a push served while the
// server's dispatcher starts, a `berth import` before the first `berth
// serve`) is still handed to them. Until a process subscribes one, it is
// never seen, and pruning does not wait for it (pruneEvents): a feature
// that is off holds no events back.
const (
	SubscriberNotify = "notify"
	SubscriberScan   = "scan"
	SubscriberGraph  = "graph"
	SubscriberGate   = "gate"
)

// Event is an entry of the outbox: it is appended in the same transaction as
// the change it announces, and delivered later by the dispatcher.
type Event struct {
	ID int64
	// Position is the event's place in the feed, given once it is
	// committed (Sequence): gap-free and in commit order. Zero until then.
	Position   int64
	UUID       string
	Kind       string
	Repository string
	Actor      string
	Data       json.RawMessage
	CreatedAt  time.Time
}

func (db *core) appendEvent(ctx context.Context, tx *sql.Tx, e Event) error {
	return db.appendEventAudited(ctx, tx, e, nil)
}

// appendEventAudited is appendEvent with the audit entry's metadata
// given apart from the event's data (nil: the same), for an event whose
// data holds lists the audit log need not keep (base_image_updated's
// vulnerabilities).
func (db *core) appendEventAudited(ctx context.Context, tx *sql.Tx, e Event, audit json.RawMessage) error {
	if e.UUID == "" {
		e.UUID = uuid.NewString()
	}
	if e.Data == nil {
		e.Data = json.RawMessage("{}")
	}
	if audit == nil {
		audit = e.Data
	}
	ts := db.now()
	if db.appended != nil {
		db.note(tx).appended = true
	}
	_, err := tx.ExecContext(ctx, db.q("INSERT INTO events (uuid, kind, repository, actor, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)"),
		e.UUID, e.Kind, e.Repository, e.Actor, string(e.Data), ts)
	if err != nil {
		return fmt.Errorf("append %s event: %w", e.Kind, err)
	}
	// Content changes are security-relevant too: the audit log records
	// who pushed and deleted what, in the same transaction.
	ns, _, _ := strings.Cut(e.Repository, "/")
	_, err = tx.ExecContext(ctx, db.q("INSERT INTO audit_log (kind, actor, namespace, repository, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?)"),
		e.Kind, e.Actor, ns, e.Repository, string(audit), ts)
	if err != nil {
		return fmt.Errorf("audit %s: %w", e.Kind, err)
	}
	return nil
}

// EventsAfter returns up to n events with an id above after, oldest first.
func (db Outbox) EventsAfter(ctx context.Context, after int64, n int) ([]Event, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT "+eventColumns+" FROM events WHERE id > ? ORDER BY id LIMIT CAST(? AS BIGINT)"), after, n)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	return scanEvents(rows)
}

const eventColumns = "id, position, uuid, kind, repository, actor, payload, created_at"

func scanEvent(row interface{ Scan(...any) error }) (Event, error) {
	var e Event
	var pos sql.NullInt64
	var payload string
	var created int64
	if err := row.Scan(&e.ID, &pos, &e.UUID, &e.Kind, &e.Repository, &e.Actor, &payload, &created); err != nil {
		return Event{}, err
	}
	e.Position, e.Data, e.CreatedAt = pos.Int64, json.RawMessage(payload), fromMicros(created)
	return e, nil
}

func scanEvents(rows *sql.Rows) ([]Event, error) {
	defer rows.Close()
	var out []Event
	for rows.Next() {
		e, err := scanEvent(rows)
		if err != nil {
			return nil, fmt.Errorf("scan event: %w", err)
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal event data: %v", err)) // only plain structs are passed
	}
	return b
}

// EventByID returns an outbox event.
func (db Outbox) EventByID(ctx context.Context, id int64) (Event, error) {
	e, err := scanEvent(db.read.QueryRowContext(ctx, db.q("SELECT "+eventColumns+" FROM events WHERE id = ?"), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Event{}, fmt.Errorf("event %w", ErrNotFound)
	}
	if err != nil {
		return Event{}, fmt.Errorf("get event: %w", err)
	}
	return e, nil
}

// The feed. Events get their place in it once committed: a sequencer
// (Sequence, one at a time across processes) numbers the committed events
// it has not numbered yet, oldest id first, after the last number given
// (kept in feed_head, so that pruning never lets a number be reused).
// Positions are therefore gap-free and in commit order, which ids drawn
// from a sequence are not: on PostgreSQL a transaction that drew a lower
// id can commit after one with a higher id, and a reader that remembered
// "the highest id I saw" would skip it. Each subscriber has a cursor, the
// last position it handled (feed_cursors), advanced in the transaction
// that holds the subscriber's own writes (Consume), so that each event
// reaches each subscriber exactly once, crashes and replicas included.

// ErrNotSubscribed is returned by Consume for a name without a cursor.
var ErrNotSubscribed = errors.New("not subscribed to the feed")

// sequencerLockID serializes the sequencer across processes on
// PostgreSQL (the key the notification fan-out used before the feed).
const sequencerLockID = migrationLockID + 3

// Sequence numbers up to n committed events that have no position yet and
// returns how many it numbered.
func (db Outbox) Sequence(ctx context.Context, n int) (int, error) {
	if pending, err := db.unsequenced(ctx); err != nil || !pending {
		return 0, err
	}
	done := 0
	// Numbering is bookkeeping: a power cut that loses it loses the
	// subscribers' later (lax) work with it, and the events are numbered
	// again (laxTx).
	err := db.laxTx(ctx, func(tx *sql.Tx) error {
		var err error
		done, _, err = db.sequenceIn(ctx, tx, n)
		return err
	})
	return done, err
}

// unsequenced reports whether committed events wait for a position. It is
// a read: an idle poll must not take the write lock (SQLite has one
// writer, and pushes need it).
func (db Outbox) unsequenced(ctx context.Context) (bool, error) {
	var one int
	err := db.read.QueryRowContext(ctx, "SELECT 1 FROM events WHERE position IS NULL LIMIT 1").Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read outbox: %w", err)
	}
	return true, nil
}

// sequenceIn is Sequence's work inside tx: it returns how many events it
// numbered and the feed's head (the last position given) after them.
func (db Outbox) sequenceIn(ctx context.Context, tx *sql.Tx, n int) (int, int64, error) {
	if db.dialect == postgres {
		// Statements after the lock see what the previous holder
		// committed (READ COMMITTED takes a snapshot per statement).
		if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", sequencerLockID); err != nil {
			return 0, 0, fmt.Errorf("sequencer lock: %w", err)
		}
	}
	var head int64
	if err := tx.QueryRowContext(ctx, "SELECT position FROM feed_head WHERE id = 1"+db.lockSuffix()).Scan(&head); err != nil {
		return 0, 0, fmt.Errorf("read feed head: %w", err)
	}
	res, err := tx.ExecContext(ctx, db.q(`UPDATE events SET position = ? + r.n FROM (
			SELECT id, ROW_NUMBER() OVER (ORDER BY id) AS n FROM events WHERE position IS NULL ORDER BY id LIMIT CAST(? AS BIGINT)) AS r
		WHERE events.id = r.id`), head, n)
	if err != nil {
		return 0, 0, fmt.Errorf("sequence events: %w", err)
	}
	k, err := res.RowsAffected()
	if err != nil {
		return 0, 0, fmt.Errorf("sequence events: %w", err)
	}
	if k == 0 {
		return 0, head, nil
	}
	if _, err := tx.ExecContext(ctx, db.q("UPDATE feed_head SET position = ? WHERE id = 1"), head+k); err != nil {
		return 0, 0, fmt.Errorf("advance feed head: %w", err)
	}
	return int(k), head + k, nil
}

// Subscribe gives name a cursor at the end of the feed (the last position
// given) unless it has one, and records that its subscriber is alive: a
// cursor not seen for longer than the events' retention no longer holds
// events back from pruning (Collector.Prune).
func (db Outbox) Subscribe(ctx context.Context, name string) error {
	if name == "" {
		return errors.New("subscribe: empty name")
	}
	return db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO feed_cursors (name, position, seen_at) SELECT ?, position, ? FROM feed_head WHERE id = 1
			ON CONFLICT (name) DO UPDATE SET seen_at = excluded.seen_at`), name, db.now()); err != nil {
			return fmt.Errorf("subscribe %s: %w", name, err)
		}
		return nil
	})
}

// Consume hands the next up to n events past name's cursor, in feed
// order, to fn inside a write transaction, and moves the cursor past them
// in the same transaction: what fn writes through tx commits with the
// cursor, or neither does. It returns how many events fn handled (0 when
// the cursor is at the end, or, on PostgreSQL, when another process is
// consuming for name at the moment). An error of fn rolls everything back
// and is returned; the same events come again at the next call.
//
// fn must do all its reading and writing through tx (on SQLite the
// transaction holds the only write connection) and may be run again if
// the transaction loses a race the database detects.
func (db Outbox) Consume(ctx context.Context, name string, n int, fn func(ctx context.Context, tx Tx, events []Event) error) (int, error) {
	var cursor, head int64
	err := db.read.QueryRowContext(ctx, db.q("SELECT c.position, h.position FROM feed_cursors c, feed_head h WHERE c.name = ? AND h.id = 1"), name).
		Scan(&cursor, &head)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("%s: %w", name, ErrNotSubscribed)
	}
	if err != nil {
		return 0, fmt.Errorf("read cursor of %s: %w", name, err)
	}
	if cursor >= head {
		return 0, nil
	}
	handled := 0
	// The cursor and fn's writes commit together, laxly (laxTx): a power
	// cut that loses them hands the same events to fn again.
	err = db.laxTx(ctx, func(tx *sql.Tx) error {
		var err error
		handled, err = db.consumeIn(ctx, tx, name, n, fn)
		return err
	})
	return handled, err
}

// consumeIn is Consume's work inside tx.
func (db Outbox) consumeIn(ctx context.Context, tx *sql.Tx, name string, n int, fn func(ctx context.Context, tx Tx, events []Event) error) (int, error) {
	lock := ""
	if db.dialect == postgres {
		lock = " FOR UPDATE SKIP LOCKED" // another replica consuming for name: leave it to it
	}
	var cursor int64
	err := tx.QueryRowContext(ctx, db.q("SELECT position FROM feed_cursors WHERE name = ?"+lock), name).Scan(&cursor)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("lock cursor of %s: %w", name, err)
	}
	rows, err := tx.QueryContext(ctx, db.q("SELECT "+eventColumns+" FROM events WHERE position > ? ORDER BY position LIMIT CAST(? AS BIGINT)"), cursor, n)
	if err != nil {
		return 0, fmt.Errorf("read feed: %w", err)
	}
	evs, err := scanEvents(rows)
	if err != nil || len(evs) == 0 {
		return 0, err
	}
	if err := fn(ctx, Tx{tx}, evs); err != nil {
		return 0, err
	}
	if _, err := tx.ExecContext(ctx, db.q("UPDATE feed_cursors SET position = ?, seen_at = ? WHERE name = ?"), evs[len(evs)-1].Position, db.now(), name); err != nil {
		return 0, fmt.Errorf("advance cursor of %s: %w", name, err)
	}
	return len(evs), nil
}

// Consumer is one subscriber's part of SequenceConsumeAll: its cursor's name and
// its handler, as for Consume.
type Consumer struct {
	Name string
	Fn   func(ctx context.Context, tx Tx, events []Event) error
}

// SequenceConsumeAll numbers up to n committed events, as Sequence does,
// and, when it numbered some, does Consume's work for every subscriber of
// cs in the same write transaction, one after the other, each inside a
// savepoint: a handler's writes commit with its own cursor, and a handler
// that fails has its writes and its cursor rolled back while the others'
// and the numbering still commit. One transaction instead of one to
// number and one per subscriber and batch spares SQLite's one writer the
// begins, commits and hand-overs, and the cursors' read. On PostgreSQL
// the sequencer's lock is held while the handlers run (they only write
// rows), and a cursor another process is consuming is skipped (handled 0).
//
// numbered is what Sequence would have returned; handled[i] and errs[i]
// are what Consume would have returned for cs[i] (ErrNotSubscribed for a
// name without a cursor). err is the transaction's own failure: then
// nothing committed, not even the numbering, and numbered and handled are
// all zero.
func (db Outbox) SequenceConsumeAll(ctx context.Context, n int, cs []Consumer) (numbered int, handled []int, errs []error, err error) {
	handled, errs = make([]int, len(cs)), make([]error, len(cs))
	if pending, err := db.unsequenced(ctx); err != nil || !pending {
		return 0, handled, errs, err
	}
	err = db.laxTx(ctx, func(tx *sql.Tx) error {
		clear(handled)
		clear(errs)
		var head int64
		var err error
		if numbered, head, err = db.sequenceIn(ctx, tx, n); err != nil || numbered == 0 {
			return err
		}
		rows, err := tx.QueryContext(ctx, "SELECT name, position FROM feed_cursors")
		if err != nil {
			return fmt.Errorf("read cursors: %w", err)
		}
		cursors := map[string]int64{}
		for rows.Next() {
			var name string
			var pos int64
			if err := rows.Scan(&name, &pos); err != nil {
				rows.Close()
				return fmt.Errorf("read cursors: %w", err)
			}
			cursors[name] = pos
		}
		if err := rows.Close(); err != nil {
			return fmt.Errorf("read cursors: %w", err)
		}
		for i, c := range cs {
			if pos, ok := cursors[c.Name]; !ok {
				errs[i] = fmt.Errorf("%s: %w", c.Name, ErrNotSubscribed)
				continue
			} else if pos >= head {
				continue
			}
			if _, err := tx.ExecContext(ctx, "SAVEPOINT feed_consume"); err != nil {
				return fmt.Errorf("savepoint: %w", err)
			}
			// What the transaction will announce so far: a handler rolled
			// back wakes nobody for what it enqueued.
			before := *db.note(tx)
			handled[i], errs[i] = db.consumeIn(ctx, tx, c.Name, n, c.Fn)
			if errs[i] != nil {
				handled[i] = 0
				if _, err := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT feed_consume"); err != nil {
					return fmt.Errorf("roll back %s: %w (after %w)", c.Name, err, errs[i])
				}
				*db.note(tx) = before
			}
			if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT feed_consume"); err != nil {
				return fmt.Errorf("release savepoint: %w", err)
			}
		}
		return nil
	})
	if err != nil {
		numbered = 0
		clear(handled)
		clear(errs)
	}
	return numbered, handled, errs, err
}
