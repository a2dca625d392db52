package feed_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/berth-dev/berth/internal/feed"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// recorder is a subscriber that writes, in the feed's transaction, one job
// per event it handles (queue "feedtest-<name>"), so that what it handled
// is what committed. It fails while fail is set; its blockAt-th call to
// Handle (if set) writes its jobs, then blocks until the dispatcher stops.
type recorder struct {
	name    string
	jobs    meta.Jobs
	fail    atomic.Bool
	calls   atomic.Int64
	blockAt int64
	blocked chan struct{} // receives when Handle starts blocking
}

func newRecorder(db *meta.DB, name string) *recorder {
	return &recorder{name: name, jobs: db.Jobs(), blocked: make(chan struct{}, 1)}
}

func (r *recorder) Name() string { return r.name }

func (r *recorder) Handle(ctx context.Context, tx meta.Tx, evs []meta.Event) error {
	if r.fail.Load() {
		return errors.New("refused")
	}
	for _, e := range evs {
		payload, _ := json.Marshal(map[string]any{"id": e.ID, "position": e.Position, "uuid": e.UUID})
		if _, err := r.jobs.EnqueueIn(ctx, tx, meta.Job{Queue: "feedtest-" + r.name, Payload: payload}); err != nil {
			return err
		}
	}
	if r.calls.Add(1) == r.blockAt {
		r.blocked <- struct{}{}
		<-ctx.Done()
		return ctx.Err()
	}
	return nil
}

type handled struct {
	ID       int64  `json:"id"`
	Position int64  `json:"position"`
	UUID     string `json:"uuid"`
}

