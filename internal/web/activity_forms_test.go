package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
)

// TestActivityRefusedRestoreKeepsThePage: a restore the API refuses (a
// digest that is none) or the page refuses (no tag) answers with the
// activity page (400), the message in its Deleted tags section, not a
// page of its own; the page read afresh shows no message.
func TestActivityRefusedRestoreKeepsThePage(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, e *testenv.Env) {
		_, ui := acmeAppAdmin(t, e)
		for _, form := range []url.Values{{"tag": {"v1"}, "digest": {"sha256:nope"}}, {"tag": {""}, "digest": {"sha256:nope"}}} {
			status, body := postSession(t, ui, "/repository/acme/app/restore-tag", form)
			if status != http.StatusBadRequest || !strings.Contains(body, "<h1>Activity of acme/app</h1>") {
				t.Fatalf("POST restore-tag %v = %d, want 400 with the activity page\n%.2000s", form, status, body)
			}
			_, section, _ := strings.Cut(body, `<section id="deleted-tags">`)
			section, _, _ = strings.Cut(section, "</section>")
			if !strings.Contains(section, `class="error" role="alert"`) {
				t.Errorf("POST restore-tag %v: no message in the Deleted tags section\n%.3000s", form, section)
			}
		}
		if _, body := get(t, ui, "/repository/acme/app/activity", true); strings.Contains(body, `role="alert"`) {
			t.Error("the activity page read afresh shows a refused form's message")
		}
	})
}

// TestActivityResetButtonsNameTheirNotification: each disabled
// notification's "Reset and re-enable" button has an accessible name of
// its own naming the notification (before, all were "Reset and
// re-enable").
func TestActivityResetButtonsNameTheirNotification(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, e *testenv.Env) {
		_, ui := acmeAppAdmin(t, e)
		ctx := context.Background()
		for _, n := range []meta.Notification{
			{UUID: "11111111-1111-4111-8111-111111111111", Title: "Deploy hook"},
			{UUID: "22222222-2222-4222-8222-222222222222"},
		} {
			n.Scope, n.Target, n.Event, n.Method = meta.ScopeRepository, "acme/app", "repo_push", "webhook"
			n.Config = json.RawMessage(`{"url":"https://example.com/hook"}`)
			created, err := e.DB.Notifications().CreateNotification(ctx, n)
			if err != nil {
				t.Fatal(err)
			}
			for range meta.MaxNotificationFailures {
				if _, err := e.DB.Notifications().NotificationFailed(ctx, created.ID, meta.NotificationFailure{Reason: "receiver answered 404", Refused: true}); err != nil {
					t.Fatal(err)
				}
			}
		}
		status, body := get(t, ui, "/repository/acme/app/activity", true)
		if status != http.StatusOK {
			t.Fatalf("GET the activity page = %d\n%.2000s", status, body)
		}
		distinctButtons(t, "/repository/acme/app/activity", body,
			"Reset and re-enable notification Deploy hook (11111111-1111-4111-8111-111111111111)",
			"Reset and re-enable notification repo_push → webhook (22222222-2222-4222-8222-222222222222)")
	})
}
