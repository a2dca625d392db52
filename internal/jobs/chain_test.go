package jobs_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// countingStore counts a worker's claims and completions; it is not a
// jobs.Chainer (chainingStore is).
type countingStore struct {
	jobs.Store
	mu        sync.Mutex
	claims    int             // jobs claimed by ClaimJob
	chains    int             // CompleteJobClaimNext calls
	chained   int             // jobs handed on by CompleteJobClaimNext
	completes int             // CompleteJob calls
	completed map[int64]int   // completions per job, by either call
	order     []int64         // jobs in the order they were completed
	owners    map[string]bool // claim owners seen
}

func newCountingStore(s jobs.Store) *countingStore {
	return &countingStore{Store: s, completed: map[int64]int{}, owners: map[string]bool{}}
}

func (s *countingStore) ClaimJob(ctx context.Context, queue, owner string, lease time.Duration) (meta.Job, bool, error) {
	j, ok, err := s.Store.ClaimJob(ctx, queue, owner, lease)
	if ok {
		s.mu.Lock()
		s.claims++
		s.owners[owner] = true
		s.mu.Unlock()
	}
	return j, ok, err
}

func (s *countingStore) CompleteJob(ctx context.Context, id int64, owner string) error {
	err := s.Store.CompleteJob(ctx, id, owner)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.completes++
	if err == nil {
		s.completed[id]++
		s.order = append(s.order, id)
	}
	return err
}

