package notify_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/testenv/smtpsink"
	"github.com/berth-dev/berth/internal/wire"
)

// TestEmailDeliverySkipsUnconfirmed: a delivery (here a test delivery)
// of a repository's email notification mails only its addresses
// confirmed for the repository, and its attempt names those skipped;
// with none confirmed it is not delivered at all. Creating one with an
// unconfirmed address is refused, naming it.
func TestEmailDeliverySkipsUnconfirmed(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, d)
			sink := smtpsink.New(t, smtpsink.Options{})
			sealer, err := auth.NewSealer(make([]byte, 32))
			if err != nil {
				t.Fatal(err)
			}
			svc := notify.New(wire.NotifyStores(db), sealer, notify.Options{SMTPAddr: sink.Addr, SMTPFrom: "berth@registry.example",
				Server: events.Server{Host: "registry.example"}})
			owner, err := db.Users().CreateUser(ctx, meta.User{Username: "owner"})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Repositories().CreateRepository(ctx, "owner/app", "private", "", "owner", owner.ID); err != nil {
				t.Fatal(err)
			}
			in := notify.Input{Event: "repo_push", Method: "email", Config: map[string]any{"email": "ops@example.com, stranger@example.com"}}
			_, err = svc.Create(ctx, meta.ScopeRepository, "owner/app", "owner", in)
			if err == nil || !strings.Contains(err.Error(), "ops@example.com, stranger@example.com") {
				t.Fatalf("create with unconfirmed addresses: %v", err)
			}
			// ops@ confirms; stranger@ never does.
			const code = "the-code"
			if _, _, err := db.Notifications().RequestEmailAuthorization(ctx, meta.ScopeRepository, "owner/app", "ops@example.com", notify.HashCode(code)); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Notifications().ConfirmEmailAuthorization(ctx, notify.HashCode(code)); err != nil {
				t.Fatal(err)
			}
			if _, err := svc.Create(ctx, meta.ScopeRepository, "owner/app", "owner", in); err == nil || !strings.Contains(err.Error(), "stranger@example.com") ||
				strings.Contains(err.Error(), "ops@example.com") {
				t.Fatalf("create with one unconfirmed address: %v", err)
			}
			// Stored before confirmation was required (an upgrade).
			store := func(uuid, to string) meta.Notification {
				cfg, _ := json.Marshal(map[string]string{"email": to})
				n, err := db.Notifications().CreateNotification(ctx, meta.Notification{UUID: uuid, Scope: meta.ScopeRepository, Target: "owner/app",
					Event: meta.EventRepoPush, Method: "email", Config: cfg})
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			deliver := func(n meta.Notification, id int64) error {
				payload, _ := json.Marshal(meta.DeliveryJob{NotificationID: n.ID, Sample: true, Repository: "owner/app"})
				return svc.Deliver(ctx, meta.Job{ID: id, Queue: meta.NotifyQueue, Payload: payload, Attempts: 1, MaxAttempts: 1})
			}
			lastAttempt := func(n meta.Notification) meta.Attempt {
				at, err := db.Notifications().Attempts(ctx, n.ID, 1)
				if err != nil || len(at) != 1 {
					t.Fatalf("attempts: %v %v", at, err)
				}
				return at[0]
			}
			mixed := store("mixed", "Ops@example.com, stranger@example.com")
			if err := deliver(mixed, 1); err != nil {
				t.Fatalf("deliver to one confirmed address: %v", err)
			}
			if rcpt := sink.Next(t).Rcpt; len(rcpt) != 1 || rcpt[0] != "Ops@example.com" {
				t.Fatalf("mailed %v", rcpt)
			}
			if a := lastAttempt(mixed); a.StatusCode != 250 || !strings.Contains(a.Error, "skipped") || !strings.Contains(a.Error, "stranger@example.com") {
				t.Fatalf("attempt: %+v", a)
			}
			none := store("none", "stranger@example.com")
			if err := deliver(none, 2); err == nil {
				t.Fatal("delivered with no confirmed address")
			}
			sink.None(t)
			if a := lastAttempt(none); !strings.Contains(a.Error, "not deliverable") || !strings.Contains(a.Error, "stranger@example.com") {
				t.Fatalf("attempt: %+v", a)
			}
			// A registry-wide one (superusers only) needs no confirmation.
			if _, err := svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: "email",
				Config: map[string]any{"email": "stranger@example.com"}}); err != nil {
				t.Fatalf("registry-wide: %v", err)
			}
		})
	}
}
