package jobs_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// wait is how long a test waits for an outcome before failing: a guard
// against hanging, never an assertion about speed.
const wait = 60 * time.Second

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// fast are options for tests: short polls, short fixed backoff.
func fast(o jobs.Options) jobs.Options {
	if o.PollInterval == 0 {
		o.PollInterval = 10 * time.Millisecond
	}
	if o.Backoff == nil {
		o.Backoff = func(int) time.Duration { return 10 * time.Millisecond }
	}
	if o.Logger == nil {
		o.Logger = quiet()
	}
	return o
}

// start runs w until the test ends, then checks that Run returned.
func start(t *testing.T, w *jobs.Worker) context.CancelFunc {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(wait):
			t.Error("Run did not return after cancellation")
		}
	})
	return cancel
}

func enqueue(t *testing.T, db *meta.DB, j meta.Job) int64 {
	t.Helper()
	if j.Queue == "" {
		j.Queue = "q"
	}
	id, err := db.Jobs().EnqueueJob(context.Background(), j)
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	return id
}

// waitFor polls the queue until n jobs have the status.
func waitFor(t *testing.T, db *meta.DB, status string, n int) []meta.Job {
	t.Helper()
	deadline := time.Now().Add(wait)
	for {
		js, err := db.Jobs().Jobs(context.Background(), "q", status, 10000)
		if err != nil {
			t.Fatal(err)
		}
		if len(js) >= n {
			return js
		}
		if time.Now().After(deadline) {
			all, _ := db.Jobs().Jobs(context.Background(), "q", "", 10000)
			t.Fatalf("%d of %d jobs %s; jobs: %+v", len(js), n, status, all)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func forDialects(t *testing.T, fn func(t *testing.T, d string)) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) { fn(t, d) })
	}
}

func TestWorkerRunsJobs(t *testing.T) {
	forDialects(t, func(t *testing.T, d string) {
		db := metatest.Open(t, d)
		var got sync.Map
		w := jobs.New(db.Jobs(), "q", func(_ context.Context, j meta.Job) error {
			var p struct{ N int }
			if err := json.Unmarshal(j.Payload, &p); err != nil {
				return jobs.Permanent(err)
			}
			got.Store(p.N, j.Attempts)
			return nil
		}, fast(jobs.Options{Concurrency: 3}))
		start(t, w)
		for i := range 10 {
			enqueue(t, db, meta.Job{Payload: json.RawMessage(fmt.Sprintf(`{"N":%d}`, i))})
		}
		w.Wake()
		waitFor(t, db, meta.JobDone, 10)
		for i := range 10 {
			if a, ok := got.Load(i); !ok || a != 1 {
				t.Errorf("job %d: ran %v, attempts %v", i, ok, a)
			}
		}
	})
}

func TestWorkerRetriesWithBackoff(t *testing.T) {
	forDialects(t, func(t *testing.T, d string) {
		db := metatest.Open(t, d)
		var calls atomic.Int32
		var mu sync.Mutex
		var backoffs []int
		w := jobs.New(db.Jobs(), "q", func(context.Context, meta.Job) error {
			if calls.Add(1) < 3 {
				return errors.New("receiver down")
			}
			return nil
		}, fast(jobs.Options{Backoff: func(attempt int) time.Duration {
			mu.Lock()
			defer mu.Unlock()
			backoffs = append(backoffs, attempt)
			return 20 * time.Millisecond
		}}))
		id := enqueue(t, db, meta.Job{})
		start(t, w)
		j := waitFor(t, db, meta.JobDone, 1)[0]
		if j.ID != id || j.Attempts != 3 || j.LastError != "receiver down" {
			t.Fatalf("job = %+v", j)
		}
		mu.Lock()
		defer mu.Unlock()
		if fmt.Sprint(backoffs) != "[1 2]" {
			t.Fatalf("backoff called for attempts %v, want [1 2]", backoffs)
		}
	})
}

