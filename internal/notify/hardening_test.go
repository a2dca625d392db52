package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/testenv"
)

// TestHeaderSecretsSealed: the values of a webhook's extra headers are
// sealed at rest, redacted in the API's view (names shown), never logged
// nor kept in attempts, and sent to the receiver.
func TestHeaderSecretsSealed(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			db := metatest.Open(t, dialect)
			createOrg(t, db, "acme")
			rcv := newReceiver(t)
			logs := &testenv.LogBuffer{}
			inst := startWith(t, ctx, db, notify.Options{Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))},
				jobs.Options{Backoff: func(int) time.Duration { return 20 * time.Millisecond }})
			const bearer, tenant, secret = "Bearer tok-0123456789", "tenant-77777", "hmac-secret-value"
			values := []string{"tok-0123456789", tenant, secret}
			n, err := inst.svc.Create(ctx, meta.ScopeOrganization, "acme", "alice", notify.Input{Event: "repo_push", Method: "webhook",
				Config: map[string]any{"url": rcv.srv.URL, "secret": secret, "headers": map[string]any{"Authorization": bearer, "X-Tenant": tenant}}})
			if err != nil {
				t.Fatal(err)
			}
			stored, err := db.Notifications().NotificationByID(ctx, n.ID)
			if err != nil {
				t.Fatal(err)
			}
			for _, v := range values {
				if strings.Contains(string(stored.Config), v) {
					t.Errorf("stored config holds %q in clear: %s", v, stored.Config)
				}
			}
			view, _ := json.Marshal(notify.View(stored))
			for _, v := range values {
				if strings.Contains(string(view), v) {
					t.Errorf("view shows %q: %s", v, view)
				}
			}
			if !strings.Contains(string(view), `"headers":{"Authorization":"********","X-Tenant":"********"}`) ||
				!strings.Contains(string(view), `"secret":"********"`) || strings.Contains(string(view), "sealed") {
				t.Errorf("view = %s", view)
			}
			for _, k := range []string{"headers_sealed", "header_names", "secret_sealed"} {
				_, err := inst.svc.Create(ctx, meta.ScopeOrganization, "acme", "alice", notify.Input{Event: "repo_push", Method: "webhook",
					Config: map[string]any{"url": rcv.srv.URL, k: "v1:forged"}})
				var inv *notify.InvalidError
				if !errors.As(err, &inv) {
					t.Errorf("config.%s accepted: %v", k, err)
				}
			}

			push(t, db, "acme/a", "v1", 0)
			waitFor(t, "the delivery", 30*time.Second, func() bool {
				rcv.mu.Lock()
				defer rcv.mu.Unlock()
				return len(rcv.seen) == 1
			})
			rcv.mu.Lock()
			h := rcv.headers[0]
			rcv.mu.Unlock()
			if h.Get("Authorization") != bearer || h.Get("X-Tenant") != tenant || h.Get("X-Hub-Signature-256") == "" {
				t.Errorf("receiver got %v", h)
			}
			// Failed attempts: recorded and logged without the values.
			rcv.set("503")
			push(t, db, "acme/a", "v2", 1)
			waitFor(t, "failed attempts", 30*time.Second, func() bool {
				at, _ := db.Notifications().Attempts(ctx, n.ID, 100)
				return len(at) >= 4
			})
			at, _ := db.Notifications().Attempts(ctx, n.ID, 100)
			all, _ := json.Marshal(at)
			if !strings.Contains(logs.String(), "job retried") {
				t.Errorf("no retry logged:\n%s", logs)
			}
			for _, v := range values {
				if strings.Contains(string(all), v) {
					t.Errorf("attempts show %q: %s", v, all)
				}
				if strings.Contains(logs.String(), v) {
					t.Errorf("logs show %q:\n%s", v, logs)
				}
			}
		})
	}
}

