// Package jobs runs the durable job queue of the metadata store: workers
// claim jobs with a lease, extend it while a handler runs, and complete,
// retry with backoff, or dead-letter them. Workers in any number of
// processes coordinate only through the database.
package jobs

import (
	"context"
	crand "crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"os"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/meta"
)

// Handler does the work of a job. A nil error completes the job; an error
// retries it with backoff until its MaxAttempts are spent, then moves it to
// the dead letter; an error wrapped by Permanent dead-letters it at once;
// an error made by Defer puts the job back, uncounted, until a given time.
// The context is cancelled when the worker shuts down or loses the lease.
// A job may run more than once (a worker can die after the work but before
// recording it), so handlers must be idempotent.
type Handler func(ctx context.Context, j meta.Job) error

// Store is the part of the metadata store a worker uses (*meta.DB).
type Store interface {
	ClaimJob(ctx context.Context, queue, owner string, lease time.Duration) (meta.Job, bool, error)
	CompleteJob(ctx context.Context, id int64, owner string) error
	RetryJob(ctx context.Context, id int64, owner string, runAt time.Time, errText string) error
	KillJob(ctx context.Context, id int64, owner string, errText string) error
	ExtendJobLease(ctx context.Context, id int64, owner string, lease time.Duration) error
	DeferJob(ctx context.Context, id int64, owner string, runAt time.Time, reason string) error
}

// Chainer is what a Store may do besides (*meta.DB's Jobs does): complete
// a job and, in the same write, claim for nextOwner the next ready job of
// its queue: of its ordering key first, else the queue's oldest pending
// job (false if none is ready, and for an empty nextOwner), after running
// also in that transaction. With a Chainer, a worker whose handler
// succeeded runs the next job right away, without a claim of its own or a
// wait for the next poll: the jobs of a busy key (the deliveries of one
// webhook) follow each other back to back, and so do the scans of a busy
// registry. And what a handler records about its success (OnComplete)
// commits with the completion.
type Chainer interface {
	CompleteJobClaimNext(ctx context.Context, id int64, owner, nextOwner string, lease time.Duration, also ...func(context.Context, meta.Tx) error) (meta.Job, bool, error)
}

