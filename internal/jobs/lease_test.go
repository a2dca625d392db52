package jobs_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// stuckStore's lease renewals hang until their context ends, as on a
// half-open database connection after a failover.
type stuckStore struct {
	meta.Jobs
	renewals atomic.Int32
}

func (s *stuckStore) ExtendJobLease(ctx context.Context, _ int64, _ string, _ time.Duration) error {
	s.renewals.Add(1)
	<-ctx.Done()
	return ctx.Err()
}

// TestWorkerCancelsHandlerOnStuckRenewal: when no renewal returns, the
// handler is cancelled by the time its lease may have run out (when
// another worker could take the job over), not when a renewal returns;
// and the worker records the outcome and goes on to claim again.
func TestWorkerCancelsHandlerOnStuckRenewal(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	const lease = 300 * time.Millisecond
	const guard = 10 * time.Second // a failing worker never cancels: do not hang
	enqueue(t, db, meta.Job{})
	type run struct {
		started, cancelled time.Time
		cause              error
	}
	runs := make(chan run, 10)
	store := &stuckStore{Jobs: db.Jobs()}
	start(t, jobs.New(store, "q", func(ctx context.Context, _ meta.Job) error {
		r := run{started: time.Now()}
		<-ctx.Done()
		r.cancelled, r.cause = time.Now(), context.Cause(ctx)
		runs <- r
		return ctx.Err()
	}, fast(jobs.Options{Lease: lease})))
	var first run
	select {
	case first = <-runs:
	case <-time.After(guard):
		t.Fatalf("handler not cancelled after %v, with %d renewals stuck; lease %v", guard, store.renewals.Load(), lease)
	}
	if !errors.Is(first.cause, meta.ErrJobLost) {
		t.Fatalf("handler cancelled with %v, want ErrJobLost", first.cause)
	}
	t.Logf("handler cancelled %v after it started (lease %v)", first.cancelled.Sub(first.started), lease)
	if took := first.cancelled.Sub(first.started); took > 3*lease {
		t.Errorf("handler cancelled %v after it started, want about the lease (%v)", took, lease)
	}
	// The interrupted job went back to the queue and ran again: the worker
	// did not hang on the stuck renewal.
	select {
	case <-runs:
	case <-time.After(guard):
		t.Fatal("the worker did not run the job again after it was interrupted")
	}
}
