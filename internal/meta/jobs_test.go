package meta_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

const lease = time.Minute

func enqueue(t testing.TB, db *meta.DB, j meta.Job) int64 {
	t.Helper()
	id, err := db.Jobs().EnqueueJob(context.Background(), j)
	if err != nil {
		t.Fatalf("enqueue: %v", err)
	}
	return id
}

func claim(t testing.TB, db *meta.DB, queue, owner string) (meta.Job, bool) {
	t.Helper()
	j, ok, err := db.Jobs().ClaimJob(context.Background(), queue, owner, lease)
	if err != nil {
		t.Fatalf("claim: %v", err)
	}
	return j, ok
}

// claimID claims and returns the job's id, or 0 when none is ready.
func claimID(t testing.TB, db *meta.DB, queue, owner string) int64 {
	t.Helper()
	j, _ := claim(t, db, queue, owner)
	return j.ID
}

func jobByID(t testing.TB, db *meta.DB, id int64) meta.Job {
	t.Helper()
	js, err := db.Jobs().Jobs(context.Background(), "", "", 10000)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range js {
		if j.ID == id {
			return j
		}
	}
	t.Fatalf("job %d not found", id)
	return meta.Job{}
}

func TestJobs(t *testing.T) {
	tests := []struct {
		name string
		fn   func(t *testing.T, db *meta.DB)
	}{
		{"EnqueueClaimComplete", testJobEnqueueClaimComplete},
		{"RunAtAndRetry", testJobRunAtAndRetry},
		{"LeaseTakeover", testJobLeaseTakeover},
		{"DeadAndRequeue", testJobDeadAndRequeue},
		{"OrderingKeys", testJobOrderingKeys},
		{"Validation", testJobValidation},
		{"DeferAndRelease", testJobDeferAndRelease},
	}
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, metatest.Open(t, d)) })
			}
		})
	}
}

func testJobEnqueueClaimComplete(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	before := time.Now().Add(-time.Second)
	id := enqueue(t, db, meta.Job{Queue: "q", Payload: json.RawMessage(`{"a":1}`)})
	if got := claimID(t, db, "other", "w"); got != 0 {
		t.Fatalf("claimed job %d of another queue", got)
	}
	j, ok := claim(t, db, "q", "w")
	if !ok || j.ID != id {
		t.Fatalf("claim = %d, %v; want %d", j.ID, ok, id)
	}
	if j.Status != meta.JobRunning || j.Attempts != 1 || j.MaxAttempts != meta.DefaultJobMaxAttempts ||
		string(j.Payload) != `{"a":1}` || j.Queue != "q" || j.RunAt.Before(before) || j.CreatedAt.Before(before) {
		t.Fatalf("claimed job = %+v", j)
	}
	if got := claimID(t, db, "q", "w2"); got != 0 {
		t.Fatalf("running job %d claimed twice", got)
	}
	if err := db.Jobs().ExtendJobLease(ctx, id, "w", lease); err != nil {
		t.Fatalf("extend: %v", err)
	}
	if err := db.Jobs().CompleteJob(ctx, id, "w2"); !errors.Is(err, meta.ErrJobLost) {
		t.Fatalf("complete by a non-owner = %v, want ErrJobLost", err)
	}
	if err := db.Jobs().CompleteJob(ctx, id, "w"); err != nil {
		t.Fatalf("complete: %v", err)
	}
	if err := db.Jobs().CompleteJob(ctx, id, "w"); !errors.Is(err, meta.ErrJobLost) {
		t.Fatalf("second complete = %v, want ErrJobLost", err)
	}
	done, err := db.Jobs().Jobs(ctx, "q", meta.JobDone, 0)
	if err != nil || len(done) != 1 || done[0].ID != id {
		t.Fatalf("done jobs = %+v, %v", done, err)
	}
	if got := claimID(t, db, "q", "w"); got != 0 {
		t.Fatalf("done job %d claimed", got)
	}
}

