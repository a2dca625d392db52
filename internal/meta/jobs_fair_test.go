package meta_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestFairClaims: the queue's workers are shared between fair keys
// (tenants). A tenant with many ready jobs gets at most
// meta.JobFairShare of them running while another tenant's job is
// ready, however much newer that job is; a tenant with none running goes
// before one with some; and no worker idles while any job is ready.
func TestFairClaims(t *testing.T) {
	tests := []struct {
		name string
		fn   func(t *testing.T, db *meta.DB)
	}{
		{"OtherTenantNext", testFairOtherTenantNext},
		{"ChainHandsOnFairly", testFairChainHandsOn},
		{"OrderingKeysHold", testFairOrderingKeysHold},
	}
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, metatest.Open(t, d)) })
			}
		})
	}
}

// tenantJobs enqueues n ready jobs of tenant, each of an ordering key of
// its own (the deliveries of n webhooks, named from first on), and
// returns their ids.
func tenantJobs(t *testing.T, db *meta.DB, tenant string, first, n int) []int64 {
	t.Helper()
	ids := make([]int64, n)
	for i := range ids {
		ids[i] = enqueue(t, db, meta.Job{Queue: "q", OrderingKey: fmt.Sprintf("%s-hook%d", tenant, first+i), FairKey: tenant})
	}
	return ids
}

func wantClaims(t *testing.T, db *meta.DB, what string, want ...int64) {
	t.Helper()
	for i, w := range want {
		if got := claimID(t, db, "q", "w"); got != w {
			t.Fatalf("%s: claim %d = job %d, want %d", what, i+1, got, w)
		}
	}
}

func testFairOtherTenantNext(t *testing.T, db *meta.DB) {
	a := tenantJobs(t, db, "acme", 0, 10)
	if got := claimID(t, db, "q", "w"); got != a[0] {
		t.Fatalf("first claim = %d, want %d", got, a[0])
	}
	for range meta.JobFairShare - 1 {
		claimID(t, db, "q", "w")
	}
	// acme has its share running: the newer job of another tenant goes
	// before acme's older ones.
	b := tenantJobs(t, db, "bravo", 0, 1)
	wantClaims(t, db, "bravo's job while acme has its share", b[0])
	// Nothing else is ready: acme's jobs take the idle workers.
	wantClaims(t, db, "acme past its share, no one else waiting", a[meta.JobFairShare], a[meta.JobFairShare+1])
	// A tenant with nothing running goes before one with less than its
	// share; jobs of no tenant are never held back.
	b = append(b, tenantJobs(t, db, "bravo", 1, 1)...)
	c := tenantJobs(t, db, "charlie", 0, 1)
	free := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "free"})
	wantClaims(t, db, "charlie, then the free job, then bravo", c[0], free, b[1])
}

// testFairChainHandsOn: a worker that completes a job whose key has no
// next job claims the next job of the queue by the same rule.
func testFairChainHandsOn(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	a := tenantJobs(t, db, "acme", 0, 10)
	var running []int64
	for range meta.JobFairShare {
		running = append(running, claimID(t, db, "q", "w"))
	}
	b := tenantJobs(t, db, "bravo", 0, 1)
	next, ok, err := db.Jobs().CompleteJobClaimNext(ctx, running[0], "w", "w", lease)
	if err != nil {
		t.Fatal(err)
	}
	if !ok || next.ID != b[0] {
		t.Fatalf("after job %d of acme, the worker chained to job %d (%v), want bravo's %d (acme's %v are older)", running[0], next.ID, ok, b[0], a[meta.JobFairShare:])
	}
}

// testFairOrderingKeysHold: a tenant's jobs of one ordering key still
// run one at a time, in order, whatever the fairness allows.
func testFairOrderingKeysHold(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	x1 := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "x", FairKey: "acme"})
	x2 := enqueue(t, db, meta.Job{Queue: "q", OrderingKey: "x", FairKey: "acme"})
	wantClaims(t, db, "one job of key x at a time", x1, 0)
	if err := db.Jobs().CompleteJob(ctx, x1, "w"); err != nil {
		t.Fatal(err)
	}
	wantClaims(t, db, "the next job of key x", x2)
	if j := jobByID(t, db, x2); j.FairKey != "acme" {
		t.Errorf("job %d has fair key %q, want acme", x2, j.FairKey)
	}
}

// BenchmarkFairClaimSaturated: a claim (and the deferral that puts the
// job back) while one tenant's 10,000 deliveries to 100 webhooks are
// queued and it has more than its share running, so that the claim's
// first two searches step over every webhook's front job before the
// third takes one; against the same backlog without a fair key.
func BenchmarkFairClaimSaturated(b *testing.B) {
	for _, d := range metatest.Dialects() {
		for _, fair := range []string{"", "acme"} {
			b.Run(fmt.Sprintf("%s/fair_key=%q", d, fair), func(b *testing.B) {
				ctx := context.Background()
				db := metatest.Open(b, d)
				for i := range 10000 {
					enqueue(b, db, meta.Job{Queue: "q", OrderingKey: fmt.Sprintf("hook%d", i%100), FairKey: fair})
				}
				for range 4 {
					if _, ok, err := db.Jobs().ClaimJob(ctx, "q", "w", time.Hour); err != nil || !ok {
						b.Fatal(ok, err)
					}
				}
				b.ResetTimer()
				for range b.N {
					j, ok, err := db.Jobs().ClaimJob(ctx, "q", "bench", lease)
					if err != nil || !ok {
						b.Fatal(ok, err)
					}
					if err := db.Jobs().DeferJob(ctx, j.ID, "bench", time.Now(), "again"); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