// TestClearHeadersResealed: notifications stored with clear header values
// (as earlier versions did) are shown redacted, delivered with their
// headers, and sealed: at start, and at the first delivery for one stored
// after the start (by an older replica during an upgrade).
func TestClearHeadersResealed(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			db := metatest.Open(t, dialect)
			rcv := newReceiver(t)
			legacy := func(uuid, token string) meta.Notification {
				cfg, _ := json.Marshal(map[string]any{"url": rcv.srv.URL, "headers": map[string]string{"Authorization": "Bearer " + token}})
				n, err := db.Notifications().CreateNotification(ctx, meta.Notification{UUID: uuid, Scope: meta.ScopeRegistry, Event: meta.EventRepoPush,
					Method: "webhook", Config: cfg})
				if err != nil {
					t.Fatal(err)
				}
				if view, _ := json.Marshal(notify.View(n)); strings.Contains(string(view), token) || !strings.Contains(string(view), `"Authorization":"********"`) {
					t.Fatalf("view of a clear row: %s", view)
				}
				return n
			}
			sealed := func(n meta.Notification, token string) bool {
				fresh, err := db.Notifications().NotificationByID(ctx, n.ID)
				if err != nil {
					t.Fatal(err)
				}
				return !strings.Contains(string(fresh.Config), token) && strings.Contains(string(fresh.Config), "headers_sealed")
			}
			first := legacy("00000000-0000-0000-0000-000000000001", "before-start-0123")
			startWith(t, ctx, db, notify.Options{}, jobs.Options{Backoff: func(int) time.Duration { return 20 * time.Millisecond }})
			waitFor(t, "the clear row sealed at start", 10*time.Second, func() bool { return sealed(first, "before-start-0123") })
			second := legacy("00000000-0000-0000-0000-000000000002", "after-start-4567")
			push(t, db, "x/app", "v1", 0)
			waitFor(t, "both deliveries", 30*time.Second, func() bool {
				rcv.mu.Lock()
				defer rcv.mu.Unlock()
				return len(rcv.headers) == 2
			})
			got := map[string]bool{}
			rcv.mu.Lock()
			for _, h := range rcv.headers {
				got[h.Get("Authorization")] = true
			}
			rcv.mu.Unlock()
			if !got["Bearer before-start-0123"] || !got["Bearer after-start-4567"] {
				t.Fatalf("receiver got Authorization %v", got)
			}
			if !sealed(second, "after-start-4567") {
				t.Fatal("the row stored after the start was not sealed at its first delivery")
			}
		})
	}
}

// TestHeldDeliveriesReleasedOnReset: with the receiver down, a
// registry-wide notification hearing 30 pushes to 10 repositories disables
// itself; its held deliveries spend no attempt meanwhile, and once the
// receiver is back and the notification reset they all arrive within
// seconds, in order per repository, none lost, none duplicated, even
// though the backoff of the queue has grown to an hour by then.
func TestHeldDeliveriesReleasedOnReset(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			db := metatest.Open(t, dialect)
			rcv := newReceiver(t)
			rcv.set("down")
			inst := startWith(t, ctx, db, notify.Options{DisableFor: time.Hour}, jobs.Options{Backoff: func(attempt int) time.Duration {
				if attempt < meta.NotifyTries {
					return 10 * time.Millisecond
				}
				return time.Hour // what the default backoff grows to
			}})
			n, err := inst.svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: "webhook",
				Config: map[string]any{"url": rcv.srv.URL}})
			if err != nil {
				t.Fatal(err)
			}
			const repos, pushes = 10, 30
			for i := range pushes {
				push(t, db, fmt.Sprintf("ns/app%d", i%repos), "v1", i)
			}
			waitFor(t, "the notification to disable itself", 30*time.Second, func() bool {
				fresh, _ := db.Notifications().NotificationByID(ctx, n.ID)
				return fresh.Disabled()
			})
			live := func() (attempts int, requests int) {
				js, err := db.Jobs().Jobs(ctx, meta.NotifyQueue, "", 1000)
				if err != nil {
					t.Fatal(err)
				}
				for _, j := range js {
					attempts += j.Attempts
				}
				rcv.mu.Lock()
				defer rcv.mu.Unlock()
				return attempts, rcv.attempts
			}
			time.Sleep(300 * time.Millisecond) // deliveries under way when it disabled settle
			a0, r0 := live()
			time.Sleep(700 * time.Millisecond)
			if a1, r1 := live(); a1 != a0 || r1 != r0 {
				t.Fatalf("while disabled: attempts %d -> %d, requests %d -> %d; want no change", a0, a1, r0, r1)
			}
			if view := notify.View(mustNotification(t, db, n.ID)); view["disabled"] != true || view["disabled_until"] == nil ||
				!strings.Contains(view["disabled_reason"].(string), "503") {
				t.Fatalf("view while disabled: %v", view)
			}
			rcv.set("ok")
			if err := db.Notifications().ResetNotificationFailures(ctx, n.ID); err != nil {
				t.Fatal(err)
			}
			reset := time.Now()
			waitFor(t, "every held event within 10 s of the reset", 10*time.Second, func() bool {
				rcv.mu.Lock()
				defer rcv.mu.Unlock()
				return len(rcv.seen) == pushes
			})
			rcv.mu.Lock()
			t.Logf("reset to last held event delivered: %s", rcv.last.Sub(reset).Round(time.Millisecond))
			rcv.mu.Unlock()
			time.Sleep(300 * time.Millisecond) // no late duplicates
			checkDelivered(t, db, rcv, pushes)
		})
	}
}