func TestWorkerDeadLetter(t *testing.T) {
	forDialects(t, func(t *testing.T, d string) {
		db := metatest.Open(t, d)
		var heal atomic.Bool
		w := jobs.New(db.Jobs(), "q", func(_ context.Context, j meta.Job) error {
			switch {
			case heal.Load():
				return nil
			case string(j.Payload) == `"permanent"`:
				return fmt.Errorf("bad request: %w", jobs.Permanent(errors.New("410 gone")))
			case string(j.Payload) == `"panic"`:
				panic("handler bug")
			}
			return errors.New("still failing")
		}, fast(jobs.Options{Concurrency: 2}))
		exhausted := enqueue(t, db, meta.Job{MaxAttempts: 3, Payload: json.RawMessage(`"flaky"`)})
		permanent := enqueue(t, db, meta.Job{MaxAttempts: 3, Payload: json.RawMessage(`"permanent"`)})
		panicky := enqueue(t, db, meta.Job{MaxAttempts: 2, Payload: json.RawMessage(`"panic"`)})
		start(t, w)
		dead := map[int64]meta.Job{}
		for _, j := range waitFor(t, db, meta.JobDead, 3) {
			dead[j.ID] = j
		}
		if j := dead[exhausted]; j.Attempts != 3 || j.LastError != "still failing" {
			t.Errorf("exhausted job = %+v", j)
		}
		if j := dead[permanent]; j.Attempts != 1 || j.LastError != "bad request: 410 gone" {
			t.Errorf("permanently failed job = %+v", j)
		}
		if j := dead[panicky]; j.Attempts != 2 || !strings.Contains(j.LastError, "handler panic: handler bug") {
			t.Errorf("panicking job = %+v", j)
		}
		heal.Store(true)
		if err := db.Jobs().RequeueDeadJob(context.Background(), permanent); err != nil {
			t.Fatal(err)
		}
		w.Wake()
		if j := waitFor(t, db, meta.JobDone, 1)[0]; j.Attempts != 1 || j.ID <= panicky {
			t.Errorf("requeued job = %+v", j)
		}
	})
}

