package meta_test

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// wakeLog records the queues meta.WakeOnEnqueue announces.
type wakeLog struct {
	mu     sync.Mutex
	queues []string
}

func (w *wakeLog) wake(q string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.queues = append(w.queues, q)
}

// take returns the queues announced since the last take.
func (w *wakeLog) take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	q := w.queues
	w.queues = nil
	return q
}

// TestWakeOnEnqueue: a committed enqueue wakes its queue, once per queue
// and transaction, whichever way the job was enqueued; a transaction that
// rolls back, or that enqueues nothing (a feed batch with nothing to do),
// wakes nothing.
func TestWakeOnEnqueue(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			dsn := metatest.DSN(t, d)
			var log wakeLog
			db, err := meta.Open(ctx, dsn, meta.WakeOnEnqueue(log.wake))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()

			enqueue(t, db, meta.Job{Queue: "a", OrderingKey: "k"})
			if got := log.take(); !slices.Equal(got, []string{"a"}) {
				t.Fatalf("after EnqueueJob: woke %q, want [a]", got)
			}

			// Feed batches: enqueues in the transaction that moves the
			// cursor.
			if err := db.Outbox().Subscribe(ctx, "sub"); err != nil {
				t.Fatal(err)
			}
			appendEvent(t, db, "x")
			if got := log.take(); len(got) != 0 {
				t.Fatalf("appending an event woke %q", got)
			}
			consume := func(fn func(ctx context.Context, tx meta.Tx) error) error {
				_, err := db.Outbox().Consume(ctx, "sub", 10, func(ctx context.Context, tx meta.Tx, _ []meta.Event) error { return fn(ctx, tx) })
				return err
			}
			refused := errors.New("refused")
			err = consume(func(ctx context.Context, tx meta.Tx) error {
				if _, err := db.Jobs().EnqueueIn(ctx, tx, meta.Job{Queue: "b"}); err != nil {
					return err
				}
				return refused
			})
			if !errors.Is(err, refused) {
				t.Fatalf("consume = %v, want the handler's error", err)
			}
			if got := log.take(); len(got) != 0 {
				t.Fatalf("a rolled back enqueue woke %q", got)
			}
			err = consume(func(ctx context.Context, tx meta.Tx) error {
				for _, q := range []string{"b", "c", "b"} {
					if _, err := db.Jobs().EnqueueIn(ctx, tx, meta.Job{Queue: q}); err != nil {
						return err
					}
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			if got := log.take(); !slices.Equal(got, []string{"b", "c"}) {
				t.Fatalf("after a batch enqueuing to b, c, b: woke %q, want [b c]", got)
			}

			// A batch with nothing to do wakes nobody.
			appendEvent(t, db, "y")
			if err := consume(func(context.Context, meta.Tx) error { return nil }); err != nil {
				t.Fatal(err)
			}
			if got := log.take(); len(got) != 0 {
				t.Fatalf("a batch that enqueued nothing woke %q", got)
			}
		})
	}
}

// appendEvent appends a repo_push event and numbers it.
func appendEvent(t *testing.T, db *meta.DB, uuid string) {
	t.Helper()
	ctx := context.Background()
	if err := db.Scans().AppendEvents(ctx, []meta.Event{{UUID: uuid, Kind: meta.EventRepoPush, Repository: "acme/app"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Outbox().Sequence(ctx, 10); err != nil {
		t.Fatal(err)
	}
}