// handledBy lists what subscriber name handled, in the order it did.
func handledBy(t *testing.T, db *meta.DB, name string) []handled {
	t.Helper()
	js, err := db.Jobs().Jobs(context.Background(), "feedtest-"+name, "", 100000)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]handled, len(js))
	for i, j := range js {
		if err := json.Unmarshal(j.Payload, &out[i]); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// appendEvents appends n events, one transaction each, and returns their
// uuids.
func appendEvents(t *testing.T, db *meta.DB, n int) []string {
	t.Helper()
	var out []string
	for range n {
		u := uuid.NewString()
		if err := db.Scans().AppendEvents(context.Background(), []meta.Event{{UUID: u, Kind: "test", Repository: "acme/app"}}); err != nil {
			t.Error(err)
			return out
		}
		out = append(out, u)
	}
	return out
}

// checkOnceInOrder checks that the subscriber handled exactly the events
// want (uuids), each once, in feed order, and that the positions it saw
// are gap-free.
func checkOnceInOrder(t *testing.T, db *meta.DB, name string, want []string) {
	t.Helper()
	got := handledBy(t, db, name)
	seen := map[string]int{}
	for i, h := range got {
		seen[h.UUID]++
		if i > 0 && h.Position != got[i-1].Position+1 {
			t.Errorf("%s: position %d after %d (out of order or a gap)", name, h.Position, got[i-1].Position)
		}
	}
	for _, u := range want {
		if seen[u] != 1 {
			t.Errorf("%s handled event %s %d times", name, u, seen[u])
		}
	}
	if len(got) != len(want) {
		t.Errorf("%s handled %d events, want %d", name, len(got), len(want))
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

func opts() feed.Options {
	return feed.Options{Poll: 20 * time.Millisecond, Batch: 7, Logger: quiet, Backoff: func(int) time.Duration { return 10 * time.Millisecond }}
}

// sharedDSN is a database two store handles (two processes) can open.
func sharedDSN(t *testing.T, dialect string) string {
	if dialect == "postgres" {
		return metatest.PostgresDSN(t)
	}
	return t.TempDir() + "/shared.db"
}

func open(t *testing.T, dsn string, o ...meta.Option) *meta.DB {
	t.Helper()
	db, err := meta.Open(context.Background(), dsn, o...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// run runs a dispatcher until the test ends.
func run(t *testing.T, d *feed.Dispatcher) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
}

// TestExactlyOnceAcrossDispatchers: two processes (store handles), each
// with a dispatcher of the same two subscribers, while both append events
// concurrently: each subscriber handles every event once, in feed order,
// and the feed's positions have no gap.
func TestExactlyOnceAcrossDispatchers(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			dsn := sharedDSN(t, dialect)
			a, b := open(t, dsn), open(t, dsn)
			for _, db := range []*meta.DB{a, b} {
				run(t, feed.New(db.Outbox(), []feed.Subscriber{newRecorder(db, "one"), newRecorder(db, "two")}, opts()))
			}
			waitFor(t, "the subscriptions", func() bool { return subscribed(t, a, "one", "two") })
			var mu sync.Mutex
			var want []string
			var wg sync.WaitGroup
			for w := range 4 {
				wg.Go(func() {
					evs := appendEvents(t, []*meta.DB{a, b}[w%2], 40)
					mu.Lock()
					want = append(want, evs...)
					mu.Unlock()
				})
			}
			wg.Wait()
			for _, name := range []string{"one", "two"} {
				waitFor(t, name+" to handle every event", func() bool { return len(handledBy(t, a, name)) >= len(want) })
			}
			time.Sleep(100 * time.Millisecond) // no late duplicates
			for _, name := range []string{"one", "two"} {
				checkOnceInOrder(t, a, name, want)
			}
		})
	}
}

// TestLateCommitNotSkipped: on PostgreSQL a transaction that drew a lower
// event id can commit after one with a higher id has been handled; the
// subscriber still gets it (after the other: in commit order).
func TestLateCommitNotSkipped(t *testing.T) {
	dsn := metatest.PostgresDSN(t)
	db := open(t, dsn)
	ctx := context.Background()
	rec := newRecorder(db, "one")
	d := feed.New(db.Outbox(), []feed.Subscriber{rec}, opts())
	if err := d.Subscribe(ctx); err != nil {
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
	if _, err := tx.ExecContext(ctx, "INSERT INTO events (uuid, kind, repository, actor, payload, created_at) VALUES ('late', 'test', 'acme/app', '', '{}', 0)"); err != nil {
		t.Fatal(err)
	}
	early := appendEvents(t, db, 1)
	if err := d.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := d.Drain(ctx); err != nil {
		t.Fatal(err)
	}
	got := handledBy(t, db, "one")
	if len(got) != 2 || got[0].UUID != early[0] || got[1].UUID != "late" || got[1].ID > got[0].ID {
		t.Fatalf("handled %+v, want %s then the late commit with the lower id", got, early[0])
	}
}

// TestFailingSubscriberDoesNotBlockOthers: while one subscriber fails,
// another handles every event; once the first recovers it catches up.
func TestFailingSubscriberDoesNotBlockOthers(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			db := metatest.Open(t, dialect)
			good, bad := newRecorder(db, "good"), newRecorder(db, "bad")
			bad.fail.Store(true)
			run(t, feed.New(db.Outbox(), []feed.Subscriber{bad, good}, opts()))
			waitFor(t, "the subscriptions", func() bool { return subscribed(t, db, "bad", "good") })
			want := appendEvents(t, db, 20)
			waitFor(t, "good to handle every event", func() bool { return len(handledBy(t, db, "good")) == len(want) })
			if got := handledBy(t, db, "bad"); len(got) != 0 {
				t.Fatalf("the failing subscriber committed %d events", len(got))
			}
			bad.fail.Store(false)
			waitFor(t, "bad to catch up", func() bool { return len(handledBy(t, db, "bad")) == len(want) })
			checkOnceInOrder(t, db, "good", want)
			checkOnceInOrder(t, db, "bad", want)
		})
	}
}

// subscribed reports whether every name has a cursor (Consume then
// succeeds).
func subscribed(t *testing.T, db *meta.DB, names ...string) bool {
	for _, n := range names {
		if _, err := db.Outbox().Consume(context.Background(), n, 1, func(context.Context, meta.Tx, []meta.Event) error {
			return errors.New("probe")
		}); errors.Is(err, meta.ErrNotSubscribed) {
			return false
		}
	}
	return true
}

// TestRestartResumesAtCursor: a dispatcher stopped in the middle of a
// batch (its transaction never commits, as in a crash) leaves nothing of
// that batch behind; a new process resumes at the cursor, and every event
// is handled once.
func TestRestartResumesAtCursor(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			dsn := sharedDSN(t, dialect)
			first := open(t, dsn)
			appendEvents(t, first, 3)
			rec := newRecorder(first, "one")
			rec.blockAt = 2
			o := opts()
			o.Batch = 4
			d := feed.New(first.Outbox(), []feed.Subscriber{rec}, o)
			if err := d.Subscribe(context.Background()); err != nil { // at the end: none of the 3
				t.Fatal(err)
			}
			want := appendEvents(t, first, 10)
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() { d.Run(ctx); close(done) }()
			<-rec.blocked // in the second batch, its jobs written, not committed
			cancel()
			<-done
			if got := handledBy(t, first, "one"); len(got) != 4 {
				t.Fatalf("after the crash %d events are recorded handled, want the first batch's 4", len(got))
			}
			second := open(t, dsn)
			if err := feed.New(second.Outbox(), []feed.Subscriber{newRecorder(second, "one")}, o).Drain(context.Background()); err != nil {
				t.Fatal(err)
			}
			checkOnceInOrder(t, second, "one", want)
		})
	}
}