// OnComplete asks the worker running the job whose handler got ctx to run
// fn in the transaction that completes the job, if the handler returns
// nil: what a handler records about a success (a delivery attempt)
// commits with the completion, one write instead of two. fn does not run
// if the handler fails. OnComplete reports false, and keeps nothing, when
// the worker's store cannot do that (it is not a Chainer) or ctx is not a
// handler's: the caller then writes on its own. An error of fn fails the
// completion, so the job runs again once its lease expires.
func OnComplete(ctx context.Context, fn func(context.Context, meta.Tx) error) bool {
	h, ok := ctx.Value(hooksKey{}).(*hooks)
	if !ok {
		return false
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.fns = append(h.fns, fn)
	return true
}

type hooksKey struct{}

// hooks are the functions a handler gave OnComplete.
type hooks struct {
	mu  sync.Mutex
	fns []func(context.Context, meta.Tx) error
}

func (h *hooks) take() []func(context.Context, meta.Tx) error {
	if h == nil {
		return nil
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	fns := h.fns
	h.fns = nil
	return fns
}

// A chain ends after maxChain jobs in a row, or once it has run for
// maxChainTime: the worker then claims again, and ClaimJob takes the
// oldest ready job of the queue (or one whose worker was lost), so that a
// busy key does not keep a worker from the older jobs of other keys.
const (
	maxChain     = 16
	maxChainTime = time.Second
)

type permanentError struct{ err error }

func (e permanentError) Error() string { return e.err.Error() }
func (e permanentError) Unwrap() error { return e.err }

// Permanent marks err as not worth retrying: the job goes to the dead
// letter at once. Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return permanentError{err}
}

// IsPermanent reports whether err, or an error it wraps, was marked by
// Permanent.
func IsPermanent(err error) bool {
	var p permanentError
	return errors.As(err, &p)
}

// deferError is a handler's "not now": see Defer.
type deferError struct {
	until  time.Time
	reason error
}

func (e deferError) Error() string {
	msg := "deferred until " + e.until.UTC().Format(time.RFC3339)
	if e.reason != nil {
		msg += ": " + e.reason.Error()
	}
	return msg
}

func (e deferError) Unwrap() error { return e.reason }

// Defer tells the worker that the job cannot run yet, for a reason that is
// not the job's failure (a paused destination, say): it goes back to the
// queue to run again from until, and the attempt is not counted, so no
// backoff grows and no attempt is spent however long the job is held. The
// job keeps its place in its ordering key. A job released while its
// handler ran (meta's ReleaseJobs) is ready at once instead.
func Defer(until time.Time, reason error) error {
	return deferError{until: until, reason: reason}
}

// Options tune a Worker. Zero values mean the defaults.
type Options struct {
	// Concurrency is how many jobs the worker runs at once (1).
	Concurrency int
	// Lease is how long a claim holds a job without renewal (30s). It is
	// extended every Lease/3 while the handler runs, each renewal given at
	// most Lease/3; a worker that dies holds its job for at most Lease
	// before another takes it over. A handler whose lease was not renewed
	// in time (a renewal failed, or hangs) is cancelled Lease/6 before the
	// lease could run out, whether or not the renewal ever returns.
	Lease time.Duration
	// PollInterval is how long an idle worker waits before looking for a
	// job again (500ms), unless Wake is called.
	PollInterval time.Duration
	// Backoff is the delay before retry number attempt+1 after attempt
	// failed (attempt counts from 1). Default: DefaultBackoff.
	Backoff func(attempt int) time.Duration
	// Logger receives the worker's logs (slog.Default()).
	Logger *slog.Logger
	// Owner names this worker in lease_owner (by default
	// ProcessOwnerPrefix and a random number). Each claim appends a
	// sequence number, so that two claims of one worker are never
	// mistaken for each other.
	Owner string
}

// DefaultBackoff is exponential from 1s, doubling per attempt, capped at
// 5m, with full jitter: a uniform delay between 0 and the bound, so that
// jobs failing together do not retry together.
func DefaultBackoff(attempt int) time.Duration {
	const base, ceiling = time.Second, 5 * time.Minute
	d := ceiling
	if attempt < 1 {
		attempt = 1
	}
	if attempt <= 20 {
		d = min(ceiling, base<<(attempt-1))
	}
	return rand.N(d + 1)
}

// reportTimeout bounds the recording of a job's outcome, which runs even
// when the worker is shutting down.
const reportTimeout = 10 * time.Second

// Worker claims and runs the jobs of one queue.
type Worker struct {
	store   Store
	queue   string
	handler Handler
	opts    Options
	log     *slog.Logger
	wake    chan struct{}
	claims  atomic.Uint64
	chainer Chainer // the store, if it chains; nil otherwise
}

// New returns a worker for queue. Call Run to start it.
func New(store Store, queue string, h Handler, opts Options) *Worker {
	if opts.Concurrency <= 0 {
		opts.Concurrency = 1
	}
	if opts.Lease <= 0 {
		opts.Lease = 30 * time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 500 * time.Millisecond
	}
	if opts.Backoff == nil {
		opts.Backoff = DefaultBackoff
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.Owner == "" {
		opts.Owner = defaultOwner()
	}
	chainer, _ := store.(Chainer)
	return &Worker{
		chainer: chainer,
		store:   store,
		queue:   queue,
		handler: h,
		opts:    opts,
		log:     opts.Logger.With("queue", queue, "worker", opts.Owner),
		wake:    make(chan struct{}, 1),
	}
}

func defaultOwner() string {
	return fmt.Sprintf("%s%08x", processPrefix, rand.Uint32())
}

// processPrefix begins the default owners of this process's workers. It
// is set once, when the package is initialized, and never changed.
var processPrefix = OwnerPrefix(hostname(), os.Getpid(), NewProcessNonce())

func hostname() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "berth"
	}
	return host
}

// ProcessOwnerPrefix is how the default owners of this process's workers
// begin (OwnerPrefix of its hostname, its PID and a nonce drawn when the
// process started): the lease owners a stopping process may release
// (meta's ExpireLeasesOf), and no other process's.
func ProcessOwnerPrefix() string {
	return processPrefix
}

// NewProcessNonce draws the random part of a process's owner prefix from
// crypto/rand: 26 characters of base32 (128 bits).
func NewProcessNonce() string {
	return crand.Text()
}

// OwnerPrefix is how the lease owners of a process's workers begin:
// host-pid-nonce/. The hostname and PID say which process holds a job, for
// whoever reads lease_owner; they alone do not tell processes apart
// (containers sharing the host's network share its hostname and each run
// as PID 1), nor do they end unambiguously (host berth's PID 1 would begin
// every owner on host berth-1). The nonce does, and the slash, which no
// hostname or nonce contains, ends the prefix: no process's prefix begins
// another's owners.
func OwnerPrefix(host string, pid int, nonce string) string {
	return fmt.Sprintf("%s-%d-%s/", host, pid, nonce)
}

