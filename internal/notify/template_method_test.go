package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/notify"
)

// TestStoredEmailTemplateIgnored: an email notification stored with a
// template (before Create refused one) mails Berth's own message, not the
// template; a webhook's template still makes its body.
func TestStoredEmailTemplateIgnored(t *testing.T) {
	ctx := context.Background()
	db, svc := newService(t, notify.Options{SMTPAddr: "127.0.0.1:1", SMTPFrom: "berth@example.com"})
	const phish = "Your password expires: sign in at https://evil.example"
	tmpl, _ := json.Marshal(map[string]any{"subject": phish})
	for _, tc := range []struct{ method, config string }{
		{"email", `{"email":"ops@example.com","template":` + string(mustJSON(t, string(tmpl))) + `}`},
		{"webhook", `{"url":"https://hooks.example.com/x","template":` + string(mustJSON(t, string(tmpl))) + `}`},
	} {
		n, err := db.Notifications().CreateNotification(ctx, meta.Notification{UUID: tc.method + "-stored", Scope: meta.ScopeRegistry, Event: meta.EventRepoPush,
			Method: tc.method, Config: json.RawMessage(tc.config)})
		if err != nil {
			t.Fatal(err)
		}
		d, err := svc.Build(ctx, n, meta.DeliveryJob{NotificationID: n.ID, Sample: true, Repository: "team/app"})
		if err != nil {
			t.Fatal(err)
		}
		if got := strings.Contains(string(d.Body), phish); got != (tc.method == "webhook") {
			t.Errorf("%s: body from the template %v: %s", tc.method, got, d.Body)
		}
		if tc.method == "email" && !strings.Contains(string(d.Body), `"repository":"team/app"`) {
			t.Errorf("email: not Berth's payload: %s", d.Body)
		}
	}
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestCloudEventsTemplateRefused: a webhook's template makes its body,
// which is then no CloudEvent, so asking for both format cloudevents and
// a template is refused (400); one stored before that sends its
// template's body as application/json, not as a CloudEvent.
func TestCloudEventsTemplateRefused(t *testing.T) {
	ctx := context.Background()
	db, svc := newService(t, notify.Options{})
	tmpl := `{"text":"${repository}"}`
	_, err := svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: meta.EventRepoPush, Method: "webhook",
		Config: map[string]any{"url": "https://hooks.example.com/x", "template": tmpl, "format": "cloudevents"}})
	var inv *notify.InvalidError
	if !errors.As(err, &inv) || !strings.Contains(inv.Msg, "template") || !strings.Contains(inv.Msg, "cloudevents") {
		t.Fatalf("format cloudevents with a template: %v, want a 400 naming both", err)
	}
	for _, format := range []string{"cloudevents", "quay", ""} {
		cfg := map[string]any{"url": "https://hooks.example.com/x", "format": format}
		if format == "cloudevents" {
			delete(cfg, "template")
		} else {
			cfg["template"] = tmpl
		}
		if _, err := svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: meta.EventRepoPush, Method: "webhook", Config: cfg}); err != nil {
			t.Errorf("format %q: %v", format, err)
		}
	}
	cfg := `{"url":"https://hooks.example.com/x","template":` + string(mustJSON(t, tmpl)) + `}`
	n, err := db.Notifications().CreateNotification(ctx, meta.Notification{UUID: "cloudevents-stored", Scope: meta.ScopeRegistry, Event: meta.EventRepoPush,
		Method: "webhook", Format: "cloudevents", Config: json.RawMessage(cfg)})
	if err != nil {
		t.Fatal(err)
	}
	d, err := svc.Build(ctx, n, meta.DeliveryJob{NotificationID: n.ID, Sample: true, Repository: "team/app"})
	if err != nil {
		t.Fatal(err)
	}
	if string(d.Body) != `{"text":"team/app"}` || d.ContentType != "application/json" {
		t.Fatalf("stored cloudevents webhook with a template sends %s as %s", d.Body, d.ContentType)
	}
}
