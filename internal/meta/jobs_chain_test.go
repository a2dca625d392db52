package meta_test

import (
	"context"
	"database/sql"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

func TestJobChain(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			t.Run("Order", func(t *testing.T) { testJobChain(t, metatest.Open(t, d)) })
			t.Run("Also", func(t *testing.T) { testJobChainAlso(t, metatest.Open(t, d)) })
		})
	}
}

// testJobChainAlso: the functions given to CompleteJobClaimNext run in its
// transaction (an error of theirs undoes the completion), and an empty
// next owner only completes.
func testJobChainAlso(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	k1 := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "k"})
	k2 := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "k"})
	if got := claimID(t, db, "q", "w1"); got != k1 {
		t.Fatalf("claim = %d, want %d", got, k1)
	}
	side := func(ctx context.Context, tx meta.Tx) error {
		_, err := db.Jobs().EnqueueIn(ctx, tx, meta.Job{Queue: "side"})
		return err
	}
	boom := errors.New("boom")
	_, _, err := db.Jobs().CompleteJobClaimNext(ctx, k1, "w1", "w2", lease, side, func(context.Context, meta.Tx) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("chain with a failing function = %v, want %v", err, boom)
	}
	if j := jobByID(t, db, k1); j.Status != meta.JobRunning {
		t.Fatalf("job after a failed chain = %+v, want running", j)
	}
	if js, err := db.Jobs().Jobs(ctx, "side", "", 10); err != nil || len(js) != 0 {
		t.Fatalf("side jobs after a failed chain = %+v, %v; want none", js, err)
	}
	if _, ok, err := db.Jobs().CompleteJobClaimNext(ctx, k1, "w1", "", 0, side); err != nil || ok {
		t.Fatalf("complete with no next owner = %v, %v; want no job, no error", ok, err)
	}
	if j := jobByID(t, db, k1); j.Status != meta.JobDone {
		t.Fatalf("job = %+v, want done", j)
	}
	if j := jobByID(t, db, k2); j.Status != meta.JobPending || j.Attempts != 0 {
		t.Fatalf("next job = %+v, want pending, not claimed", j)
	}
	if js, err := db.Jobs().Jobs(ctx, "side", "", 10); err != nil || len(js) != 1 {
		t.Fatalf("side jobs = %+v, %v; want the one enqueued with the completion", js, err)
	}
}

// chainNext completes id for owner and returns the id of the job claimed
// next for next (0 for none).
func chainNext(t *testing.T, db *meta.DB, id int64, owner, next string) int64 {
	t.Helper()
	j, ok, err := db.Jobs().CompleteJobClaimNext(context.Background(), id, owner, next, lease)
	if err != nil {
		t.Fatalf("complete %d and claim next: %v", id, err)
	}
	if !ok {
		if j.ID != 0 {
			t.Fatalf("no next job, but job %d returned", j.ID)
		}
		return 0
	}
	if j.Status != meta.JobRunning || j.Attempts != 1 {
		t.Fatalf("chained job = %+v", j)
	}
	return j.ID
}

