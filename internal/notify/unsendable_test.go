package notify_test

import (
	"context"
	"encoding/json"
	"errors"
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

// testService is a service over db whose guard allows loopback receivers,
// with the sealer it seals with.
func testService(t *testing.T, db *meta.DB, opts notify.Options) (*notify.Service, *auth.Sealer) {
	t.Helper()
	sealer, err := auth.NewSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	guard, err := events.NewGuard([]string{"loopback"})
	if err != nil {
		t.Fatal(err)
	}
	opts.Guard, opts.Server = guard, events.Server{Host: "registry.example"}
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return notify.New(wire.NotifyStores(db), sealer, opts), sealer
}

// TestStoredUnsendableDisabledUntilReset: a notification stored with a
// configuration the HTTP client refuses to send (a header value holding a
// control character other than a tab, as earlier versions accepted; a
// github_dispatch repository that makes the URL unparsable) is, at
// delivery, the notification's fault, not its receiver's: each event's
// job ends at its first attempt with the reason recorded, and counts as a
// refusal, so that 3 events disable it until reset, rather than being
// retried for days with a disable that only grows.
func TestStoredUnsendableDisabledUntilReset(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			rcv := newReceiver(t)
			svc, sealer := testService(t, db, notify.Options{})
			stored := func(uuid, method string, cfg map[string]any) meta.Notification {
				b, _ := json.Marshal(cfg)
				n, err := db.Notifications().CreateNotification(ctx, meta.Notification{UUID: uuid, Scope: meta.ScopeRegistry,
					Event: meta.EventRepoPush, Method: method, Config: b})
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			for i := range meta.MaxNotificationFailures {
				push(t, db, "acme/app", "v1", i)
			}
			evs, err := db.Outbox().EventsAfter(ctx, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			jobID := int64(0)
			for _, tc := range []struct {
				name string
				n    meta.Notification
				want string
			}{
				{"control character", stored("00000000-0000-0000-0000-0000000000a1", "webhook",
					map[string]any{"url": rcv.srv.URL, "headers": map[string]string{"X-Key": "k\u0001ey-secret"}}), "X-Key"},
				{"DEL", stored("00000000-0000-0000-0000-0000000000a2", "webhook",
					map[string]any{"url": rcv.srv.URL, "headers": map[string]string{"X-Key": "k\x7fey-secret"}}), "X-Key"},
				{"dispatch repository", stored("00000000-0000-0000-0000-0000000000a3", events.MethodGitHubDispatch,
					map[string]any{"repository": "o/na%zz", "api_url": rcv.srv.URL, "token_sealed": sealer.Seal([]byte("ghp-token-secret"))}), "o/na%zz"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					for _, e := range evs {
						if e.Kind != meta.EventRepoPush {
							continue
						}
						jobID++
						payload, _ := json.Marshal(meta.DeliveryJob{NotificationID: tc.n.ID, EventID: e.ID, Repository: e.Repository})
						err := svc.Deliver(ctx, meta.Job{ID: jobID, Queue: meta.NotifyQueue, Payload: payload, Attempts: 1, MaxAttempts: 1000})
						if !jobs.IsPermanent(err) {
							t.Fatalf("deliver: %v, want a permanent error (not retried)", err)
						}
					}
					got := mustNotification(t, db, tc.n.ID)
					if got.NumberOfFailures != meta.MaxNotificationFailures || !got.DisabledUntilReset() || !strings.Contains(got.DisabledReason, tc.want) {
						t.Fatalf("after %d unsendable events: %d failures, disabled until reset %v, reason %q",
							meta.MaxNotificationFailures, got.NumberOfFailures, got.DisabledUntilReset(), got.DisabledReason)
					}
					at, err := db.Notifications().Attempts(ctx, tc.n.ID, 100)
					if err != nil {
						t.Fatal(err)
					}
					if len(at) != meta.MaxNotificationFailures {
						t.Fatalf("%d attempts recorded, want %d", len(at), meta.MaxNotificationFailures)
					}
					for _, a := range at {
						if !strings.Contains(a.Error, tc.want) || strings.Contains(a.Error, "secret") {
							t.Fatalf("attempt error %q: want the reason (%q), no secret", a.Error, tc.want)
						}
					}
				})
			}
			rcv.mu.Lock()
			defer rcv.mu.Unlock()
			if rcv.attempts != 0 {
				t.Errorf("the receiver got %d requests", rcv.attempts)
			}
		})
	}
}