func testJobRunAtAndRetry(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	enqueue(t, db, meta.Job{Queue: "q", RunAt: time.Now().Add(time.Hour)})
	if got := claimID(t, db, "q", "w"); got != 0 {
		t.Fatalf("claimed job %d before its run_at", got)
	}
	id := enqueue(t, db, meta.Job{Queue: "q", MaxAttempts: 3})
	if got := claimID(t, db, "q", "w"); got != id {
		t.Fatalf("claim = %d, want %d", got, id)
	}
	if err := db.Jobs().RetryJob(ctx, id, "w", time.Now().Add(time.Hour), "boom"); err != nil {
		t.Fatalf("retry: %v", err)
	}
	if got := claimID(t, db, "q", "w"); got != 0 {
		t.Fatalf("claimed job %d during its backoff", got)
	}
	j := jobByID(t, db, id)
	if j.Status != meta.JobPending || j.Attempts != 1 || j.LastError != "boom" {
		t.Fatalf("retried job = %+v", j)
	}
	if err := db.Jobs().RetryJob(ctx, id, "w", time.Now(), "again"); !errors.Is(err, meta.ErrJobLost) {
		t.Fatalf("retry of a pending job = %v, want ErrJobLost", err)
	}
	// A retry whose time has come is ready again.
	id2 := enqueue(t, db, meta.Job{Queue: "q2"})
	if got := claimID(t, db, "q2", "w"); got != id2 {
		t.Fatalf("claim = %d, want %d", got, id2)
	}
	if err := db.Jobs().RetryJob(ctx, id2, "w", time.Now().Add(-time.Second), "soon"); err != nil {
		t.Fatal(err)
	}
	j, ok := claim(t, db, "q2", "w3")
	if !ok || j.ID != id2 || j.Attempts != 2 || j.LastError != "soon" {
		t.Fatalf("reclaimed job = %+v, %v", j, ok)
	}
}

