package notify_test

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
)

// jobsOf are the notify jobs of notification n (with any status).
func jobsOf(t *testing.T, db *meta.DB, n meta.Notification) []meta.Job {
	t.Helper()
	js, err := db.Jobs().Jobs(context.Background(), meta.NotifyQueue, "", 10000)
	if err != nil {
		t.Fatal(err)
	}
	var out []meta.Job
	for _, j := range js {
		if strings.HasPrefix(j.OrderingKey, n.UUID+"|") {
			out = append(out, j)
		}
	}
	return out
}

// liveJobs are the notify jobs of notification n that are pending or
// running.
func liveJobs(t *testing.T, db *meta.DB, n meta.Notification) []meta.Job {
	t.Helper()
	var out []meta.Job
	for _, j := range jobsOf(t, db, n) {
		if j.Status == "pending" || j.Status == "running" {
			out = append(out, j)
		}
	}
	return out
}

// TestDisabledUntilResetHearsNothing: a notification whose receiver
// refused (404) until it is disabled until reset hears nothing more, as in
// Quay: 50 pushes queue no delivery for it (another notification of the
// organization hears them all), its own deliveries end, and no request
// reaches its receiver; once reset, the next push is delivered.
func TestDisabledUntilResetHearsNothing(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			db := metatest.Open(t, dialect)
			createOrg(t, db, "acme")
			refusing, healthy := newReceiver(t), newReceiver(t)
			refusing.set("404")
			inst := startWith(t, ctx, db, notify.Options{}, jobs.Options{Backoff: func(int) time.Duration { return 10 * time.Millisecond }})
			create := func(url string) meta.Notification {
				n, err := inst.svc.Create(ctx, meta.ScopeOrganization, "acme", "alice", notify.Input{Event: "repo_push", Method: "webhook",
					Config: map[string]any{"url": url}})
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			n, control := create(refusing.srv.URL), create(healthy.srv.URL)
			for i := range meta.MaxNotificationFailures { // each refused 5 times, then dropped: 3 failures
				push(t, db, "acme/a", fmt.Sprint("v0-", i), 100+i)
			}
			waitFor(t, "the notification to disable itself until reset", 30*time.Second, func() bool {
				return mustNotification(t, db, n.ID).DisabledUntilReset()
			})
			waitFor(t, "its failed delivery to end", 10*time.Second, func() bool { return len(liveJobs(t, db, n)) == 0 })
			refusing.mu.Lock()
			atDisable := refusing.attempts
			refusing.mu.Unlock()

			const pushes = 50
			for i := 1; i <= pushes; i++ {
				push(t, db, fmt.Sprintf("acme/r%d", i%5), fmt.Sprint("v", i), i)
			}
			// The feed hands events on in order: once the other notification
			// has them all, the disabled one has heard them too.
			waitFor(t, "the other notification's deliveries", 30*time.Second, func() bool {
				healthy.mu.Lock()
				defer healthy.mu.Unlock()
				return len(healthy.seen) == pushes+meta.MaxNotificationFailures
			})
			waitFor(t, "the other notification's jobs to complete", 10*time.Second, func() bool { return len(liveJobs(t, db, control)) == 0 })
			time.Sleep(200 * time.Millisecond)
			if live := liveJobs(t, db, n); len(live) != 0 {
				t.Fatalf("a notification disabled until reset has %d deliveries queued or running (first: %+v)", len(live), live[0])
			}
			if all := jobsOf(t, db, n); len(all) != meta.MaxNotificationFailures {
				t.Errorf("%d deliveries queued for a notification disabled until reset; want only the first pushes'", len(all)-meta.MaxNotificationFailures)
			}
			refusing.mu.Lock()
			if refusing.attempts != atDisable {
				t.Errorf("%d requests to the refusing receiver while disabled", refusing.attempts-atDisable)
			}
			refusing.mu.Unlock()

			refusing.set("ok")
			if err := db.Notifications().ResetNotificationFailures(ctx, n.ID); err != nil {
				t.Fatal(err)
			}
			push(t, db, "acme/a", "after-reset", pushes+1)
			waitFor(t, "the push after the reset", 10*time.Second, func() bool {
				refusing.mu.Lock()
				defer refusing.mu.Unlock()
				return len(refusing.seen) == 1
			})
			evs, err := db.Outbox().EventsAfter(ctx, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			refusing.mu.Lock()
			defer refusing.mu.Unlock()
			if last := evs[len(evs)-1]; last.Kind != meta.EventRepoPush || refusing.seen[last.UUID] != 1 {
				t.Fatalf("after the reset the receiver got %v, want the last push %s", refusing.seen, last.UUID)
			}
		})
	}
}

