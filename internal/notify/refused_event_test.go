package notify_test

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
)

// TestRefusedEventDropped: an organization's webhook whose receiver
// refuses (404) the events of acme/x and accepts those of acme/y is not
// disabled (acme/y's successes reset its count), but an event of acme/x
// refused for 2*NotifyTries attempts (minutes, with the default backoff)
// is dropped: its delivery ends after those attempts, as the failures it
// counted, and acme/x's next event is delivered rather than held behind
// days of retries of a refusal.
func TestRefusedEventDropped(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			db := metatest.Open(t, dialect)
			createOrg(t, db, "acme")
			rcv := newReceiver(t)
			rcv.setRepo("acme/x", "404")
			inst := startWith(t, ctx, db, notify.Options{}, jobs.Options{Backoff: func(attempt int) time.Duration {
				if attempt < 2*meta.NotifyTries {
					return 10 * time.Millisecond
				}
				return time.Hour // what the default backoff grows to
			}})
			n, err := inst.svc.Create(ctx, meta.ScopeOrganization, "acme", "alice", notify.Input{Event: "repo_push", Method: "webhook",
				Config: map[string]any{"url": rcv.srv.URL}})
			if err != nil {
				t.Fatal(err)
			}
			push(t, db, "acme/x", "v0", 0)
			push(t, db, "acme/y", "v0", 1)
			streamX := func() []meta.Job {
				var out []meta.Job
				for _, j := range jobsOf(t, db, n) {
					if j.OrderingKey == n.UUID+"|acme/x" {
						out = append(out, j)
					}
				}
				return out
			}
			waitFor(t, "acme/x's refused event to end", 30*time.Second, func() bool {
				js := streamX()
				return len(js) == 1 && js[0].Status != meta.JobPending && js[0].Status != "running"
			})
			if j := streamX()[0]; j.Attempts != 2*meta.NotifyTries {
				t.Errorf("the refused event's delivery ended after %d attempts, want %d", j.Attempts, 2*meta.NotifyTries)
			}
			waitFor(t, "acme/y's event", 10*time.Second, func() bool {
				rcv.mu.Lock()
				defer rcv.mu.Unlock()
				return len(rcv.order["acme/y"]) == 1
			})
			if fresh := mustNotification(t, db, n.ID); fresh.Disabled() {
				t.Fatalf("disabled after one refused event: %+v", fresh)
			}

			rcv.setRepo("acme/x", "ok")
			push(t, db, "acme/x", "v1", 2)
			evs, err := db.Outbox().EventsAfter(ctx, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			next := evs[len(evs)-1]
			waitFor(t, "acme/x's next event", 10*time.Second, func() bool {
				rcv.mu.Lock()
				defer rcv.mu.Unlock()
				return len(rcv.order["acme/x"]) == 1
			})
			rcv.mu.Lock()
			defer rcv.mu.Unlock()
			if got := rcv.order["acme/x"]; got[0] != next.UUID {
				t.Fatalf("acme/x got %v, want its next event %s", got, next.UUID)
			}
		})
	}
}

// TestPassingRefusalIsRetried: a receiver that refuses an event for its
// first counted attempt (a 404 while it is redeployed) and takes it
// later gets it: only a refusal that lasts drops an event.
func TestPassingRefusalIsRetried(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := metatest.Open(t, "sqlite")
	createOrg(t, db, "acme")
	rcv := newReceiver(t)
	rcv.setRepo("acme/x", "404")
	inst := startWith(t, ctx, db, notify.Options{}, jobs.Options{Backoff: func(attempt int) time.Duration {
		if attempt < meta.NotifyTries {
			return 10 * time.Millisecond
		}
		return 500 * time.Millisecond
	}})
	n, err := inst.svc.Create(ctx, meta.ScopeOrganization, "acme", "alice", notify.Input{Event: "repo_push", Method: "webhook",
		Config: map[string]any{"url": rcv.srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	push(t, db, "acme/x", "v0", 0)
	waitFor(t, "the counted attempt", 30*time.Second, func() bool {
		for _, j := range jobsOf(t, db, n) {
			if j.Attempts >= meta.NotifyTries {
				return true
			}
		}
		return false
	})
	rcv.setRepo("acme/x", "ok")
	waitFor(t, "the event, once the receiver takes it", 30*time.Second, func() bool {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return len(rcv.order["acme/x"]) == 1
	})
}