// TestNewSubscriberStartsAtEnd: a subscriber added later hears only what
// happens after it subscribed; the existing one hears everything.
func TestNewSubscriberStartsAtEnd(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			old := feed.New(db.Outbox(), []feed.Subscriber{newRecorder(db, "old")}, opts())
			if err := old.Subscribe(ctx); err != nil {
				t.Fatal(err)
			}
			before := appendEvents(t, db, 5)
			if err := old.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			both := feed.New(db.Outbox(), []feed.Subscriber{newRecorder(db, "old"), newRecorder(db, "new")}, opts())
			if err := both.Subscribe(ctx); err != nil {
				t.Fatal(err)
			}
			after := appendEvents(t, db, 5)
			if err := both.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			checkOnceInOrder(t, db, "old", append(before, after...))
			checkOnceInOrder(t, db, "new", after)
		})
	}
}

// TestWokenByLocalCommit: with meta.WakeOnAppend wired to the dispatcher,
// an event reaches the subscriber without waiting for a poll.
func TestWokenByLocalCommit(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			wake := make(chan struct{}, 1)
			db := open(t, sharedDSN(t, dialect), meta.WakeOnAppend(wake))
			o := opts()
			o.Poll, o.Wake = time.Hour, wake
			rec := newRecorder(db, "one")
			run(t, feed.New(db.Outbox(), []feed.Subscriber{rec}, o))
			waitFor(t, "the subscription", func() bool { return subscribed(t, db, "one") })
			want := appendEvents(t, db, 3)
			waitFor(t, "the events without a poll", func() bool { return len(handledBy(t, db, "one")) == len(want) })
			checkOnceInOrder(t, db, "one", want)
		})
	}
}

// consumeCounter counts the batches subscribers consumed on their own
// (Store.Consume calls that handed events).
type consumeCounter struct {
	feed.Store
	alone atomic.Int64
}

func (c *consumeCounter) Consume(ctx context.Context, name string, n int, fn func(context.Context, meta.Tx, []meta.Event) error) (int, error) {
	k, err := c.Store.Consume(ctx, name, n, fn)
	if k > 0 {
		c.alone.Add(1)
	}
	return k, err
}

// TestNumberedAndHandedTogether: healthy subscribers get the events in
// the transaction that numbers them (Store.SequenceConsumeAll): on SQLite
// a commit of events costs one more write transaction, whatever the
// number of subscribers, and no subscriber consumes a batch on its own.
func TestNumberedAndHandedTogether(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			wake := make(chan struct{}, 1)
			db := open(t, sharedDSN(t, dialect), meta.WakeOnAppend(wake))
			o := opts()
			o.Wake, o.Batch = wake, 100
			store := &consumeCounter{Store: db.Outbox()}
			one, two := newRecorder(db, "one"), newRecorder(db, "two")
			run(t, feed.New(store, []feed.Subscriber{one, two}, o))
			waitFor(t, "the subscriptions", func() bool { return subscribed(t, db, "one", "two") })
			var want []string
			var evs []meta.Event
			for range 30 {
				want = append(want, uuid.NewString())
				evs = append(evs, meta.Event{UUID: want[len(want)-1], Kind: "test", Repository: "acme/app"})
			}
			writes0, _, counted := db.WriterWait()
			if err := db.Scans().AppendEvents(context.Background(), evs); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "both to handle every event", func() bool {
				return len(handledBy(t, db, "one")) == len(want) && len(handledBy(t, db, "two")) == len(want)
			})
			writes1, _, _ := db.WriterWait()
			checkOnceInOrder(t, db, "one", want)
			checkOnceInOrder(t, db, "two", want)
			if n := store.alone.Load(); n != 0 {
				t.Errorf("%d batches consumed apart from their numbering", n)
			}
			if counted && writes1-writes0 != 2 {
				t.Errorf("%d write transactions for a commit of events and its handling, want 2", writes1-writes0)
			}
		})
	}
}
