package meta_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

func createNotification(t *testing.T, db *meta.DB, uuid string) meta.Notification {
	t.Helper()
	n, err := db.Notifications().CreateNotification(context.Background(), meta.Notification{UUID: uuid, Scope: meta.ScopeRegistry, Event: meta.EventRepoPush,
		Method: "webhook", Config: json.RawMessage(`{"url":"https://hook.example/"}`)})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func notificationByID(t *testing.T, db *meta.DB, id int64) meta.Notification {
	t.Helper()
	n, err := db.Notifications().NotificationByID(context.Background(), id)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// TestNotificationDisable: Quay's count, then GitLab's rule: disabled for
// a while (renewed twice as long by each failed trial, up to a ceiling),
// or until reset when the receiver refused; one trial at a time; a success
// or a reset re-enables and releases the held deliveries.
func TestNotificationDisable(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, d)
			n := createNotification(t, db, "11111111-1111-1111-1111-111111111111")
			fail := func(f meta.NotificationFailure) meta.Notification {
				t.Helper()
				f.DisableFor, f.MaxDisableFor = time.Minute, 3*time.Minute
				fresh, err := db.Notifications().NotificationFailed(ctx, n.ID, f)
				if err != nil {
					t.Fatal(err)
				}
				if stored := notificationByID(t, db, n.ID); stored.NumberOfFailures != fresh.NumberOfFailures ||
					!stored.DisabledUntil.Equal(fresh.DisabledUntil) || stored.DisabledFor != fresh.DisabledFor || stored.DisabledReason != fresh.DisabledReason {
					t.Fatalf("returned %+v, stored %+v", fresh, stored)
				}
				return fresh
			}
			for i := 1; i < meta.MaxNotificationFailures; i++ {
				if got := fail(meta.NotificationFailure{Reason: "503"}); got.Disabled() || got.NumberOfFailures != i || got.DisabledReason != "" {
					t.Fatalf("after %d failures: %+v", i, got)
				}
			}
			before := time.Now()
			got := fail(meta.NotificationFailure{Reason: "receiver answered 503"})
			if !got.Disabled() || got.DisabledFor != time.Minute || got.DisabledUntil.Before(before.Add(59*time.Second)) ||
				got.DisabledUntil.After(time.Now().Add(61*time.Second)) || got.DisabledReason != "receiver answered 503" {
				t.Fatalf("disabled: %+v", got)
			}
			// A failure that was under way when it disabled: counted, the
			// disable unchanged.
			again := fail(meta.NotificationFailure{Reason: "late"})
			if again.NumberOfFailures != 4 || !again.DisabledUntil.Equal(got.DisabledUntil) || again.DisabledReason != got.DisabledReason {
				t.Fatalf("a late failure changed the disable: %+v", again)
			}
			// No trial before the disable runs out, one trial after.
			if ok, err := db.Notifications().ClaimNotificationTrial(ctx, n.ID, got.DisabledUntil.Add(-time.Second), time.Now().Add(time.Minute)); err != nil || ok {
				t.Fatalf("trial claimed with a stale view: %v, %v", ok, err)
			}
			if ok, err := db.Notifications().ClaimNotificationTrial(ctx, n.ID, got.DisabledUntil, time.Now().Add(20*time.Second)); err != nil || !ok {
				t.Fatalf("trial not claimed: %v, %v", ok, err)
			}
			if ok, _ := db.Notifications().ClaimNotificationTrial(ctx, n.ID, got.DisabledUntil, time.Now().Add(20*time.Second)); ok {
				t.Fatal("a second trial claimed")
			}
			// Failed trials: 2, then 3 (the ceiling), minutes.
			for _, want := range []time.Duration{2 * time.Minute, 3 * time.Minute, 3 * time.Minute} {
				if got = fail(meta.NotificationFailure{Reason: "trial: 502", Trial: true}); got.DisabledFor != want || got.DisabledReason != "trial: 502" {
					t.Fatalf("after a failed trial: %+v, want disabled for %s", got, want)
				}
			}
			// Refused: until reset.
			if got = fail(meta.NotificationFailure{Reason: "receiver answered 404", Refused: true}); !got.Disabled() || !got.DisabledUntil.IsZero() ||
				got.DisabledReason != "receiver answered 404" {
				t.Fatalf("refused: %+v", got)
			}
			if ok, _ := db.Notifications().ClaimNotificationTrial(ctx, n.ID, got.DisabledUntil, time.Now()); ok {
				t.Fatal("a trial of a notification disabled until reset")
			}
			// Held deliveries (deferred for an hour), one of another
			// notification; a reset releases its own only.
			other := createNotification(t, db, "22222222-2222-2222-2222-222222222222")
			held := map[int64]bool{}
			for _, key := range []string{n.UUID + "|a/x", n.UUID + "|a/y", other.UUID + "|a/x"} {
				id := enqueue(t, db, meta.Job{Queue: meta.NotifyQueue, OrderingKey: key})
				if j, ok := claim(t, db, meta.NotifyQueue, "w"); !ok || j.ID != id {
					t.Fatalf("claim %d, %v", j.ID, ok)
				}
				if err := db.Jobs().DeferJob(ctx, id, "w", time.Now().Add(time.Hour), "held"); err != nil {
					t.Fatal(err)
				}
				held[id] = key[:len(n.UUID)] == n.UUID
			}
			if err := db.Notifications().ResetNotificationFailures(ctx, n.ID); err != nil {
				t.Fatal(err)
			}
			if got = notificationByID(t, db, n.ID); got.Disabled() || got.NumberOfFailures != 0 || !got.DisabledUntil.IsZero() || got.DisabledFor != 0 || got.DisabledReason != "" {
				t.Fatalf("after a reset: %+v", got)
			}
			for id, released := range held {
				if j := jobByID(t, db, id); released == j.RunAt.After(time.Now()) {
					t.Errorf("job %s: run_at %v after the reset", j.OrderingKey, j.RunAt)
				}
			}
			// A success re-enables a disabled notification and releases its
			// held deliveries; a success of an enabled one resets the count.
			for range meta.MaxNotificationFailures {
				fail(meta.NotificationFailure{Reason: "503"})
			}
			id := enqueue(t, db, meta.Job{Queue: meta.NotifyQueue, OrderingKey: n.UUID + "|b/z", RunAt: time.Now().Add(time.Hour)})
			if err := db.Notifications().RecordAttempt(ctx, meta.Attempt{NotificationID: n.ID, EventUUID: "e", Attempt: 1, StatusCode: 204}, true); err != nil {
				t.Fatal(err)
			}
			if got = notificationByID(t, db, n.ID); got.Disabled() || got.NumberOfFailures != 0 || !got.DisabledUntil.IsZero() {
				t.Fatalf("after a success: %+v", got)
			}
			if j := jobByID(t, db, id); j.RunAt.After(time.Now()) {
				t.Fatalf("held delivery not released by the success: run_at %v", j.RunAt)
			}
			fail(meta.NotificationFailure{Reason: "503"})
			if err := db.Notifications().RecordAttempt(ctx, meta.Attempt{NotificationID: n.ID, EventUUID: "e", Attempt: 1, StatusCode: 204}, true); err != nil {
				t.Fatal(err)
			}
			if got = notificationByID(t, db, n.ID); got.NumberOfFailures != 0 {
				t.Fatalf("after a success: %+v", got)
			}
			// Until reset from the start when no disable time is given.
			for range meta.MaxNotificationFailures {
				got, _ = db.Notifications().NotificationFailed(ctx, other.ID, meta.NotificationFailure{Reason: "x"})
			}
			if !got.Disabled() || !got.DisabledUntil.IsZero() {
				t.Fatalf("without DisableFor: %+v", got)
			}
		})
	}
}

// TestReplaceNotificationConfig is a compare and set.
func TestReplaceNotificationConfig(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, d)
			n := createNotification(t, db, "33333333-3333-3333-3333-333333333333")
			if ok, err := db.Notifications().ReplaceNotificationConfig(ctx, n.ID, json.RawMessage(`{"url":"stale"}`), json.RawMessage(`{"x":1}`)); err != nil || ok {
				t.Fatalf("replaced a config that changed: %v, %v", ok, err)
			}
			if ok, err := db.Notifications().ReplaceNotificationConfig(ctx, n.ID, n.Config, json.RawMessage(`{"x":1}`)); err != nil || !ok {
				t.Fatalf("replace: %v, %v", ok, err)
			}
			all, err := db.Notifications().AllNotifications(ctx)
			if err != nil || len(all) != 1 || string(all[0].Config) != `{"x":1}` {
				t.Fatalf("all = %+v, %v", all, err)
			}
		})
	}
}