// testJobDeferAndRelease: a deferred job goes back to pending without
// spending its attempt and keeps its place in its ordering key; released
// jobs of a key prefix are ready at once, even one whose handler defers it
// while the release happens.
func testJobDeferAndRelease(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	later := time.Now().Add(time.Hour)
	a := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "n1|r", MaxAttempts: 2})
	b := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "n1|r"})
	c := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "n10|r"})
	d := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "n1|s", RunAt: later})
	other := enqueue(t, db, meta.Job{Queue: "q2", OrderingKey: "n1|r", RunAt: later})
	if got := claimID(t, db, "q", "w"); got != a {
		t.Fatalf("claim = %d, want %d", got, a)
	}
	if err := db.Jobs().DeferJob(ctx, a, "intruder", later, "held"); !errors.Is(err, meta.ErrJobLost) {
		t.Fatalf("defer by a non-owner = %v, want ErrJobLost", err)
	}
	if err := db.Jobs().DeferJob(ctx, a, "w", later, "held"); err != nil {
		t.Fatalf("defer: %v", err)
	}
	if j := jobByID(t, db, a); j.Status != meta.JobPending || j.Attempts != 0 || j.LastError != "held" || j.RunAt.Before(later.Add(-time.Second)) {
		t.Fatalf("deferred job = %+v", j)
	}
	// a is held, b waits behind it, d waits for its run_at: only c runs.
	if got := claimID(t, db, "q", "w"); got != c {
		t.Fatalf("claim = %d, want %d (the other key's)", got, c)
	}
	if err := db.Jobs().CompleteJob(ctx, c, "w"); err != nil {
		t.Fatal(err)
	}
	if got := claimID(t, db, "q", "w"); got != 0 {
		t.Fatalf("claimed %d while a was held", got)
	}
	if _, err := db.Jobs().ReleaseJobs(ctx, "q", ""); err == nil {
		t.Fatal("released with an empty key prefix")
	}
	n, err := db.Jobs().ReleaseJobs(ctx, "q", "n1|")
	if err != nil || n != 2 {
		t.Fatalf("released %d, %v; want a and d", n, err)
	}
	if jobByID(t, db, other).RunAt.Before(later.Add(-time.Second)) {
		t.Fatal("a job of another queue was released")
	}
	// Deferring never spends an attempt: a runs as often as it is deferred.
	for range 5 {
		j, ok := claim(t, db, "q", "w")
		if !ok || j.ID != a || j.Attempts != 1 {
			t.Fatalf("claim = %+v, %v; want a on its first attempt", j, ok)
		}
		if err := db.Jobs().DeferJob(ctx, a, "w", time.Now().Add(-time.Second), "not yet"); err != nil {
			t.Fatal(err)
		}
	}
	// Released while its handler runs, a job that the handler then defers
	// is ready at once.
	if got := claimID(t, db, "q", "w"); got != a {
		t.Fatalf("claim = %d, want a", got)
	}
	if n, err := db.Jobs().ReleaseJobs(ctx, "q", "n1|r"); err != nil || n != 1 {
		t.Fatalf("released %d, %v; want the running a", n, err)
	}
	if err := db.Jobs().DeferJob(ctx, a, "w", later, "held"); err != nil {
		t.Fatal(err)
	}
	if j := jobByID(t, db, a); j.RunAt.After(time.Now()) {
		t.Fatalf("a released while running was deferred to %v", j.RunAt)
	}
	// So is one whose handler fails: its attempt began before the release
	// (a delivery to a receiver that was down until the reset).
	if got := claimID(t, db, "q", "w"); got != a {
		t.Fatalf("claim = %d, want a", got)
	}
	if n, err := db.Jobs().ReleaseJobs(ctx, "q", "n1|r"); err != nil || n != 1 {
		t.Fatalf("released %d, %v; want the running a", n, err)
	}
	if err := db.Jobs().RetryJob(ctx, a, "w", later, "receiver down"); err != nil {
		t.Fatal(err)
	}
	if j := jobByID(t, db, a); j.RunAt.After(time.Now()) || j.LastError != "receiver down" {
		t.Fatalf("a released while running was retried at %v (%q), want at once", j.RunAt, j.LastError)
	}
	// Not released, a failed job waits for its backoff.
	if got := claimID(t, db, "q", "w"); got != a {
		t.Fatalf("claim = %d, want a", got)
	}
	if err := db.Jobs().RetryJob(ctx, a, "w", later, "receiver down"); err != nil {
		t.Fatal(err)
	}
	if j := jobByID(t, db, a); j.RunAt.Before(later.Add(-time.Second)) {
		t.Fatalf("a retried at %v, want its backoff (%v)", j.RunAt, later)
	}
	if _, err := db.Jobs().ReleaseJobs(ctx, "q", "n1|r"); err != nil {
		t.Fatal(err)
	}
	if got := claimID(t, db, "q", "w"); got != a {
		t.Fatalf("claim = %d, want a", got)
	}
	if err := db.Jobs().CompleteJob(ctx, a, "w"); err != nil {
		t.Fatal(err)
	}
	// Then b, in order, and d.
	got := map[int64]bool{}
	for range 2 {
		id := claimID(t, db, "q", "w")
		got[id] = true
		if err := db.Jobs().CompleteJob(ctx, id, "w"); err != nil {
			t.Fatal(err)
		}
	}
	if !got[b] || !got[d] {
		t.Fatalf("claimed %v, want b and d", got)
	}
}

