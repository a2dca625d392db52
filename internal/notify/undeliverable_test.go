package notify_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/wire"
)

// TestUndeliverableIsRecordedAndCounted: a delivery that the
// notification's configuration makes impossible (its template renders
// over events.MaxRenderedSize for a real payload; its secret was sealed
// with another key) ends at once, but not silently: each is a recorded
// attempt whose error says why (and shows no secret), and counts as a
// refusal, so 3 events disable the notification until it is fixed and
// reset. A test delivery is recorded and counts nothing.
func TestUndeliverableIsRecordedAndCounted(t *testing.T) {
	ctx := context.Background()
	db := metatest.Open(t, metatest.Dialects()[0])
	rcv := newReceiver(t)
	guard, err := events.NewGuard([]string{"loopback"})
	if err != nil {
		t.Fatal(err)
	}
	sealer := func(b byte) *auth.Sealer {
		key := make([]byte, 32)
		key[0] = b
		s, err := auth.NewSealer(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	stores := wire.NotifyStores(db)
	opts := notify.Options{Guard: guard, Server: events.Server{Host: "registry.example"}, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
	before := notify.New(stores, sealer(1), opts) // the key the secret was sealed with
	after := notify.New(stores, sealer(2), opts)  // the key the registry has now
	const secret = "s3cret-signing-key"
	rotated, err := before.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: "webhook",
		Config: map[string]any{"url": rcv.srv.URL, "secret": secret}})
	if err != nil {
		t.Fatal(err)
	}
	// Small against the empty payload Create renders it with; some MiB
	// against a real one.
	huge, err := before.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: "webhook",
		Config: map[string]any{"url": rcv.srv.URL, "template": `{"text":"` + strings.Repeat("${$}", 5000) + `"}`}})
	if err != nil {
		t.Fatal(err)
	}
	for i := range meta.MaxNotificationFailures {
		push(t, db, "acme/app", "v1", i)
	}
	evs, err := db.Outbox().EventsAfter(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	jobID := int64(0)
	deliver := func(n meta.Notification, dj meta.DeliveryJob) error {
		jobID++
		dj.NotificationID = n.ID
		payload, _ := json.Marshal(dj)
		return after.Deliver(ctx, meta.Job{ID: jobID, Queue: meta.NotifyQueue, Payload: payload, Attempts: 1, MaxAttempts: 1000})
	}
	for _, tc := range []struct {
		n    meta.Notification
		want string
	}{
		{rotated, "sealed secret"},
		{huge, events.ErrRenderedTooLarge.Error()},
	} {
		if err := deliver(tc.n, meta.DeliveryJob{Sample: true, Repository: "acme/app"}); !jobs.IsPermanent(err) {
			t.Fatalf("test delivery: %v, want a permanent error", err)
		}
		if got := mustNotification(t, db, tc.n.ID); got.NumberOfFailures != 0 {
			t.Fatalf("a failed test delivery counted: %d failures", got.NumberOfFailures)
		}
		for _, e := range evs {
			if e.Kind != meta.EventRepoPush {
				continue
			}
			if err := deliver(tc.n, meta.DeliveryJob{EventID: e.ID, Repository: e.Repository}); !jobs.IsPermanent(err) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("deliver: %v, want a permanent error saying %q", err, tc.want)
			}
		}
		at, err := db.Notifications().Attempts(ctx, tc.n.ID, 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(at) != meta.MaxNotificationFailures+1 {
			t.Fatalf("%d attempts recorded, want %d (the test and each event)", len(at), meta.MaxNotificationFailures+1)
		}
		for _, a := range at {
			if !strings.Contains(a.Error, tc.want) || strings.Contains(a.Error, secret) || a.StatusCode != 0 {
				t.Fatalf("attempt %+v: want the error %q, no secret", a, tc.want)
			}
		}
		if at[0].EventUUID != evs[len(evs)-1].UUID {
			t.Errorf("the last attempt names event %q, want %s", at[0].EventUUID, evs[len(evs)-1].UUID)
		}
		got := mustNotification(t, db, tc.n.ID)
		if got.NumberOfFailures != meta.MaxNotificationFailures || !got.DisabledUntilReset() || !strings.Contains(got.DisabledReason, tc.want) {
			t.Fatalf("after %d undeliverable events: %d failures, disabled until reset %v, reason %q",
				meta.MaxNotificationFailures, got.NumberOfFailures, got.DisabledUntilReset(), got.DisabledReason)
		}
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if rcv.attempts != 0 {
		t.Errorf("the receiver got %d requests", rcv.attempts)
	}
}

// TestNotificationDeletedWhileDelivering: a notification deleted while its
// delivery waits on the receiver: the delivery's job completes at once
// when the receiver answers (the attempt of a notification that is gone is
// not stored), rather than staying running until its lease runs out and
// being dead-lettered.
func TestNotificationDeletedWhileDelivering(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			db := metatest.Open(t, dialect)
			arrived, release := make(chan struct{}), make(chan struct{})
			var once sync.Once
			rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				once.Do(func() { close(arrived) })
				select {
				case <-release:
				case <-r.Context().Done():
				}
				w.WriteHeader(http.StatusNoContent)
			}))
			defer rcv.Close()
			defer close(release)
			inst := start(t, ctx, db) // leases of 30 s
			n, err := inst.svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: "webhook",
				Config: map[string]any{"url": rcv.URL}})
			if err != nil {
				t.Fatal(err)
			}
			push(t, db, "acme/app", "v1", 0)
			select {
			case <-arrived:
			case <-time.After(10 * time.Second):
				t.Fatal("no delivery reached the receiver")
			}
			if err := db.Notifications().DeleteNotification(ctx, n.ID); err != nil {
				t.Fatal(err)
			}
			release <- struct{}{}
			var js []meta.Job
			waitFor(t, "the delivery's job to complete", 5*time.Second, func() bool {
				js = jobsOf(t, db, n)
				return len(js) == 1 && js[0].Status == "done"
			})
			if at, _ := db.Notifications().Attempts(ctx, n.ID, 10); len(at) != 0 {
				t.Errorf("attempts of a deleted notification: %+v", at)
			}
		})
	}
}
