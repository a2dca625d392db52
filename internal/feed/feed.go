// Package feed runs Berth's one change feed: the dispatcher that hands
// every event of the outbox (meta.Outbox) to every subscriber, each at its
// own cursor, exactly once, in feed order, across processes and crashes.
//
// Every observable change appends its event in its own transaction. The
// dispatcher then does two things, in any number of processes at once:
//
//   - it numbers newly committed events (Store.Sequence), which gives them
//     a gap-free position in commit order; one process at a time does
//     this, serialized by the database;
//   - for each subscriber, it hands the events past the subscriber's
//     cursor to its Handle in a transaction that also moves the cursor
//     (Store.Consume): what Handle writes in that transaction (jobs, rows)
//     commits with the cursor or not at all. On PostgreSQL a cursor row is
//     locked while it is consumed, so two processes never hand the same
//     event to one subscriber.
//
// The two are one transaction when they can be: the events the sequencer
// numbers go to every subscriber that is not failing in the transaction
// that numbers them (Store.SequenceConsumeAll); the subscribers' own
// loops consume what that leaves (a failing subscriber, a full batch,
// events numbered by another process).
//
// Subscribers run independently: one that fails is retried with backoff
// while the others go on. A subscriber that is new starts at the end of
// the feed. Within a process the dispatcher is woken as soon as a local
// transaction that appended an event commits (meta.WakeOnAppend);
// changes made by other processes are found by polling.
package feed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/meta"
)

// Subscriber reacts to the events of the feed.
type Subscriber interface {
	// Name identifies the subscriber's cursor; it must not change.
	Name() string
	// Handle reacts to events, oldest first, inside tx: everything it
	// writes must go through tx (and the stores' methods that take one),
	// so that it commits with the cursor. An error rolls the batch back;
	// it comes again after a backoff. Handle may be called again with the
	// same events if the transaction loses a race, so it must keep no
	// state of its own about them. An event it cannot use is skipped, not
	// an error: an error stops this subscriber until it is fixed.
	Handle(ctx context.Context, tx meta.Tx, events []meta.Event) error
}

// Store is the outbox as the dispatcher uses it (meta.Outbox).
type Store interface {
	Sequence(ctx context.Context, n int) (int, error)
	Subscribe(ctx context.Context, name string) error
	Consume(ctx context.Context, name string, n int, fn func(ctx context.Context, tx meta.Tx, events []meta.Event) error) (int, error)
	SequenceConsumeAll(ctx context.Context, n int, cs []meta.Consumer) (numbered int, handled []int, errs []error, err error)
}

// Options tune a Dispatcher.
type Options struct {
	// Poll is how often the feed is read for changes made by other
	// processes (250 ms).
	Poll time.Duration
	// Batch is how many events one transaction handles (200).
	Batch int
	// Heartbeat is how often each subscriber's cursor is marked alive
	// (1 minute); see meta.Outbox.Subscribe.
	Heartbeat time.Duration
	// Wake, if set, is signalled after a local commit that appended an
	// event (meta.WakeOnAppend).
	Wake <-chan struct{}
	// Backoff is the pause after a subscriber's failures-th consecutive
	// failure (from 1 s, doubling, up to 1 minute).
	Backoff func(failures int) time.Duration
	Logger  *slog.Logger
}

// Dispatcher hands the feed's events to its subscribers.
type Dispatcher struct {
	store Store
	subs  []Subscriber
	opts  Options
	log   *slog.Logger
	wake  chan struct{}
	// failing marks, per subscriber, one whose last batch failed: it is
	// left out of the shared transaction until it recovers alone.
	failing []atomic.Bool
}