func mustNotification(t *testing.T, db *meta.DB, id int64) meta.Notification {
	t.Helper()
	n, err := db.Notifications().NotificationByID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// checkDelivered checks that the receiver accepted each repo_push event
// of the outbox once, in order per repository.
func checkDelivered(t *testing.T, db *meta.DB, rcv *receiver, want int) {
	t.Helper()
	evs, err := db.Outbox().EventsAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.seen) != want {
		t.Errorf("%d events accepted, want %d", len(rcv.seen), want)
	}
	for key, c := range rcv.seen {
		if c != 1 {
			t.Errorf("event %s accepted %d times", key, c)
		}
	}
	byRepo := map[string][]string{}
	for _, e := range evs {
		if e.Kind == meta.EventRepoPush {
			byRepo[e.Repository] = append(byRepo[e.Repository], e.UUID)
		}
	}
	for repo, exp := range byRepo {
		if got := rcv.order[repo]; strings.Join(got, ",") != strings.Join(exp, ",") {
			t.Errorf("%s: delivered %v, want %v", repo, got, exp)
		}
	}
}

// TestTemporaryDisable is GitLab's rule with short durations: a receiver
// failing with 503 or 429 disables the notification for a while, each
// failed trial (one request per disable) doubling the next disable up to
// the ceiling, and the first trial that succeeds re-enables it and
// delivers the held events, without a reset; a receiver that refuses
// (404) disables it until reset, with no trial, and its events meanwhile
// are not delivered (Quay's notification stops firing): after the reset,
// the next event is.
func TestTemporaryDisable(t *testing.T) {
	const first, ceiling = 200 * time.Millisecond, 800 * time.Millisecond
	for _, mode := range []string{"503", "429", "404"} {
		t.Run(mode, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			db := metatest.Open(t, "sqlite")
			rcv := newReceiver(t)
			rcv.set(mode)
			inst := startWith(t, ctx, db, notify.Options{DisableFor: first, MaxDisableFor: ceiling},
				jobs.Options{Backoff: func(int) time.Duration { return 10 * time.Millisecond }})
			metatest.Orgs(t, db, "acme")
			if err := db.Repositories().CreateRepository(ctx, "acme/a", "private", "", "alice", 0); err != nil {
				t.Fatal(err)
			}
			n, err := inst.svc.Create(ctx, meta.ScopeRepository, "acme/a", "alice", notify.Input{Event: "repo_push", Method: "webhook",
				Config: map[string]any{"url": rcv.srv.URL}})
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 { // one stream: its head fails 15 attempts, 3 failed events
				push(t, db, "acme/a", fmt.Sprintf("v%d", i), i)
			}
			waitFor(t, "the notification to disable itself", 30*time.Second, func() bool { return mustNotification(t, db, n.ID).Disabled() })
			disabled := mustNotification(t, db, n.ID)
			rcv.mu.Lock()
			atDisable := rcv.attempts
			rcv.mu.Unlock()
			if !strings.Contains(disabled.DisabledReason, mode) {
				t.Errorf("disabled_reason = %q", disabled.DisabledReason)
			}
			if mode == "404" {
				if !disabled.DisabledUntil.IsZero() || notify.View(disabled)["disabled_until"] != nil {
					t.Fatalf("a refusing receiver disabled it until %v", disabled.DisabledUntil)
				}
				time.Sleep(3 * ceiling)
				rcv.mu.Lock()
				after := rcv.attempts
				rcv.mu.Unlock()
				if after != atDisable {
					t.Fatalf("%d trials of a notification disabled until reset", after-atDisable)
				}
				rcv.set("ok")
				if err := db.Notifications().ResetNotificationFailures(ctx, n.ID); err != nil {
					t.Fatal(err)
				}
				push(t, db, "acme/a", "after-reset", 3)
				waitFor(t, "the event after the reset", 10*time.Second, func() bool {
					rcv.mu.Lock()
					defer rcv.mu.Unlock()
					return len(rcv.seen) == 1
				})
				time.Sleep(100 * time.Millisecond)
				evs, _ := db.Outbox().EventsAfter(ctx, 0, 100)
				rcv.mu.Lock()
				got := len(rcv.seen)
				last := rcv.seen[evs[len(evs)-1].UUID]
				rcv.mu.Unlock()
				if got != 1 || last != 1 {
					t.Fatalf("after the reset the receiver got %d events, the new one %d times; want only the new one, once", got, last)
				}
			} else {
				if disabled.DisabledFor != first || notify.View(disabled)["disabled_until"] == nil {
					t.Fatalf("disabled: %+v", disabled)
				}
				// Observe each failure's disable: 200ms, 400ms, 800ms, 800ms.
				seen := map[int]time.Duration{disabled.NumberOfFailures: disabled.DisabledFor}
				want := []time.Duration{first, 2 * first, ceiling, ceiling}
				waitFor(t, "three failed trials", 30*time.Second, func() bool {
					cur := mustNotification(t, db, n.ID)
					seen[cur.NumberOfFailures] = cur.DisabledFor
					return cur.NumberOfFailures >= meta.MaxNotificationFailures+len(want)-1
				})
				rcv.mu.Lock()
				trials := rcv.attempts - atDisable
				rcv.mu.Unlock()
				cur := mustNotification(t, db, n.ID)
				if trials != cur.NumberOfFailures-meta.MaxNotificationFailures {
					t.Errorf("%d requests while disabled for %d failed trials", trials, cur.NumberOfFailures-meta.MaxNotificationFailures)
				}
				for i, d := range want {
					if got := seen[meta.MaxNotificationFailures+i]; got != d {
						t.Errorf("disable after failure %d: %s, want %s (seen %v)", meta.MaxNotificationFailures+i, got, d, seen)
					}
				}
				rcv.set("ok") // the next trial succeeds: no reset
				waitFor(t, "the held events", 10*time.Second, func() bool {
					rcv.mu.Lock()
					defer rcv.mu.Unlock()
					return len(rcv.seen) == 3
				})
				time.Sleep(100 * time.Millisecond)
				checkDelivered(t, db, rcv, 3)
			}
			if v := notify.View(mustNotification(t, db, n.ID)); v["disabled"] != false || v["number_of_failures"] != 0 || v["disabled_until"] != nil || v["disabled_reason"] != "" {
				t.Errorf("view after recovering: %v", v)
			}
		})
	}
}