// waitCompleted waits until the store has seen n completions: the jobs
// table says done a moment before the call that completed them returns.
func (s *countingStore) waitCompleted(t *testing.T, n int) {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		s.mu.Lock()
		got := len(s.order)
		s.mu.Unlock()
		if got >= n {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d jobs completed", got, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

type chainingStore struct {
	*countingStore
	afterChain func() // if set, called after each CompleteJobClaimNext
}

func (s chainingStore) CompleteJobClaimNext(ctx context.Context, id int64, owner, nextOwner string, lease time.Duration, also ...func(context.Context, meta.Tx) error) (meta.Job, bool, error) {
	j, ok, err := s.Store.(jobs.Chainer).CompleteJobClaimNext(ctx, id, owner, nextOwner, lease, also...)
	if s.afterChain != nil {
		s.afterChain()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.chains++
	if err == nil {
		s.completed[id]++
		s.order = append(s.order, id)
	}
	if ok {
		s.chained++
		if s.owners[nextOwner] {
			panic(fmt.Sprintf("claim owner %s used twice", nextOwner))
		}
		s.owners[nextOwner] = true
	}
	return j, ok, err
}

// TestWorkerChainsKey: with a Chainer store, a worker runs the jobs of a
// key back to back, each handed on by the completion of the one before
// rather than claimed, in id order, each completed exactly once, and the
// job of another key after them.
func TestWorkerChainsKey(t *testing.T) {
	forDialects(t, func(t *testing.T, d string) {
		db := metatest.Open(t, d)
		const n = 10
		var want []int64
		for range n {
			want = append(want, enqueue(t, db, meta.Job{OrderingKey: "k"}))
		}
		other := enqueue(t, db, meta.Job{OrderingKey: "other"})
		store := chainingStore{countingStore: newCountingStore(db.Jobs())}
		var mu sync.Mutex
		var ran []int64
		start(t, jobs.New(store, "q", func(_ context.Context, j meta.Job) error {
			mu.Lock()
			ran = append(ran, j.ID)
			mu.Unlock()
			if j.Attempts != 1 {
				t.Errorf("job %d ran with attempt %d", j.ID, j.Attempts)
			}
			return nil
		}, fast(jobs.Options{PollInterval: time.Hour})))
		waitFor(t, db, meta.JobDone, n+1)
		store.waitCompleted(t, n+1)
		want = append(want, other)
		mu.Lock()
		defer mu.Unlock()
		store.mu.Lock()
		defer store.mu.Unlock()
		if fmt.Sprint(ran) != fmt.Sprint(want) {
			t.Errorf("ran %v, want %v", ran, want)
		}
		if fmt.Sprint(store.order) != fmt.Sprint(want) {
			t.Errorf("completed %v, want %v", store.order, want)
		}
		for _, id := range want {
			if store.completed[id] != 1 {
				t.Errorf("job %d completed %d times", id, store.completed[id])
			}
		}
		// One claim starts the chain of k (more only if it ran past
		// maxChainTime on a slow machine), one claims other.
		if store.chained == 0 || store.claims+store.chained != n+1 || store.completes != 0 || store.chains != n+1 {
			t.Errorf("%d claims, %d chained of %d chain calls, %d plain completes; want %d jobs handed on and no plain completes",
				store.claims, store.chained, store.chains, store.completes, n-1)
		}
	})
}

// TestWorkerChainsQueue: jobs without an ordering key (scans) are handed
// on too: a worker with a backlog claims once and completes each job with
// the claim of the queue's next, in id order, each exactly once.
func TestWorkerChainsQueue(t *testing.T) {
	forDialects(t, func(t *testing.T, d string) {
		db := metatest.Open(t, d)
		const n = 10
		var want []int64
		for range n {
			want = append(want, enqueue(t, db, meta.Job{}))
		}
		store := chainingStore{countingStore: newCountingStore(db.Jobs())}
		start(t, jobs.New(store, "q", func(context.Context, meta.Job) error { return nil }, fast(jobs.Options{PollInterval: time.Hour})))
		waitFor(t, db, meta.JobDone, n)
		store.waitCompleted(t, n)
		store.mu.Lock()
		defer store.mu.Unlock()
		if fmt.Sprint(store.order) != fmt.Sprint(want) {
			t.Errorf("completed %v, want %v", store.order, want)
		}
		for _, id := range want {
			if store.completed[id] != 1 {
				t.Errorf("job %d completed %d times", id, store.completed[id])
			}
		}
		// One claim starts the chain; the old worker claimed all ten. A
		// chain that ran past maxChainTime on a slow machine ends with a
		// plain complete, and the next job is claimed afresh.
		if store.chained == 0 || store.claims+store.chained != n || store.completes > store.claims {
			t.Errorf("%d claims, %d chained, %d plain completes; want one claim and %d handed on", store.claims, store.chained, store.completes, n-1)
		}
	})
}

// TestWorkerNoChainOnShutdown: a worker that is stopping completes a job
// without claiming the next of its key, which stays pending with no
// attempt spent.
func TestWorkerNoChainOnShutdown(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	first := enqueue(t, db, meta.Job{OrderingKey: "k"})
	second := enqueue(t, db, meta.Job{OrderingKey: "k"})
	store := chainingStore{countingStore: newCountingStore(db.Jobs())}
	ctx, cancel := context.WithCancel(context.Background())
	w := jobs.New(store, "q", func(_ context.Context, j meta.Job) error {
		if j.ID != first {
			t.Errorf("ran job %d after shutdown", j.ID)
		}
		cancel()
		return nil
	}, fast(jobs.Options{}))
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if store.chains != 0 || store.completes != 1 || store.completed[first] != 1 {
		t.Errorf("%d chain calls, %d completes (%v); want one plain complete of job %d", store.chains, store.completes, store.completed, first)
	}
	assertReadyUnattempted(t, db, second)
}

// TestWorkerWithoutChainer: a store that does not chain gets a claim and a
// complete per job, in order.
func TestWorkerWithoutChainer(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	var want []int64
	for range 5 {
		want = append(want, enqueue(t, db, meta.Job{OrderingKey: "k"}))
	}
	store := newCountingStore(db.Jobs())
	start(t, jobs.New(store, "q", func(context.Context, meta.Job) error { return nil }, fast(jobs.Options{})))
	waitFor(t, db, meta.JobDone, len(want))
	store.waitCompleted(t, len(want))
	store.mu.Lock()
	defer store.mu.Unlock()
	if fmt.Sprint(store.order) != fmt.Sprint(want) || store.claims != len(want) || store.completes != len(want) {
		t.Errorf("completed %v after %d claims and %d completes; want %v, one each", store.order, store.claims, store.completes, want)
	}
}

// TestWorkerPutsBackChainedJobOnShutdown: a job handed on to a worker that
// stops before running it goes back to pending, its attempt not counted.
func TestWorkerPutsBackChainedJobOnShutdown(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	first := enqueue(t, db, meta.Job{OrderingKey: "k"})
	second := enqueue(t, db, meta.Job{OrderingKey: "k"})
	ctx, cancel := context.WithCancel(context.Background())
	store := chainingStore{countingStore: newCountingStore(db.Jobs()), afterChain: cancel}
	w := jobs.New(store, "q", func(_ context.Context, j meta.Job) error {
		if j.ID != first {
			t.Errorf("ran job %d after shutdown", j.ID)
		}
		return nil
	}, fast(jobs.Options{}))
	if err := w.Run(ctx); err != nil {
		t.Fatal(err)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if store.chained != 1 {
		t.Fatalf("%d jobs handed on, want 1", store.chained)
	}
	assertReadyUnattempted(t, db, second)
}

// assertReadyUnattempted checks that id is the only pending job of queue
// q, ready now, with no attempt spent.
func assertReadyUnattempted(t *testing.T, db *meta.DB, id int64) {
	t.Helper()
	js, err := db.Jobs().Jobs(context.Background(), "q", meta.JobPending, 10)
	if err != nil || len(js) != 1 || js[0].ID != id || js[0].Attempts != 0 || js[0].RunAt.After(time.Now()) {
		t.Fatalf("pending jobs = %+v, %v; want job %d ready with no attempt", js, err, id)
	}
}

// TestWorkerOnComplete: what a handler gives OnComplete commits with the
// job's completion (with a chain or not), never after a failure; without a
// Chainer store OnComplete says no.
func TestWorkerOnComplete(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	side := func(ctx context.Context, tx meta.Tx) error {
		_, err := db.Jobs().EnqueueIn(ctx, tx, meta.Job{Queue: "side"})
		return err
	}
	keyed := enqueue(t, db, meta.Job{OrderingKey: "k"})
	enqueue(t, db, meta.Job{OrderingKey: "k"})
	enqueue(t, db, meta.Job{})
	failing := enqueue(t, db, meta.Job{MaxAttempts: 1})
	store := chainingStore{countingStore: newCountingStore(db.Jobs())}
	start(t, jobs.New(store, "q", func(ctx context.Context, j meta.Job) error {
		if !jobs.OnComplete(ctx, side) {
			t.Error("OnComplete refused with a Chainer store")
		}
		if j.ID == failing {
			return jobs.Permanent(fmt.Errorf("no"))
		}
		return nil
	}, fast(jobs.Options{})))
	waitFor(t, db, meta.JobDone, 3)
	waitFor(t, db, meta.JobDead, 1)
	store.waitCompleted(t, 3)
	js, err := db.Jobs().Jobs(context.Background(), "side", "", 10)
	if err != nil || len(js) != 3 {
		t.Fatalf("side jobs = %d, %v; want 3, one per job completed", len(js), err)
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if store.completes != 0 || store.completed[keyed] != 1 {
		t.Errorf("%d plain completes, job %d completed %d times; want every completion through the Chainer", store.completes, keyed, store.completed[keyed])
	}
	if jobs.OnComplete(context.Background(), side) {
		t.Error("OnComplete accepted outside a handler")
	}
	plain := metatest.Open(t, "sqlite")
	id, err := plain.Jobs().EnqueueJob(context.Background(), meta.Job{Queue: "q"})
	if err != nil {
		t.Fatal(err)
	}
	refused := make(chan bool, 1)
	start(t, jobs.New(newCountingStore(plain.Jobs()), "q", func(ctx context.Context, j meta.Job) error {
		if j.ID == id {
			refused <- !jobs.OnComplete(ctx, side)
		}
		return nil
	}, fast(jobs.Options{})))
	select {
	case ok := <-refused:
		if !ok {
			t.Error("OnComplete accepted with a store that is not a Chainer")
		}
	case <-time.After(wait):
		t.Fatal("job did not run")
	}
}