func testJobLeaseTakeover(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	id := enqueue(t, db, meta.Job{Queue: "q"})
	if _, ok, err := db.Jobs().ClaimJob(ctx, "q", "crashed", 50*time.Millisecond); err != nil || !ok {
		t.Fatalf("claim: %v, %v", ok, err)
	}
	deadline := time.Now().Add(10 * time.Second)
	var j meta.Job
	for {
		var ok bool
		if j, ok = claim(t, db, "q", "rescuer"); ok {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("job with an expired lease was never taken over")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if j.ID != id || j.Attempts != 2 {
		t.Fatalf("taken over job = %+v", j)
	}
	for name, err := range map[string]error{
		"complete": db.Jobs().CompleteJob(ctx, id, "crashed"),
		"retry":    db.Jobs().RetryJob(ctx, id, "crashed", time.Now(), "x"),
		"kill":     db.Jobs().KillJob(ctx, id, "crashed", "x"),
		"extend":   db.Jobs().ExtendJobLease(ctx, id, "crashed", lease),
	} {
		if !errors.Is(err, meta.ErrJobLost) {
			t.Errorf("stale owner's %s = %v, want ErrJobLost", name, err)
		}
	}
	if err := db.Jobs().CompleteJob(ctx, id, "rescuer"); err != nil {
		t.Fatalf("complete by the new owner: %v", err)
	}

	// A job whose worker is lost on its last attempt is dead-lettered, not
	// run again, and the next job of its key is claimed instead.
	last := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "k", MaxAttempts: 1})
	next := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "k"})
	if j, ok, err := db.Jobs().ClaimJob(ctx, "q", "crashed", time.Millisecond); err != nil || !ok || j.ID != last {
		t.Fatalf("claim = %+v, %v, %v", j, ok, err)
	}
	time.Sleep(5 * time.Millisecond)
	if got := claimID(t, db, "q", "rescuer"); got != next {
		t.Fatalf("claim = %d, want %d", got, next)
	}
	if j := jobByID(t, db, last); j.Status != meta.JobDead || j.Attempts != 1 || !strings.Contains(j.LastError, "lease expired") {
		t.Fatalf("job lost on its last attempt = %+v", j)
	}
}

func testJobDeadAndRequeue(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	id := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "k", Payload: json.RawMessage(`[1]`), MaxAttempts: 2})
	younger := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "k"})
	claimID(t, db, "q", "w")
	if err := db.Jobs().KillJob(ctx, id, "w", "bad\x00input \xff"); err != nil {
		t.Fatalf("kill: %v", err)
	}
	dead, err := db.Jobs().Jobs(ctx, "q", meta.JobDead, 0)
	if err != nil || len(dead) != 1 || dead[0].ID != id || dead[0].LastError != "badinput \uFFFD" {
		t.Fatalf("dead jobs = %+v, %v", dead, err)
	}
	// The dead job no longer holds back its key.
	if got := claimID(t, db, "q", "w"); got != younger {
		t.Fatalf("claim = %d, want the younger job %d", got, younger)
	}
	if err := db.Jobs().RequeueDeadJob(ctx, younger); !errors.Is(err, meta.ErrJobNotFound) {
		t.Fatalf("requeue of a running job = %v, want ErrJobNotFound", err)
	}
	if err := db.Jobs().RequeueDeadJob(ctx, id); err != nil {
		t.Fatalf("requeue: %v", err)
	}
	if err := db.Jobs().RequeueDeadJob(ctx, id); !errors.Is(err, meta.ErrJobNotFound) {
		t.Fatalf("second requeue = %v, want ErrJobNotFound", err)
	}
	pending, err := db.Jobs().Jobs(ctx, "q", meta.JobPending, 0)
	if err != nil || len(pending) != 1 {
		t.Fatalf("pending = %+v, %v", pending, err)
	}
	re := pending[0]
	if re.ID <= younger || re.Attempts != 0 || re.MaxAttempts != 2 || string(re.Payload) != `[1]` || re.OrderingKey != "k" || re.LastError == "" {
		t.Fatalf("requeued job = %+v", re)
	}
	// The requeued job waits for the running job of its key.
	if got := claimID(t, db, "q", "w"); got != 0 {
		t.Fatalf("claimed job %d while another job of its key runs", got)
	}
	if err := db.Jobs().CompleteJob(ctx, younger, "w"); err != nil {
		t.Fatal(err)
	}
	if got := claimID(t, db, "q", "w"); got != re.ID {
		t.Fatalf("claim = %d, want the requeued job %d", got, re.ID)
	}
}