// TestTestDeliveryLeavesFailureCount: a successful test delivery is
// recorded, but, as Quay's test, it neither resets the failure count nor
// re-enables a disabled notification.
func TestTestDeliveryLeavesFailureCount(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			db := metatest.Open(t, dialect)
			rcv := newReceiver(t)
			inst := start(t, ctx, db)
			n, err := inst.svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: "webhook",
				Config: map[string]any{"url": rcv.srv.URL}})
			if err != nil {
				t.Fatal(err)
			}
			for range meta.MaxNotificationFailures {
				if _, err := db.Notifications().NotificationFailed(ctx, n.ID, meta.NotificationFailure{Reason: "receiver answered 404", Refused: true}); err != nil {
					t.Fatal(err)
				}
			}
			if err := inst.svc.Test(ctx, n, "acme/app"); err != nil {
				t.Fatal(err)
			}
			waitFor(t, "the test delivery's attempt", 10*time.Second, func() bool {
				at, _ := db.Notifications().Attempts(ctx, n.ID, 10)
				return len(at) == 1 && at[0].StatusCode == 204
			})
			waitFor(t, "the test delivery's job to end", 10*time.Second, func() bool { return len(liveJobs(t, db, n)) == 0 })
			fresh := mustNotification(t, db, n.ID)
			if fresh.NumberOfFailures != meta.MaxNotificationFailures || !fresh.DisabledUntilReset() || fresh.DisabledReason != "receiver answered 404" {
				t.Fatalf("after a successful test: %d failures, disabled until reset %v, reason %q; want it as it was",
					fresh.NumberOfFailures, fresh.DisabledUntilReset(), fresh.DisabledReason)
			}
		})
	}
}

// tableResolver answers host names from a table that the test may
// change; a name not in it is not found (NXDOMAIN), as a cluster's
// resolver says it, naming itself.
type tableResolver struct {
	mu    sync.Mutex
	addrs map[string]string
}

func (r *tableResolver) set(host, addr string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addrs[host] = addr
}

func (r *tableResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if a, ok := r.addrs[host]; ok {
		return []netip.Addr{netip.MustParseAddr(a)}, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, Server: "10.96.0.10:53", IsNotFound: true}
}

// TestUnreachableTargetDisabledUntilReset: a webhook whose host name does
// not exist (accepted at creation: it may not resolve yet), or comes to
// resolve to an address the SSRF guard refuses, is misconfigured, as a
// receiver's 404 says: three events that fail so disable it until reset,
// its deliveries end and it hears nothing more, rather than being held,
// with a backlog of every event, for as long as it exists. Its reason
// names neither the registry's DNS server nor the refused address.
func TestUnreachableTargetDisabledUntilReset(t *testing.T) {
	for _, tc := range []struct{ name, url, resolvesTo string }{
		{"not found", "http://x.invalid/h", ""},
		{"refused by the SSRF guard", "http://hooks.example/h", "10.1.2.3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			db := metatest.Open(t, "sqlite")
			r := &tableResolver{addrs: map[string]string{}}
			guard, err := events.NewGuard([]string{"loopback"}, events.WithResolver(r))
			if err != nil {
				t.Fatal(err)
			}
			inst := startWith(t, ctx, db, notify.Options{Guard: guard}, jobs.Options{Backoff: func(int) time.Duration { return 10 * time.Millisecond }})
			create := func(url string) meta.Notification {
				n, err := inst.svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: "webhook",
					Config: map[string]any{"url": url}})
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			healthy := newReceiver(t)
			n, control := create(tc.url), create(healthy.srv.URL)
			if tc.resolvesTo != "" {
				r.set("hooks.example", tc.resolvesTo)
			}
			const pushes = 6
			for i := range pushes {
				push(t, db, fmt.Sprintf("ns/app%d", i%3), fmt.Sprint("v", i), i)
			}
			waitFor(t, "the notification to disable itself until reset", 30*time.Second, func() bool {
				return mustNotification(t, db, n.ID).DisabledUntilReset()
			})
			waitFor(t, "its deliveries to end", 10*time.Second, func() bool { return len(liveJobs(t, db, n)) == 0 })
			reason := mustNotification(t, db, n.ID).DisabledReason
			for _, leak := range []string{"10.96.0.10", "10.1.2.3"} {
				if strings.Contains(reason, leak) {
					t.Errorf("disabled_reason names %s: %s", leak, reason)
				}
			}
			queued := len(jobsOf(t, db, n))
			for i := pushes; i < 2*pushes; i++ {
				push(t, db, fmt.Sprintf("ns/app%d", i%3), fmt.Sprint("v", i), i)
			}
			waitFor(t, "the other notification's deliveries", 30*time.Second, func() bool {
				healthy.mu.Lock()
				defer healthy.mu.Unlock()
				return len(healthy.seen) == 2*pushes
			})
			waitFor(t, "the other notification's jobs to complete", 10*time.Second, func() bool { return len(liveJobs(t, db, control)) == 0 })
			if live := liveJobs(t, db, n); len(live) != 0 {
				t.Fatalf("%d deliveries live for a notification disabled until reset", len(live))
			}
			if all := len(jobsOf(t, db, n)); all != queued {
				t.Errorf("%d deliveries queued after it was disabled until reset", all-queued)
			}
		})
	}
}
