package meta_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// checkBehind checks the mark that claims rely on to skip a key's backlog:
// of a key's live jobs exactly the oldest is not behind, and a job without
// a key never is. It also checks that no two jobs of a key run at once.
func checkBehind(t *testing.T, db *meta.DB, queue, step string) {
	t.Helper()
	ctx := context.Background()
	marks, err := db.LiveJobsBehind(ctx, queue)
	if err != nil {
		t.Fatal(err)
	}
	js, err := db.Jobs().Jobs(ctx, queue, "", 100000)
	if err != nil {
		t.Fatal(err)
	}
	front := map[string]bool{}
	running := map[string]int64{}
	for _, j := range js { // oldest first
		if j.Status != meta.JobPending && j.Status != meta.JobRunning {
			continue
		}
		want := j.OrderingKey != "" && front[j.OrderingKey]
		front[j.OrderingKey] = true
		if got, ok := marks[j.ID]; !ok || got != want {
			t.Fatalf("after %s: job %d (key %q, %s) behind = %v, want %v", step, j.ID, j.OrderingKey, j.Status, got, want)
		}
		if j.Status == meta.JobRunning && j.OrderingKey != "" {
			if other, ok := running[j.OrderingKey]; ok {
				t.Fatalf("after %s: jobs %d and %d of key %q run at once", step, other, j.ID, j.OrderingKey)
			}
			running[j.OrderingKey] = j.ID
		}
	}
}