// TestWorkerDefer: a deferred job runs again at the time its handler
// gave, spending no attempt and growing no backoff however often it is
// deferred (more often than its MaxAttempts here), and holds the younger
// jobs of its ordering key meanwhile; a release makes it ready at once.
func TestWorkerDefer(t *testing.T) {
	forDialects(t, func(t *testing.T, d string) {
		db := metatest.Open(t, d)
		var runs atomic.Int32
		var hold atomic.Bool
		var order []string
		var mu sync.Mutex
		paused := errors.New("destination paused")
		w := jobs.New(db.Jobs(), "q", func(_ context.Context, j meta.Job) error {
			if string(j.Payload) == `"first"` {
				if hold.Load() {
					return jobs.Defer(time.Now().Add(time.Hour), paused)
				}
				if runs.Add(1) <= 5 {
					return fmt.Errorf("wrapped: %w", jobs.Defer(time.Now().Add(20*time.Millisecond), paused))
				}
			}
			mu.Lock()
			order = append(order, string(j.Payload))
			mu.Unlock()
			return nil
		}, fast(jobs.Options{Concurrency: 2, Backoff: func(int) time.Duration {
			t.Error("backoff asked for a deferred job")
			return time.Hour
		}}))
		first := enqueue(t, db, meta.Job{OrderingKey: "k", MaxAttempts: 2, Payload: json.RawMessage(`"first"`)})
		enqueue(t, db, meta.Job{OrderingKey: "k", Payload: json.RawMessage(`"second"`)})
		start(t, w)
		done := waitFor(t, db, meta.JobDone, 2)
		if done[0].ID != first || done[0].Attempts != 1 || runs.Load() != 6 {
			t.Fatalf("done = %+v after %d runs of the first", done, runs.Load())
		}
		mu.Lock()
		if fmt.Sprint(order) != "[\"first\" \"second\"]" {
			t.Errorf("order = %v", order)
		}
		mu.Unlock()

		// Held for an hour, then released.
		hold.Store(true)
		held := enqueue(t, db, meta.Job{OrderingKey: "k2", Payload: json.RawMessage(`"first"`)})
		w.Wake()
		deadline := time.Now().Add(wait)
		for {
			js, _ := db.Jobs().Jobs(context.Background(), "q", meta.JobPending, 10)
			if len(js) == 1 && js[0].ID == held && js[0].RunAt.After(time.Now().Add(time.Minute)) {
				if js[0].Attempts != 0 || !strings.Contains(js[0].LastError, "destination paused") {
					t.Fatalf("held job = %+v", js[0])
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("job not held: %+v", js)
			}
			time.Sleep(5 * time.Millisecond)
		}
		hold.Store(false)
		if _, err := db.Jobs().ReleaseJobs(context.Background(), "q", "k2"); err != nil {
			t.Fatal(err)
		}
		if j := waitFor(t, db, meta.JobDone, 3); len(j) != 3 || j[2].ID != held || j[2].Attempts != 1 {
			t.Fatalf("released job = %+v", j)
		}
	})
}

func TestPermanent(t *testing.T) {
	base := errors.New("x")
	if jobs.Permanent(nil) != nil {
		t.Error("Permanent(nil) != nil")
	}
	err := fmt.Errorf("wrapped: %w", jobs.Permanent(base))
	if !jobs.IsPermanent(err) || !errors.Is(err, base) || err.Error() != "wrapped: x" {
		t.Errorf("Permanent does not wrap: %v", err)
	}
	if jobs.IsPermanent(base) {
		t.Error("plain error is permanent")
	}
}

func TestDefaultBackoff(t *testing.T) {
	for attempt, bound := range map[int]time.Duration{
		0: time.Second, 1: time.Second, 2: 2 * time.Second, 4: 8 * time.Second,
		9: 256 * time.Second, 10: 5 * time.Minute, 64: 5 * time.Minute, 1 << 30: 5 * time.Minute,
	} {
		var top time.Duration
		for range 200 {
			d := jobs.DefaultBackoff(attempt)
			if d < 0 || d > bound {
				t.Fatalf("DefaultBackoff(%d) = %v, outside [0, %v]", attempt, d, bound)
			}
			top = max(top, d)
		}
		if top < bound/2 {
			t.Errorf("DefaultBackoff(%d): largest of 200 draws %v; not jittered up to %v", attempt, top, bound)
		}
	}
}

// TestWorkerTakesOverCrashedJob: a worker claims a job and dies (it never
// reports); another worker runs it once the lease has expired, and the
// dead worker's late report is refused.
func TestWorkerTakesOverCrashedJob(t *testing.T) {
	forDialects(t, func(t *testing.T, d string) {
		ctx := context.Background()
		db := metatest.Open(t, d)
		id := enqueue(t, db, meta.Job{})
		if _, ok, err := db.Jobs().ClaimJob(ctx, "q", "crashed", 200*time.Millisecond); err != nil || !ok {
			t.Fatalf("claim: %v, %v", ok, err)
		}
		var runs atomic.Int32
		start(t, jobs.New(db.Jobs(), "q", func(context.Context, meta.Job) error {
			runs.Add(1)
			return nil
		}, fast(jobs.Options{})))
		j := waitFor(t, db, meta.JobDone, 1)[0]
		if j.ID != id || j.Attempts != 2 || runs.Load() != 1 {
			t.Fatalf("job = %+v after %d runs", j, runs.Load())
		}
		if err := db.Jobs().CompleteJob(ctx, id, "crashed"); !errors.Is(err, meta.ErrJobLost) {
			t.Fatalf("stale owner's complete = %v, want ErrJobLost", err)
		}
	})
}

// TestWorkerExtendsLease: a handler that runs for several leases keeps its
// job; a second worker polling all along never takes it over.
func TestWorkerExtendsLease(t *testing.T) {
	forDialects(t, func(t *testing.T, d string) {
		db := metatest.Open(t, d)
		const lease = 2 * time.Second // renewed every 667ms, each renewal given as long: slack for loaded CI machines
		var runs atomic.Int32
		h := func(ctx context.Context, _ meta.Job) error {
			runs.Add(1)
			select {
			case <-time.After(5 * lease / 2):
				return nil
			case <-ctx.Done():
				return context.Cause(ctx)
			}
		}
		enqueue(t, db, meta.Job{})
		start(t, jobs.New(db.Jobs(), "q", h, fast(jobs.Options{Lease: lease, Owner: "a"})))
		start(t, jobs.New(db.Jobs(), "q", h, fast(jobs.Options{Lease: lease, Owner: "b"})))
		j := waitFor(t, db, meta.JobDone, 1)[0]
		if j.Attempts != 1 || runs.Load() != 1 {
			t.Fatalf("job = %+v after %d runs", j, runs.Load())
		}
	})
}

// lossyStore loses every lease on its first extension.
type lossyStore struct{ meta.Jobs }

func (lossyStore) ExtendJobLease(context.Context, int64, string, time.Duration) error {
	return meta.ErrJobLost
}

func TestWorkerCancelsHandlerOnLostLease(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	cause := make(chan error, 1)
	enqueue(t, db, meta.Job{})
	start(t, jobs.New(lossyStore{db.Jobs()}, "q", func(ctx context.Context, _ meta.Job) error {
		<-ctx.Done()
		cause <- context.Cause(ctx)
		return ctx.Err()
	}, fast(jobs.Options{Lease: 150 * time.Millisecond})))
	select {
	case err := <-cause:
		if !errors.Is(err, meta.ErrJobLost) {
			t.Fatalf("handler cancelled with %v, want ErrJobLost", err)
		}
	case <-time.After(wait):
		t.Fatal("handler was not cancelled")
	}
}

// TestWorkerShutdown: cancelling Run cancels the running handler, and the
// interrupted job goes back to pending (not to the dead letter), ready to run.
func TestWorkerShutdown(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	id := enqueue(t, db, meta.Job{MaxAttempts: 1})
	started := make(chan struct{})
	w := jobs.New(db.Jobs(), "q", func(ctx context.Context, _ meta.Job) error {
		close(started)
		<-ctx.Done()
		return ctx.Err()
	}, fast(jobs.Options{}))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	<-started
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	j := waitFor(t, db, meta.JobPending, 1)[0]
	if j.ID != id || j.Attempts != 1 || !strings.Contains(j.LastError, "interrupted") || j.RunAt.After(time.Now()) {
		t.Fatalf("interrupted job = %+v", j)
	}
}

func TestWorkerWake(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	w := jobs.New(db.Jobs(), "q", func(context.Context, meta.Job) error { return nil },
		fast(jobs.Options{PollInterval: time.Hour}))
	start(t, w)
	time.Sleep(50 * time.Millisecond) // let it find the queue empty and sleep
	enqueue(t, db, meta.Job{})
	w.Wake()
	waitFor(t, db, meta.JobDone, 1)
}

type span struct {
	id         int64
	start, end int64 // ticks of a shared clock
}

// TestWorkerOrdering: with four workers on two store handles, the jobs of
// one key never overlap and run in enqueue order, while jobs of different
// keys do run at the same time.
func TestWorkerOrdering(t *testing.T) {
	forDialects(t, func(t *testing.T, d string) {
		dbA, dbB := openShared(t, d)
		var clock atomic.Int64
		var mu sync.Mutex
		spans := map[string][]span{}
		var running, overlap atomic.Int32
		h := func(_ context.Context, j meta.Job) error {
			if n := running.Add(1); n > 1 {
				overlap.Add(1)
			}
			s := span{id: j.ID, start: clock.Add(1)}
			time.Sleep(10 * time.Millisecond)
			s.end = clock.Add(1)
			running.Add(-1)
			mu.Lock()
			spans[j.OrderingKey] = append(spans[j.OrderingKey], s)
			mu.Unlock()
			return nil
		}
		keys := []string{"repo/a", "repo/b", "repo/c"}
		want := map[string][]int64{}
		for i := range 30 {
			k := keys[i%len(keys)]
			want[k] = append(want[k], enqueue(t, dbA, meta.Job{OrderingKey: k}))
		}
		for i, db := range []*meta.DB{dbA, dbB, dbA, dbB} {
			start(t, jobs.New(db.Jobs(), "q", h, fast(jobs.Options{Owner: fmt.Sprintf("w%d", i)})))
		}
		waitFor(t, dbA, meta.JobDone, 30)
		mu.Lock()
		defer mu.Unlock()
		for _, k := range keys {
			got := spans[k]
			var ids []int64
			for i, s := range got {
				ids = append(ids, s.id)
				if i > 0 && s.start < got[i-1].end {
					t.Errorf("key %s: job %d started (tick %d) before job %d ended (tick %d)", k, s.id, s.start, got[i-1].id, got[i-1].end)
				}
			}
			if fmt.Sprint(ids) != fmt.Sprint(want[k]) {
				t.Errorf("key %s ran %v, want %v", k, ids, want[k])
			}
		}
		if overlap.Load() == 0 {
			t.Error("jobs of different keys never ran at the same time")
		}
	})
}

// openShared opens two stores on one database, like two Berth processes.
func openShared(t *testing.T, dialect string) (*meta.DB, *meta.DB) {
	t.Helper()
	dsn := metatest.DSN(t, dialect)
	return open(t, dsn), open(t, dsn)
}

func open(t *testing.T, dsn string) *meta.DB {
	t.Helper()
	db, err := meta.Open(context.Background(), dsn)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestWorkersExactlyOnce: two processes (store handles) with four workers
// each share 200 jobs, keyed and not; every job runs exactly once.
func TestWorkersExactlyOnce(t *testing.T) {
	forDialects(t, func(t *testing.T, d string) {
		dbA, dbB := openShared(t, d)
		const n = 200
		var mu sync.Mutex
		runs := map[int64]int{}
		h := func(_ context.Context, j meta.Job) error {
			mu.Lock()
			runs[j.ID]++
			mu.Unlock()
			return nil
		}
		var ids []int64
		for i := range n {
			j := meta.Job{}
			if i%2 == 0 {
				j.OrderingKey = fmt.Sprintf("k%d", i%10)
			}
			db := dbA
			if i%3 == 0 {
				db = dbB
			}
			ids = append(ids, enqueue(t, db, j))
		}
		for i, db := range []*meta.DB{dbA, dbB} {
			start(t, jobs.New(db.Jobs(), "q", h, fast(jobs.Options{Concurrency: 4, Owner: fmt.Sprintf("p%d", i)})))
		}
		waitFor(t, dbA, meta.JobDone, n)
		mu.Lock()
		defer mu.Unlock()
		for _, id := range ids {
			if runs[id] != 1 {
				t.Errorf("job %d ran %d times", id, runs[id])
			}
		}
		if len(runs) != n {
			t.Errorf("%d jobs ran, want %d", len(runs), n)
		}
	})
}

// TestWorkerResumesAfterRestart: jobs enqueued (and one claimed) by a
// process that stopped are run by the next one.
func TestWorkerResumesAfterRestart(t *testing.T) {
	forDialects(t, func(t *testing.T, d string) {
		ctx := context.Background()
		dsn := metatest.DSN(t, d)
		db, err := meta.Open(ctx, dsn)
		if err != nil {
			t.Fatal(err)
		}
		for range 5 {
			enqueue(t, db, meta.Job{OrderingKey: "k"})
		}
		enqueue(t, db, meta.Job{})
		if _, ok, err := db.Jobs().ClaimJob(ctx, "q", "before-restart", 200*time.Millisecond); err != nil || !ok {
			t.Fatalf("claim: %v, %v", ok, err)
		}
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		db = open(t, dsn)
		var runs atomic.Int32
		start(t, jobs.New(db.Jobs(), "q", func(context.Context, meta.Job) error {
			runs.Add(1)
			return nil
		}, fast(jobs.Options{})))
		waitFor(t, db, meta.JobDone, 6)
		if runs.Load() != 6 {
			t.Fatalf("%d runs, want 6", runs.Load())
		}
	})
}