func testJobOrderingKeys(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	a1 := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "a"})
	a2 := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "a"})
	b1 := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "b"})
	free := enqueue(t, db, meta.Job{Queue: "q"})
	a3 := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "a"})
	otherQueue := enqueue(t, db, meta.Job{Queue: "q2", OrderingKey: "a"})
	for _, want := range []int64{a1, b1, free, 0} {
		if got := claimID(t, db, "q", "w"); got != want {
			t.Fatalf("claim = %d, want %d", got, want)
		}
	}
	if got := claimID(t, db, "q2", "w"); got != otherQueue {
		t.Fatalf("claim on q2 = %d, want %d: keys are per queue", got, otherQueue)
	}
	// A retried job keeps its place: a2 waits behind it.
	if err := db.Jobs().RetryJob(ctx, a1, "w", time.Now().Add(-time.Second), "flaky"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []int64{a1, 0} {
		if got := claimID(t, db, "q", "w"); got != want {
			t.Fatalf("claim after retry = %d, want %d", got, want)
		}
	}
	if err := db.Jobs().CompleteJob(ctx, a1, "w"); err != nil {
		t.Fatal(err)
	}
	for _, want := range []int64{a2, 0} {
		if got := claimID(t, db, "q", "w"); got != want {
			t.Fatalf("claim after a1 = %d, want %d", got, want)
		}
	}
	if err := db.Jobs().KillJob(ctx, a2, "w", "no"); err != nil {
		t.Fatal(err)
	}
	if got := claimID(t, db, "q", "w"); got != a3 {
		t.Fatalf("claim after a2 died = %d, want %d", got, a3)
	}
}

func testJobValidation(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	if _, err := db.Jobs().EnqueueJob(ctx, meta.Job{}); err == nil {
		t.Error("enqueue without a queue succeeded")
	}
	if _, err := db.Jobs().EnqueueJob(ctx, meta.Job{Queue: "q", Payload: json.RawMessage(`{`)}); err == nil {
		t.Error("enqueue with invalid JSON succeeded")
	}
	if _, _, err := db.Jobs().ClaimJob(ctx, "q", "", lease); err == nil {
		t.Error("claim without an owner succeeded")
	}
	id := enqueue(t, db, meta.Job{Queue: "q"})
	if j := jobByID(t, db, id); string(j.Payload) != "{}" {
		t.Errorf("default payload = %s", j.Payload)
	}
	if err := db.Jobs().CompleteJob(ctx, 424242, "w"); !errors.Is(err, meta.ErrJobLost) {
		t.Errorf("complete of an unknown job = %v, want ErrJobLost", err)
	}
}

// openShared opens two stores on one database, like two Berth processes.
func openShared(t testing.TB, dialect string) (*meta.DB, *meta.DB) {
	t.Helper()
	dsn := metatest.DSN(t, dialect)
	var dbs [2]*meta.DB
	for i := range dbs {
		db, err := meta.Open(context.Background(), dsn)
		if err != nil {
			t.Fatalf("open %s: %v", dialect, err)
		}
		t.Cleanup(func() { db.Close() })
		dbs[i] = db
	}
	return dbs[0], dbs[1]
}