// TestJobsBehindModel drives the queue through random enqueues, claims,
// completions (alone and chained), retries, deferrals, kills, lease
// takeovers that dead-letter, requeues and releases, checks the behind
// marks after every step, and then drains the queue: every job must end
// done or dead, none held behind a key that nothing holds.
func TestJobsBehindModel(t *testing.T) {
	for _, d := range metatest.Dialects() {
		for seed := range uint64(3) {
			t.Run(fmt.Sprintf("%s/seed%d", d, seed), func(t *testing.T) {
				ctx := context.Background()
				db := metatest.Open(t, d)
				rng := rand.New(rand.NewPCG(seed, 17))
				keys := []string{"", "a", "b", "a|x"}
				owners := map[int64]string{} // running job -> its owner
				seq := 0
				owner := func() string { seq++; return fmt.Sprintf("proc-%d/%d", seq%3, seq) }
				anyRunning := func() (int64, string, bool) {
					ids := make([]int64, 0, len(owners))
					for id := range owners {
						ids = append(ids, id)
					}
					if len(ids) == 0 {
						return 0, "", false
					}
					slices.Sort(ids)
					id := ids[rng.IntN(len(ids))]
					return id, owners[id], true
				}
				past, future := time.Now().Add(-time.Second), time.Now().Add(time.Hour)
				for step := range 400 {
					var what string
					switch op := rng.IntN(11); op {
					case 0, 1, 2:
						j := meta.Job{Queue: "q", OrderingKey: keys[rng.IntN(len(keys))], MaxAttempts: 1 + rng.IntN(2)}
						if rng.IntN(5) == 0 {
							j.RunAt = future
						}
						enqueue(t, db, j)
						what = "enqueue " + j.OrderingKey
					case 3, 4:
						o := owner()
						if j, ok := claim(t, db, "q", o); ok {
							owners[j.ID] = o
						}
						what = "claim"
					case 5:
						if id, o, ok := anyRunning(); ok {
							if err := db.Jobs().CompleteJob(ctx, id, o); err != nil {
								t.Fatal(err)
							}
							delete(owners, id)
						}
						what = "complete"
					case 6:
						if id, o, ok := anyRunning(); ok {
							next := owner()
							j, ok, err := db.Jobs().CompleteJobClaimNext(ctx, id, o, next, lease)
							if err != nil {
								t.Fatal(err)
							}
							delete(owners, id)
							if ok {
								owners[j.ID] = next
							}
						}
						what = "complete and claim next"
					case 7:
						if id, o, ok := anyRunning(); ok {
							var err error
							switch rng.IntN(3) {
							case 0:
								err = db.Jobs().RetryJob(ctx, id, o, []time.Time{past, future}[rng.IntN(2)], "retry")
							case 1:
								err = db.Jobs().DeferJob(ctx, id, o, []time.Time{past, future}[rng.IntN(2)], "not now")
							case 2:
								err = db.Jobs().KillJob(ctx, id, o, "broken")
							}
							if err != nil {
								t.Fatal(err)
							}
							delete(owners, id)
						}
						what = "retry, defer or kill"
					case 8:
						// A process stops with its jobs running: they are
						// taken over, or dead-lettered after their last
						// attempt, by the next claims.
						prefix := fmt.Sprintf("proc-%d/", rng.IntN(3))
						if _, err := db.Jobs().ExpireLeasesOf(ctx, prefix); err != nil {
							t.Fatal(err)
						}
						for id, o := range owners {
							if strings.HasPrefix(o, prefix) {
								delete(owners, id)
							}
						}
						what = "expire the leases of " + prefix
					case 9:
						dead, err := db.Jobs().Jobs(ctx, "q", meta.JobDead, 0)
						if err != nil {
							t.Fatal(err)
						}
						if len(dead) > 0 {
							if err := db.Jobs().RequeueDeadJob(ctx, dead[rng.IntN(len(dead))].ID); err != nil {
								t.Fatal(err)
							}
						}
						what = "requeue a dead job"
					case 10:
						if _, err := db.Jobs().ReleaseJobs(ctx, "q", keys[1+rng.IntN(len(keys)-1)]); err != nil {
							t.Fatal(err)
						}
						what = "release"
					}
					checkBehind(t, db, "q", fmt.Sprintf("step %d (%s)", step, what))
				}
				// Drain: every job held for a time is released, and what is
				// left must all be claimed and finished.
				for _, k := range keys[1:] {
					if _, err := db.Jobs().ReleaseJobs(ctx, "q", k); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := db.Jobs().ExpireLeasesOf(ctx, "proc-"); err != nil {
					t.Fatal(err)
				}
				for range 10000 {
					o := owner()
					j, ok := claim(t, db, "q", o)
					if !ok {
						break
					}
					if err := db.Jobs().CompleteJob(ctx, j.ID, o); err != nil {
						t.Fatal(err)
					}
					checkBehind(t, db, "q", "drain")
				}
				js, err := db.Jobs().Jobs(ctx, "q", "", 100000)
				if err != nil {
					t.Fatal(err)
				}
				for _, j := range js {
					if j.Status == meta.JobPending || j.Status == meta.JobRunning {
						if j.RunAt.Before(time.Now()) {
							t.Fatalf("job %d (key %q) is still %s after the drain: stuck", j.ID, j.OrderingKey, j.Status)
						}
					}
				}
			})
		}
	}
}

// TestJobEnqueueRacesEnd races an enqueue of a key, on one store handle,
// against the end of the key's only live job, on another: whichever
// commits first, the new job must not be left behind a job that is no
// longer live. On PostgreSQL that needs the end to take the key's enqueue
// lock before it looks for the key's next job.
func TestJobEnqueueRacesEnd(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			dbA, dbB := openShared(t, d)
			for round := range 60 {
				key := fmt.Sprintf("k%d", round)
				first := enqueue(t, dbA, meta.Job{Queue: "q", OrderingKey: key})
				if got := claimID(t, dbA, "q", "w"); got != first {
					t.Fatalf("round %d: claimed %d, want %d", round, got, first)
				}
				var wg sync.WaitGroup
				var endErr error
				var second int64
				wg.Go(func() {
					switch round % 3 {
					case 0:
						endErr = dbA.Jobs().CompleteJob(ctx, first, "w")
					case 1:
						endErr = dbA.Jobs().KillJob(ctx, first, "w", "broken")
					case 2:
						_, _, endErr = dbA.Jobs().CompleteJobClaimNext(ctx, first, "w", "", lease)
					}
				})
				wg.Go(func() { second = enqueue(t, dbB, meta.Job{Queue: "q", OrderingKey: key}) })
				wg.Wait()
				if endErr != nil {
					t.Fatalf("round %d: %v", round, endErr)
				}
				checkBehind(t, dbA, "q", fmt.Sprintf("round %d", round))
				j, ok, err := dbA.Jobs().ClaimJob(ctx, "q", "w2", lease)
				if err != nil || !ok || j.ID != second {
					t.Fatalf("round %d: claim = %d, %v, %v; want the job enqueued during the end, %d", round, j.ID, ok, err, second)
				}
				if err := dbA.Jobs().CompleteJob(ctx, j.ID, "w2"); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestJobsBehindMigration: a store of schema version 21 with a key's
// backlog behind a running job is upgraded: the backlog is marked behind,
// and it runs in order once the running job is done.
func TestJobsBehindMigration(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			dsn := metatest.DSN(t, d)
			db, err := meta.OpenAt(ctx, dsn, 21)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ts := time.Now().UnixMicro()
			for _, r := range []struct {
				key, status, owner string
			}{{"k", "done", ""}, {"k", "running", "w"}, {"k", "pending", ""}, {"", "pending", ""}, {"k", "pending", ""}, {"m", "dead", ""}, {"m", "pending", ""}} {
				if err := db.Exec(ctx, `INSERT INTO jobs (queue, ordering_key, payload, status, attempts, max_attempts, run_at, lease_until, lease_owner, created_at, updated_at)
					VALUES ('q', ?, '{}', ?, 1, 5, ?, ?, ?, ?, ?)`, r.key, r.status, ts, ts+time.Hour.Microseconds(), r.owner, ts, ts); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			checkBehind(t, db, "q", "the upgrade")
			marks, err := db.LiveJobsBehind(ctx, "q")
			if err != nil {
				t.Fatal(err)
			}
			if want := map[int64]bool{2: false, 3: true, 4: false, 5: true, 7: false}; !mapsEqual(marks, want) {
				t.Fatalf("behind after the upgrade = %v, want %v", marks, want)
			}
			// Runs every job that is ready, in the order claimed.
			var order []int64
			runReady := func(owner string) {
				for {
					j, ok := claim(t, db, "q", owner)
					if !ok {
						return
					}
					order = append(order, j.ID)
					if err := db.Jobs().CompleteJob(ctx, j.ID, owner); err != nil {
						t.Fatal(err)
					}
				}
			}
			runReady("w2")
			if err := db.Jobs().CompleteJob(ctx, 2, "w"); err != nil {
				t.Fatal(err)
			}
			runReady("w3")
			if want := []int64{4, 7, 3, 5}; !slices.Equal(order, want) {
				t.Fatalf("claimed %v, want %v", order, want)
			}
		})
	}
}

func mapsEqual(a, b map[int64]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// BenchmarkClaimBehindBacklog measures the poll of an idle worker while
// one key has a backlog behind its running job: before jobs.behind, every
// poll stepped over the whole backlog.
func BenchmarkClaimBehindBacklog(b *testing.B) {
	for _, d := range metatest.Dialects() {
		for _, backlog := range []int{10, 10000} {
			b.Run(fmt.Sprintf("%s/backlog=%d", d, backlog), func(b *testing.B) {
				ctx := context.Background()
				db := metatest.Open(b, d)
				for range backlog + 1 {
					enqueue(b, db, meta.Job{Queue: "q", OrderingKey: "busy"})
				}
				if _, ok, err := db.Jobs().ClaimJob(ctx, "q", "w", time.Hour); err != nil || !ok {
					b.Fatal(ok, err)
				}
				b.ResetTimer()
				for range b.N {
					if _, ok, err := db.Jobs().ClaimJob(ctx, "q", "idle", lease); err != nil || ok {
						b.Fatal(ok, err)
					}
				}
			})
		}
	}
}

// TestJobsBehindSwept: a job ended by a binary that predates the behind
// mark (a replica still running during a rolling upgrade) does not put its
// key's next job in front; an idle worker's claim finds it anyway, at
// most a sweep interval later.
func TestJobsBehindSwept(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			dbA, dbB := openShared(t, d)
			first := enqueue(t, dbA, meta.Job{Queue: "q", OrderingKey: "k"})
			second := enqueue(t, dbA, meta.Job{Queue: "q", OrderingKey: "k"})
			if got := claimID(t, dbA, "q", "w"); got != first {
				t.Fatalf("claimed %d, want %d", got, first)
			}
			// As the older binary completes it: no mark changes.
			if err := dbA.Exec(ctx, "UPDATE jobs SET status = 'done', lease_owner = '' WHERE id = ?", first); err != nil {
				t.Fatal(err)
			}
			// dbB is another process: its first idle poll of the queue
			// sweeps.
			j, ok, err := dbB.Jobs().ClaimJob(ctx, "q", "w2", lease)
			if err != nil || !ok || j.ID != second {
				t.Fatalf("claim after the stray end = %d, %v, %v; want %d", j.ID, ok, err, second)
			}
			checkBehind(t, dbB, "q", "the sweep")
			// dbB swept at that poll and does not again within the
			// interval (a sweep walks the queue's backlog): a second stray
			// end waits for the next sweep.
			third := enqueue(t, dbA, meta.Job{Queue: "q", OrderingKey: "k"})
			if err := dbA.Exec(ctx, "UPDATE jobs SET status = 'done', lease_owner = '' WHERE id = ?", second); err != nil {
				t.Fatal(err)
			}
			if got := claimID(t, dbB, "q", "w3"); got != 0 {
				t.Fatalf("claimed %d (of %d held behind nothing) within the sweep interval", got, third)
			}
		})
	}
}
