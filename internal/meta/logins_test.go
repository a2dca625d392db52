package meta_test

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

func TestLoginAttempts(t *testing.T) {
	tests := []struct {
		name string
		fn   func(t *testing.T, db *meta.DB)
	}{
		{"ConcurrentReservations", testLoginConcurrent},
		{"Release", testLoginRelease},
		{"WindowExpiry", testLoginWindow},
	}
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			for _, tc := range tests {
				t.Run(tc.name, func(t *testing.T) { tc.fn(t, metatest.Open(t, d)) })
			}
		})
	}
}

// reserveAll runs n reservations at once and returns how many were
// counted.
func reserveAll(t *testing.T, db *meta.DB, n int, window time.Duration, limits ...meta.LoginLimit) int {
	t.Helper()
	var ok atomic.Int64
	var wg sync.WaitGroup
	start := make(chan struct{})
	for range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			got, wait, err := db.Access().ReserveLoginAttempt(context.Background(), window, limits...)
			switch {
			case err != nil:
				t.Errorf("ReserveLoginAttempt: %v", err)
			case got && wait != 0:
				t.Errorf("a counted attempt came with a wait of %s", wait)
			case !got && (wait <= 0 || wait > window):
				t.Errorf("a refused attempt came with a wait of %s, want (0, %s]", wait, window)
			case got:
				ok.Add(1)
			}
		}()
	}
	close(start)
	wg.Wait()
	return int(ok.Load())
}

func throttle(t *testing.T, db *meta.DB, window time.Duration, limits ...meta.LoginLimit) time.Duration {
	t.Helper()
	wait, err := db.Access().LoginThrottle(context.Background(), window, limits...)
	if err != nil {
		t.Fatal(err)
	}
	return wait
}

func testLoginConcurrent(t *testing.T, db *meta.DB) {
	const window = time.Hour
	pair := meta.LoginLimit{Key: "pair:10.0.0.1|alice", Limit: 10}
	addr := meta.LoginLimit{Key: "address:10.0.0.1", Limit: 25}
	if w := throttle(t, db, window, pair, addr); w != 0 {
		t.Fatalf("fresh counters: throttled for %s", w)
	}
	if n := reserveAll(t, db, 60, window, pair, addr); n != 10 {
		t.Fatalf("60 concurrent reservations under a limit of 10: %d counted", n)
	}
	if w := throttle(t, db, window, pair); w <= 0 || w > window {
		t.Fatalf("full pair: throttled for %s, want (0, %s]", w, window)
	}
	if w := throttle(t, db, window, addr); w != 0 {
		t.Fatalf("address with 10 of 25: throttled for %s", w)
	}
	// Another account from the same address fills the address's limit;
	// the refused ones count nothing under their pair (all or none).
	other := meta.LoginLimit{Key: "pair:10.0.0.1|bob", Limit: 100}
	if n := reserveAll(t, db, 40, window, other, addr); n != 15 {
		t.Fatalf("40 concurrent reservations with 15 left on the address: %d counted", n)
	}
	if w := throttle(t, db, window, other); w != 0 {
		t.Fatalf("bob's pair with 15 of 100: throttled for %s", w)
	}
	if w := throttle(t, db, window, other, addr); w <= 0 {
		t.Fatal("a full address does not throttle")
	}
	if err := db.Access().ReleaseLoginAttempt(context.Background(), addr.Key, false); err != nil {
		t.Fatal(err)
	}
	// One slot is free on the address; bob's pair has 85 left: exactly one
	// of many goes through, so bob's pair counted 15+1, not 15+40.
	if n := reserveAll(t, db, 20, window, other, addr); n != 1 {
		t.Fatalf("one slot left on the address: %d counted", n)
	}
	big := meta.LoginLimit{Key: other.Key, Limit: 16}
	if w := throttle(t, db, window, big); w <= 0 {
		t.Fatal("bob's pair counted fewer than 16 attempts")
	}
	if w := throttle(t, db, window, meta.LoginLimit{Key: other.Key, Limit: 17}); w != 0 {
		t.Fatalf("bob's pair counted more than 16 attempts (refused reservations were counted): throttled for %s", w)
	}
}