// testJobChain: CompleteJobClaimNext completes the job and claims the next
// job of its key in id order, never a job of another key or queue, never a
// job before its run_at (nor one behind it), and refuses a non-owner.
func testJobChain(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	a1 := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "a"})
	b1 := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "b"})
	enqueue(t, db, meta.Job{Queue: "q2", OrderingKey: "a"})
	free := enqueue(t, db, meta.Job{Queue: "q"})
	a2 := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "a"})
	a3 := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "a", RunAt: time.Now().Add(time.Hour)})
	a4 := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "a"})

	if got := claimID(t, db, "q", "w1"); got != a1 {
		t.Fatalf("claim = %d, want %d", got, a1)
	}
	if _, _, err := db.Jobs().CompleteJobClaimNext(ctx, a1, "w1", "w2", 0); err == nil {
		t.Fatal("chain without a lease succeeded")
	}
	if _, _, err := db.Jobs().CompleteJobClaimNext(ctx, a1, "x", "w2", lease); !errors.Is(err, meta.ErrJobLost) {
		t.Fatalf("chain by a non-owner = %v, want ErrJobLost", err)
	}
	if j := jobByID(t, db, a1); j.Status != meta.JobRunning {
		t.Fatalf("job after a refused chain = %+v, want running", j)
	}
	// a2, not b1 (older, another key) nor the job of key a in q2.
	if got := chainNext(t, db, a1, "w1", "w2"); got != a2 {
		t.Fatalf("chained %d, want %d", got, a2)
	}
	if j := jobByID(t, db, a1); j.Status != meta.JobDone {
		t.Fatalf("chained-from job = %+v, want done", j)
	}
	if _, _, err := db.Jobs().CompleteJobClaimNext(ctx, a1, "w1", "w9", lease); !errors.Is(err, meta.ErrJobLost) {
		t.Fatalf("second chain from a done job = %v, want ErrJobLost", err)
	}
	// The chained job belongs to its new owner only.
	if err := db.Jobs().ExtendJobLease(ctx, a2, "w1", lease); !errors.Is(err, meta.ErrJobLost) {
		t.Fatalf("old owner extends the chained job: %v, want ErrJobLost", err)
	}
	if err := db.Jobs().ExtendJobLease(ctx, a2, "w2", lease); err != nil {
		t.Fatalf("new owner extends the chained job: %v", err)
	}
	// a3 waits for its run_at, and a4 waits behind it: the chain goes on
	// to the queue's oldest ready job, b1 of another key, then free (no
	// key), never to a3, a4 or the job of queue q2.
	if got := chainNext(t, db, a2, "w2", "w3"); got != b1 {
		t.Fatalf("chained %d past a job whose run_at is to come, want the queue's oldest ready job %d", got, b1)
	}
	if j := jobByID(t, db, a2); j.Status != meta.JobDone {
		t.Fatalf("job = %+v, want done", j)
	}
	if got := chainNext(t, db, b1, "w3", "w4"); got != free {
		t.Fatalf("chained %d, want %d", got, free)
	}
	// A job without an ordering key chains too; nothing else is ready.
	if got := chainNext(t, db, free, "w4", "w5"); got != 0 {
		t.Fatalf("chained %d with no job ready", got)
	}
	if j := jobByID(t, db, free); j.Status != meta.JobDone {
		t.Fatalf("unkeyed job = %+v, want done", j)
	}
	if got := claimID(t, db, "q", "w6"); got != 0 {
		t.Fatalf("claim = %d with no job ready", got)
	}
	// Released, a3 is ready; a4 follows it.
	if _, err := db.Jobs().ReleaseJobs(ctx, "q", "a"); err != nil {
		t.Fatal(err)
	}
	if got := claimID(t, db, "q", "w7"); got != a3 {
		t.Fatalf("claim = %d, want %d", got, a3)
	}
	if got := chainNext(t, db, a3, "w7", "w8"); got != a4 {
		t.Fatalf("chained %d, want %d", got, a4)
	}
	// A job whose worker was lost (its lease ran out) is not taken over
	// by a chain: ClaimJob takes it over, or dead-letters it.
	lost := enqueue(t, db, meta.Job{Queue: "q"})
	if j, ok, err := db.Jobs().ClaimJob(ctx, "q", "gone", time.Millisecond); err != nil || !ok || j.ID != lost {
		t.Fatalf("claim = %+v, %v, %v; want job %d", j, ok, err, lost)
	}
	time.Sleep(20 * time.Millisecond)
	if got := chainNext(t, db, a4, "w8", "w9"); got != 0 {
		t.Fatalf("chained %d: a job whose lease ran out", got)
	}
	if j := jobByID(t, db, lost); j.Status != meta.JobRunning || j.Attempts != 1 {
		t.Fatalf("job whose lease ran out = %+v, want running after one attempt", j)
	}
	if got := claimID(t, db, "q", "w10"); got != lost {
		t.Fatalf("claim = %d, want the takeover of %d", got, lost)
	}
	for _, id := range []int64{a1, a2, a3, a4, b1, free} {
		if j := jobByID(t, db, id); j.Status != meta.JobDone || j.Attempts != 1 {
			t.Errorf("job %d = %+v, want done after one attempt", id, j)
		}
	}
	if js, err := db.Jobs().Jobs(ctx, "q2", "", 10); err != nil || len(js) != 1 || js[0].Status != meta.JobPending {
		t.Errorf("queue q2 = %+v, %v; want its one job pending", js, err)
	}
}

// TestClaimJobPollWithoutWriter: a poll of a queue whose live jobs all
// wait (behind an older job of their key, or for their run_at) answers
// from a read, without waiting for the writer, here held by another
// connection.
func TestClaimJobPollWithoutWriter(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "meta.db")
	db, err := meta.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	k1 := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "k"})
	enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "k"})
	enqueue(t, db, meta.Job{Queue: "q", RunAt: time.Now().Add(time.Hour)})
	if got := claimID(t, db, "q", "w"); got != k1 {
		t.Fatalf("claim = %d, want %d", got, k1)
	}
	other, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	defer conn.ExecContext(ctx, "ROLLBACK")
	pctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	if j, ok, err := db.Jobs().ClaimJob(pctx, "q", "w2", lease); err != nil || ok {
		t.Fatalf("poll = %d, %v, %v; want no job, answered without the writer", j.ID, ok, err)
	}
}