// Wake nudges an idle worker to look for jobs now rather than at its next
// poll, for example after enqueuing in the same process. It never blocks.
func (w *Worker) Wake() {
	select {
	case w.wake <- struct{}{}:
	default:
	}
}

// Run claims and runs jobs until ctx is done, then waits for its running
// handlers (whose contexts are cancelled) to return and records their
// outcome. It returns nil after a shutdown; call it once.
func (w *Worker) Run(ctx context.Context) error {
	if w.handler == nil {
		return errors.New("jobs: nil handler")
	}
	w.log.Info("job worker started", "concurrency", w.opts.Concurrency)
	var wg sync.WaitGroup
	for range w.opts.Concurrency {
		wg.Go(func() { w.loop(ctx) })
	}
	wg.Wait()
	w.log.Info("job worker stopped")
	return nil
}

// newOwner names a claim: the worker's owner and a sequence number.
func (w *Worker) newOwner() string {
	return fmt.Sprintf("%s/%d", w.opts.Owner, w.claims.Add(1))
}

func (w *Worker) loop(ctx context.Context) {
	for ctx.Err() == nil {
		owner := w.newOwner()
		claimed := time.Now() // the lease runs from no earlier than this
		j, ok, err := w.store.ClaimJob(ctx, w.queue, owner, w.opts.Lease)
		switch {
		case err != nil:
			if ctx.Err() == nil {
				w.log.Error("claim job", "err", err)
			}
			w.idle(ctx)
		case !ok:
			w.idle(ctx)
		default:
			w.Wake() // there may be more: let an idle sibling look too
			w.runChain(ctx, j, owner, claimed)
		}
	}
}

// runChain runs a claimed job and then, while the store hands on a next
// job (Chainer), that job, up to maxChain jobs or maxChainTime.
// claimed is when the claim of j began: its lease runs from no earlier.
func (w *Worker) runChain(ctx context.Context, j meta.Job, owner string, claimed time.Time) {
	start := time.Now()
	for n := 1; ; n++ {
		next, nextOwner, nextClaimed, ok := w.process(ctx, j, owner, claimed, n < maxChain && time.Since(start) < maxChainTime)
		if !ok {
			return
		}
		if ctx.Err() != nil {
			w.unclaim(ctx, next, nextOwner)
			return
		}
		j, owner, claimed = next, nextOwner, nextClaimed
	}
}

// unclaim puts back a job chained to a worker that stopped before it ran,
// without counting the attempt its claim counted.
func (w *Worker) unclaim(ctx context.Context, j meta.Job, owner string) {
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer cancel()
	if err := w.store.DeferJob(rctx, j.ID, owner, time.Now(), "the worker stopped before the job ran"); err != nil {
		w.log.Warn("put back a job claimed as the worker stopped; it runs again when its lease expires", "job", j.ID, "err", err)
	}
}

// idle waits for a poll interval, a Wake, or the end of ctx.
func (w *Worker) idle(ctx context.Context) {
	t := time.NewTimer(w.opts.PollInterval)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-w.wake:
	case <-t.C:
	}
}