// TestJobClaimRace has claimers on two store handles race for keyed and
// unkeyed jobs, retrying some, and checks that no two jobs of a key are
// ever claimed at once, that the jobs of a key finish in id order, and
// that every job finishes exactly once. Half the claimers complete with
// CompleteJobClaimNext and run the job it hands on without claiming.
func TestJobClaimRace(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			dbA, dbB := openShared(t, d)
			const keys, perKey, unkeyed = 6, 15, 30
			keyOf := map[int64]string{}
			for i := range keys * perKey {
				k := fmt.Sprintf("k%d", i%keys)
				keyOf[enqueue(t, dbA, meta.Job{Queue: "q", OrderingKey: k})] = k
			}
			for range unkeyed {
				keyOf[enqueue(t, dbB, meta.Job{Queue: "q"})] = ""
			}
			var mu sync.Mutex
			running := map[string]int64{}
			finished := map[string][]int64{}
			done := map[int64]int{}
			var chained, finishedJobs atomic.Int64
			total := int64(len(keyOf))
			// Every claimer runs until every job finished (or the deadline):
			// one that gave up after some idle polls could leave the chain
			// untried, when the claimers that chain happen to find the
			// queue's ready jobs taken for a while.
			deadline := time.Now().Add(time.Minute)
			var wg sync.WaitGroup
			errc := make(chan error, 16)
			for w := range 8 {
				db := dbA
				if w%2 == 1 {
					db = dbB
				}
				wg.Go(func() {
					chainer := w%4 >= 2
					seq := 0
					owner := fmt.Sprintf("w%d/%d", w, seq)
					var j meta.Job
					handed := false // j was handed on by a chain
					for finishedJobs.Load() < total {
						if !handed {
							var ok bool
							var err error
							seq++
							owner = fmt.Sprintf("w%d/%d", w, seq)
							j, ok, err = db.Jobs().ClaimJob(ctx, "q", owner, lease)
							if err != nil {
								errc <- err
								return
							}
							if !ok {
								if time.Now().After(deadline) {
									errc <- fmt.Errorf("%d of %d jobs finished after a minute", finishedJobs.Load(), total)
									return
								}
								time.Sleep(5 * time.Millisecond)
								continue
							}
						}
						handed = false
						k := j.OrderingKey
						mu.Lock()
						if other, busy := running[k]; busy && k != "" {
							mu.Unlock()
							errc <- fmt.Errorf("job %d of key %s claimed while job %d runs", j.ID, k, other)
							return
						}
						running[k] = j.ID
						mu.Unlock()
						time.Sleep(time.Duration(rand.IntN(500)) * time.Microsecond)
						retry := rand.IntN(4) == 0
						// Leave the running set before the store does: the
						// check is conservative.
						mu.Lock()
						delete(running, k)
						if !retry {
							finished[k] = append(finished[k], j.ID)
							done[j.ID]++
						}
						mu.Unlock()
						// Counted once its completion has committed, below.
						finishing := !retry
						var err error
						switch {
						case retry:
							err = db.Jobs().RetryJob(ctx, j.ID, owner, time.Now(), "again")
						case chainer:
							seq++
							next := fmt.Sprintf("w%d/%d", w, seq)
							var n meta.Job
							n, handed, err = db.Jobs().CompleteJobClaimNext(ctx, j.ID, owner, next, lease)
							if handed {
								// The key's next job, or any ready job of the
								// queue (the running set checks the keys).
								if n.Queue != "q" || n.Status != meta.JobRunning || (n.OrderingKey == k && k != "" && n.ID <= j.ID) {
									errc <- fmt.Errorf("job %d of key %q chained to %+v", j.ID, k, n)
									return
								}
								chained.Add(1)
								j, owner = n, next
							}
						default:
							err = db.Jobs().CompleteJob(ctx, j.ID, owner)
						}
						if err != nil {
							errc <- err
							return
						}
						if finishing {
							finishedJobs.Add(1)
						}
					}
				})
			}
			wg.Wait()
			close(errc)
			for err := range errc {
				t.Fatal(err)
			}
			if chained.Load() == 0 {
				t.Error("no job was handed on by a chain")
			}
			for id := range keyOf {
				if done[id] != 1 {
					t.Errorf("job %d finished %d times", id, done[id])
				}
			}
			for k, ids := range finished {
				if k == "" {
					continue
				}
				for i := 1; i < len(ids); i++ {
					if ids[i] < ids[i-1] {
						t.Fatalf("key %s finished out of order: %v", k, ids)
					}
				}
			}
		})
	}
}

func TestJobsSurviveReopen(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			dsn := metatest.DSN(t, d)
			db, err := meta.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			id := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "k"})
			db.Close()
			db, err = meta.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if got := claimID(t, db, "q", "w"); got != id {
				t.Fatalf("claim after reopen = %d, want %d", got, id)
			}
		})
	}
}

func BenchmarkClaimComplete(b *testing.B) {
	for _, d := range metatest.Dialects() {
		b.Run(d, func(b *testing.B) {
			ctx := context.Background()
			db := metatest.Open(b, d)
			for i := range b.N {
				enqueue(b, db, meta.Job{Queue: "bench", OrderingKey: fmt.Sprintf("k%d", i%8)})
			}
			b.ResetTimer()
			for range b.N {
				j, ok, err := db.Jobs().ClaimJob(ctx, "bench", "w", lease)
				if err != nil || !ok {
					b.Fatalf("claim: %v, %v", ok, err)
				}
				if err := db.Jobs().CompleteJob(ctx, j.ID, "w"); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