// New returns a dispatcher of the feed to subs. Call Run to start it.
func New(store Store, subs []Subscriber, opts Options) *Dispatcher {
	if opts.Poll <= 0 {
		opts.Poll = 250 * time.Millisecond
	}
	if opts.Batch <= 0 {
		opts.Batch = 200
	}
	if opts.Heartbeat <= 0 {
		opts.Heartbeat = time.Minute
	}
	if opts.Backoff == nil {
		opts.Backoff = defaultBackoff
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Dispatcher{store: store, subs: subs, opts: opts, log: opts.Logger.With("component", "feed"), wake: make(chan struct{}, 1),
		failing: make([]atomic.Bool, len(subs))}
}

func defaultBackoff(failures int) time.Duration {
	d := time.Second << min(max(failures-1, 0), 6)
	return min(d, time.Minute)
}

// Wake makes the dispatcher read the feed now rather than at its next
// poll. It never blocks.
func (d *Dispatcher) Wake() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Subscribe gives every subscriber that has no cursor yet one at the end
// of the feed, after every event committed so far, and marks the others
// alive. Run does it; a one-shot command that must not miss the events of
// its own changes calls it before making them, then Drain.
func (d *Dispatcher) Subscribe(ctx context.Context) error {
	if err := d.sequence(ctx); err != nil {
		return err
	}
	return d.touch(ctx)
}

// touch subscribes every subscriber: creates its cursor at the end, or
// marks it alive.
func (d *Dispatcher) touch(ctx context.Context) error {
	for _, s := range d.subs {
		if err := d.store.Subscribe(ctx, s.Name()); err != nil {
			return err
		}
	}
	return nil
}

// Drain numbers the committed events and hands every event to every
// subscriber until all have caught up, in the calling goroutine (for
// one-shot commands and tests). It stops at the first error. On
// PostgreSQL, a batch another process is handing to a subscriber at that
// moment is left to that process.
func (d *Dispatcher) Drain(ctx context.Context) error {
	if err := d.Subscribe(ctx); err != nil {
		return err
	}
	for _, s := range d.subs {
		for {
			n, err := d.consume(ctx, s)
			if err != nil {
				return fmt.Errorf("feed subscriber %s: %w", s.Name(), err)
			}
			if n < d.opts.Batch {
				break
			}
		}
	}
	return nil
}

// sequence numbers every committed event.
func (d *Dispatcher) sequence(ctx context.Context) error {
	for {
		n, err := d.store.Sequence(ctx, d.opts.Batch)
		if err != nil || n < d.opts.Batch {
			return err
		}
	}
}

// Run dispatches until ctx is done: it subscribes every subscriber,
// then numbers new events and runs one loop per subscriber. It returns
// nil after ctx is done.
func (d *Dispatcher) Run(ctx context.Context) error {
	for failures := 1; ; failures++ {
		err := d.Subscribe(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		d.log.Error("subscribe to the feed", "err", err)
		if !sleep(ctx, d.opts.Backoff(failures)) {
			return nil
		}
	}
	var wg sync.WaitGroup
	wakes := make([]chan struct{}, len(d.subs))
	for i, s := range d.subs {
		wakes[i] = make(chan struct{}, 1)
		wg.Go(func() { d.runSubscriber(ctx, i, s, wakes[i]) })
	}
	d.runSequencer(ctx, wakes)
	wg.Wait()
	return nil
}

// runSequencer numbers committed events whenever woken or polled, and
// hands them to the subscribers in the same transaction
// (sequenceTogether).
func (d *Dispatcher) runSequencer(ctx context.Context, wakes []chan struct{}) {
	poll := time.NewTicker(d.opts.Poll)
	defer poll.Stop()
	beat := time.NewTicker(d.opts.Heartbeat)
	defer beat.Stop()
	for {
		for {
			n, err := d.sequenceTogether(ctx, wakes)
			if err != nil {
				if ctx.Err() == nil {
					d.log.Error("number the feed's new events", "err", err)
				}
				break
			}
			if n < d.opts.Batch {
				break
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-d.wake:
		case <-d.opts.Wake:
		case <-poll.C:
		case <-beat.C:
			if err := d.touch(ctx); err != nil && ctx.Err() == nil {
				d.log.Warn("mark feed subscribers alive", "err", err)
			}
		}
	}
}

// sequenceTogether numbers a batch of new events and hands them to every
// subscriber in the same transaction (meta.Outbox.SequenceConsumeAll),
// and returns how many it numbered. It wakes the subscribers it did not
// serve to carry on alone: those failing, those whose batch failed now
// (they log it and back off), and those with more to read. If the shared
// transaction fails, the events are numbered on their own and every
// subscriber is woken.
func (d *Dispatcher) sequenceTogether(ctx context.Context, wakes []chan struct{}) (int, error) {
	var cs []meta.Consumer
	var idx, left []int
	for i, s := range d.subs {
		if d.failing[i].Load() {
			left = append(left, i)
			continue
		}
		cs = append(cs, meta.Consumer{Name: s.Name(), Fn: s.Handle})
		idx = append(idx, i)
	}
	n, handled, errs, err := d.store.SequenceConsumeAll(ctx, d.opts.Batch, cs)
	if err != nil {
		if ctx.Err() != nil {
			return 0, err
		}
		// Each subscriber is woken to consume alone, and logs its own
		// failures; this says why the shared transaction did not serve.
		d.log.Warn("number the feed's new events and hand them to the subscribers together; numbering alone", "err", err)
		if n, err = d.store.Sequence(ctx, d.opts.Batch); err != nil {
			return 0, err
		}
		left = append(left, idx...)
		idx = nil
	}
	if n == 0 {
		return 0, nil
	}
	for _, i := range left {
		signal(wakes[i])
	}
	for j, i := range idx {
		if errs[j] != nil || handled[j] == d.opts.Batch {
			signal(wakes[i])
		}
	}
	return n, nil
}

// runSubscriber hands the events past s's cursor to s whenever woken or
// polled (another process may have numbered events), backing off after
// failures. A failing subscriber is left out of consumeTogether until it
// recovers.
func (d *Dispatcher) runSubscriber(ctx context.Context, i int, s Subscriber, wake <-chan struct{}) {
	log := d.log.With("subscriber", s.Name())
	poll := time.NewTicker(d.opts.Poll)
	defer poll.Stop()
	failures := 0
	for ctx.Err() == nil {
		n, err := d.consume(ctx, s)
		switch {
		case err != nil && ctx.Err() != nil:
			return
		case err != nil:
			d.failing[i].Store(true)
			failures++
			pause := d.opts.Backoff(failures)
			log.Error("feed subscriber failed; its events wait", "err", err, "failures", failures, "retry_in", pause)
			if !sleep(ctx, pause) {
				return
			}
			continue
		case failures > 0:
			log.Info("feed subscriber recovered", "after_failures", failures)
			failures = 0
			d.failing[i].Store(false)
		}
		if n == d.opts.Batch {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-wake:
		case <-poll.C:
		}
	}
}

// consume hands one batch to s.
func (d *Dispatcher) consume(ctx context.Context, s Subscriber) (int, error) {
	n, err := d.store.Consume(ctx, s.Name(), d.opts.Batch, s.Handle)
	if err != nil {
		if errors.Is(err, meta.ErrNotSubscribed) {
			// Its cursor went (a database restored from an older backup):
			// start again at the end.
			if serr := d.store.Subscribe(ctx, s.Name()); serr != nil {
				return 0, errors.Join(err, serr)
			}
		}
		return 0, err
	}
	return n, nil
}

func signal(c chan<- struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// sleep waits for d or the end of ctx and reports whether ctx is still
// live.
func sleep(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}