// process runs the handler of a claimed job under a renewed lease and
// records the outcome. When the handler succeeded, chain allows it and the
// worker is not stopping, the store (a Chainer) completes the job and
// claims the next one of its key, which process returns with its owner
// and when its claim began. claimed is when the claim of j began.
func (w *Worker) process(ctx context.Context, j meta.Job, owner string, claimed time.Time, chain bool) (next meta.Job, nextOwner string, nextClaimed time.Time, ok bool) {
	log := w.log.With("job", j.ID, "attempt", j.Attempts)
	if j.OrderingKey != "" {
		log = log.With("key", j.OrderingKey)
	}
	jctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var h *hooks
	if w.chainer != nil {
		h = &hooks{}
		jctx = context.WithValue(jctx, hooksKey{}, h)
	}
	// Cancelling lctx ends the renewals, and one under way, when the
	// handler returns: a renewal stuck on the database does not hold up
	// the outcome.
	lctx, stopLease := context.WithCancel(jctx)
	defer stopLease()
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		w.keepLease(lctx, j.ID, owner, claimed, cancel, log)
	}()
	start := time.Now()
	err := w.call(jctx, j)
	stopLease()
	<-renewed

	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), reportTimeout)
	defer rcancel()
	var what string
	var rerr error
	var deferred deferError
	also := h.take()
	if err == nil && chain && w.chainer != nil && ctx.Err() == nil {
		nextOwner = w.newOwner()
	}
	switch {
	case err == nil && (nextOwner != "" || len(also) > 0):
		what = "completed"
		nextClaimed = time.Now()
		next, ok, rerr = w.chainer.CompleteJobClaimNext(rctx, j.ID, owner, nextOwner, w.opts.Lease, also...)
		if ok {
			log = log.With("next", next.ID)
		}
	case err == nil:
		what, rerr = "completed", w.store.CompleteJob(rctx, j.ID, owner)
	case errors.As(err, &deferred):
		// The handler's own answer, even if the worker is stopping.
		log = log.With("until", deferred.until)
		what, rerr = "deferred", w.store.DeferJob(rctx, j.ID, owner, deferred.until, err.Error())
	case jctx.Err() != nil:
		// Shutdown or a lost lease interrupted the handler: not the job's
		// fault, so it is not dead-lettered; run it again soon. (If the
		// lease is lost the store refuses, and the new holder runs it.)
		err = fmt.Errorf("interrupted (%w): %w", context.Cause(jctx), err)
		what, rerr = "interrupted", w.store.RetryJob(rctx, j.ID, owner, time.Now(), err.Error())
	case IsPermanent(err) || j.Attempts >= j.MaxAttempts:
		what, rerr = "dead-lettered", w.store.KillJob(rctx, j.ID, owner, err.Error())
	default:
		next := w.opts.Backoff(j.Attempts)
		log = log.With("retry_in", next)
		what, rerr = "retried", w.store.RetryJob(rctx, j.ID, owner, time.Now().Add(next), err.Error())
	}
	log = log.With("took", time.Since(start))
	switch {
	case errors.Is(rerr, meta.ErrJobLost):
		log.Warn("job lease lost before its outcome was recorded; another worker owns it", "outcome", what, "err", err)
	case rerr != nil:
		log.Error("record job outcome; the job runs again when its lease expires", "outcome", what, "err", err, "record_err", rerr)
	case err == nil:
		log.Debug("job " + what)
	case what == "deferred":
		log.Debug("job "+what, "reason", err)
	case what == "dead-lettered":
		log.Error("job "+what, "err", err)
	default:
		log.Warn("job "+what, "err", err)
	}
	return next, nextOwner, nextClaimed, ok && rerr == nil
}

// call runs the handler, turning a panic into an error.
func (w *Worker) call(ctx context.Context, j meta.Job) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v\n%s", r, debug.Stack())
		}
	}()
	return w.handler(ctx, j)
}

// keepLease extends the lease every Lease/3 until ctx ends, giving each
// renewal at most Lease/3. It cancels the handler when the store says the
// lease is lost, or by a timer, independent of any renewal under way,
// Lease/6 before the lease could run out: Lease after the start of the
// last renewal that succeeded (or of the claim), since the store counts
// the lease from a time it takes during the call. A renewal that hangs
// (a half-open connection after a database failover) thus cannot keep
// the handler running once another worker may have taken the job over.
func (w *Worker) keepLease(ctx context.Context, id int64, owner string, claimed time.Time, cancel context.CancelCauseFunc, log *slog.Logger) {
	lease := w.opts.Lease
	margin := lease / 6
	var lastErr atomic.Pointer[error]
	expire := time.AfterFunc(time.Until(claimed.Add(lease-margin)), func() {
		cause := fmt.Errorf("%w: not renewed within %v", meta.ErrJobLost, lease-margin)
		if p := lastErr.Load(); p != nil {
			cause = fmt.Errorf("%w: not renewed within %v: %w", meta.ErrJobLost, lease-margin, *p)
		}
		log.Error("job lease could not be renewed in time; cancelling the handler", "err", cause)
		cancel(cause)
	})
	defer expire.Stop()
	t := time.NewTicker(lease / 3)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		begun := time.Now()
		cctx, ccancel := context.WithTimeout(ctx, lease/3)
		err := w.store.ExtendJobLease(cctx, id, owner, lease)
		ccancel()
		switch {
		case ctx.Err() != nil:
			return
		case err == nil:
			// If the timer fired meanwhile, the handler is cancelled and
			// ctx ends: the next select returns.
			expire.Reset(time.Until(begun.Add(lease - margin)))
		case errors.Is(err, meta.ErrJobLost):
			expire.Stop()
			log.Warn("job lease lost; cancelling the handler")
			cancel(meta.ErrJobLost)
			return
		default:
			lastErr.Store(&err)
			log.Warn("extend job lease", "err", err)
		}
	}
}