// TestInterruptedTrialCountsNothing: a trial delivery that shutdown (or a
// lost lease) interrupts while the receiver has not answered says nothing
// about the receiver: the failure count, the disable and its reason stay
// as they were (not doubled), and the error goes back to the queue, which
// runs the delivery again as interrupted.
func TestInterruptedTrialCountsNothing(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			db := metatest.Open(t, dialect)
			arrived := make(chan struct{})
			var once sync.Once
			rcv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				io.Copy(io.Discard, r.Body) // then the server sees the client go
				once.Do(func() { close(arrived) })
				select {
				case <-r.Context().Done():
				case <-time.After(20 * time.Second):
				}
			}))
			defer rcv.Close()
			const disableFor = time.Minute
			svc, _ := testService(t, db, notify.Options{DisableFor: disableFor, MaxDisableFor: time.Hour})
			ctx := context.Background()
			n, err := svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: "webhook",
				Config: map[string]any{"url": rcv.URL}})
			if err != nil {
				t.Fatal(err)
			}
			for range meta.MaxNotificationFailures {
				if _, err := db.Notifications().NotificationFailed(ctx, n.ID, meta.NotificationFailure{Reason: "receiver answered 503",
					DisableFor: disableFor, MaxDisableFor: time.Hour}); err != nil {
					t.Fatal(err)
				}
			}
			disabled := mustNotification(t, db, n.ID)
			if !disabled.Disabled() || disabled.DisabledUntilReset() {
				t.Fatalf("set-up: not disabled for a while: %+v", disabled)
			}
			svc.SetClock(func() time.Time { return time.Now().Add(2 * disableFor) }) // the disable has run out: a trial goes
			push(t, db, "acme/app", "v1", 0)
			evs, err := db.Outbox().EventsAfter(ctx, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			var ev meta.Event
			for _, e := range evs {
				if e.Kind == meta.EventRepoPush {
					ev = e
				}
			}
			jctx, cancel := context.WithCancel(ctx)
			defer cancel()
			go func() {
				select {
				case <-arrived:
				case <-time.After(10 * time.Second):
				}
				cancel()
			}()
			payload, _ := json.Marshal(meta.DeliveryJob{NotificationID: n.ID, EventID: ev.ID, Repository: ev.Repository})
			err = svc.Deliver(jctx, meta.Job{ID: 1, Queue: meta.NotifyQueue, Payload: payload, Attempts: meta.NotifyTries, MaxAttempts: 1000})
			select {
			case <-arrived:
			default:
				t.Fatal("the trial delivery never reached the receiver")
			}
			if err == nil || jobs.IsPermanent(err) || !errors.Is(err, context.Canceled) {
				t.Fatalf("interrupted delivery: %v, want the cancellation, not permanent", err)
			}
			got := mustNotification(t, db, n.ID)
			if got.NumberOfFailures != disabled.NumberOfFailures || got.DisabledFor != disabled.DisabledFor || got.DisabledReason != disabled.DisabledReason {
				t.Fatalf("after an interrupted trial: %d failures, disabled for %v (%q); want %d, %v (%q)",
					got.NumberOfFailures, got.DisabledFor, got.DisabledReason, disabled.NumberOfFailures, disabled.DisabledFor, disabled.DisabledReason)
			}
			if got.DisabledUntilReset() {
				t.Fatal("an interrupted trial disabled the notification until reset")
			}
		})
	}
}