func testLoginRelease(t *testing.T, db *meta.DB) {
	ctx := context.Background()
	const window = time.Hour
	pair := meta.LoginLimit{Key: "pair:10.0.0.2|alice", Limit: 3}
	addr := meta.LoginLimit{Key: "address:10.0.0.2", Limit: 50}
	if n := reserveAll(t, db, 5, window, pair, addr); n != 3 {
		t.Fatalf("5 reservations under a limit of 3: %d counted", n)
	}
	// Giving one back frees exactly one attempt.
	if err := db.Access().ReleaseLoginAttempt(ctx, pair.Key, false); err != nil {
		t.Fatal(err)
	}
	if n := reserveAll(t, db, 5, window, pair, addr); n != 1 {
		t.Fatalf("after giving one back: %d counted, want 1", n)
	}
	// Clearing the key frees all of them.
	if err := db.Access().ReleaseLoginAttempt(ctx, pair.Key, true); err != nil {
		t.Fatal(err)
	}
	if w := throttle(t, db, window, pair); w != 0 {
		t.Fatalf("after clearing: throttled for %s", w)
	}
	if n := reserveAll(t, db, 5, window, pair, addr); n != 3 {
		t.Fatalf("after clearing: %d counted, want 3", n)
	}
	// Giving back never goes below zero, nor fails for an unknown key.
	for range 10 {
		if err := db.Access().ReleaseLoginAttempt(ctx, "address:10.0.0.3", false); err != nil {
			t.Fatal(err)
		}
	}
	lone := meta.LoginLimit{Key: "address:10.0.0.3", Limit: 2}
	if n := reserveAll(t, db, 5, window, lone); n != 2 {
		t.Fatalf("a key given back more often than counted: %d counted, want 2", n)
	}
}

func testLoginWindow(t *testing.T, db *meta.DB) {
	const window = 1500 * time.Millisecond
	pair := meta.LoginLimit{Key: "pair:10.0.0.4|alice", Limit: 2}
	if n := reserveAll(t, db, 5, window, pair); n != 2 {
		t.Fatalf("5 reservations under a limit of 2: %d counted", n)
	}
	w := throttle(t, db, window, pair)
	if w <= 0 || w > window {
		t.Fatalf("full: throttled for %s, want (0, %s]", w, window)
	}
	time.Sleep(w + 50*time.Millisecond)
	if w := throttle(t, db, window, pair); w != 0 {
		t.Fatalf("after the window: throttled for %s", w)
	}
	// A new window starts at the next attempt, counting it as the first.
	if n := reserveAll(t, db, 5, window, pair); n != 2 {
		t.Fatalf("after the window: %d counted, want the limit of 2", n)
	}
}

// TestPruneEndedLoginCounters: failed-login counters (one per made-up
// name an unauthenticated client tries, from each address) go once their
// window started over an hour ago; current ones stay and still throttle.
// Before, nothing removed them: the table grew with every name tried.
func TestPruneEndedLoginCounters(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			for i := range 2500 {
				if ok, _, err := db.Access().ReserveLoginAttempt(ctx, 5*time.Minute, meta.LoginLimit{Key: fmt.Sprintf("address:192.0.2.1|nobody%d", i), Limit: 10}); err != nil || !ok {
					t.Fatalf("reserve %d: %v %v", i, ok, err)
				}
			}
			if err := db.Exec(ctx, "UPDATE login_failures SET window_start = ?", time.Now().Add(-2*time.Hour).UnixMicro()); err != nil {
				t.Fatal(err)
			}
			current := meta.LoginLimit{Key: "address:192.0.2.9", Limit: 1}
			if ok, _, err := db.Access().ReserveLoginAttempt(ctx, 5*time.Minute, current); err != nil || !ok {
				t.Fatalf("reserve: %v %v", ok, err)
			}
			dry, err := db.Collector().Prune(ctx, meta.Retention{}, true)
			if err != nil || dry.Logins != 2500 {
				t.Fatalf("dry run: %+v %v", dry, err)
			}
			c, err := db.Collector().Prune(ctx, meta.Retention{}, false)
			if err != nil || c.Logins != 2500 {
				t.Fatalf("prune: %+v %v", c, err)
			}
			if ok, _, err := db.Access().ReserveLoginAttempt(ctx, 5*time.Minute, current); err != nil || ok {
				t.Fatalf("the current counter was pruned: a second attempt was allowed (%v)", err)
			}
			if c, _ = db.Collector().Prune(ctx, meta.Retention{}, false); c.Logins != 0 {
				t.Fatalf("second prune: %+v", c)
			}
		})
	}
}
