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

// TestViewRedactsHookURLs: the API shows a Slack or webhook URL as its
// scheme and host only (their paths and queries are credentials: Slack's
// /services/T…/B…/<secret>, a ?token=), as delivery errors do; and that
// view given back to Create is refused, so the stored URL is never
// replaced by its redacted form.
func TestViewRedactsHookURLs(t *testing.T) {
	ctx := context.Background()
	db, svc := newService(t, notify.Options{})
	for _, tc := range []struct{ method, url, secret, shown string }{
		{"slack", "https://hooks.slack.com/services/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", "/services/T0A1B2C3D/B0E4F5G6H/q8W2mZr4Yt6Kx1Vb9Nc3Lp5J", "https://hooks.slack.com/…"},
		{"webhook", "https://ci.example.com/hook?token=s3cr3t-t0ken", "s3cr3t-t0ken", "https://ci.example.com/…"},
		{"webhook", "https://ci.example.com", "", "https://ci.example.com"},
	} {
		n, err := svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: tc.method, Config: map[string]any{"url": tc.url}})
		if err != nil {
			t.Fatal(err)
		}
		view := notify.View(n)
		b, _ := json.Marshal(view)
		if tc.secret != "" && (strings.Contains(string(b), tc.secret) || strings.Contains(string(b), "q8W2mZr4")) {
			t.Errorf("%s: the view shows the URL's secret: %s", tc.url, b)
		}
		if got := view["config"].(map[string]any)["url"]; got != tc.shown {
			t.Errorf("%s: shown as %v, want %s", tc.url, got, tc.shown)
		}
		// The view's config sent back: refused, the stored URL kept.
		cfg := view["config"].(map[string]any)
		_, err = svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: tc.method, Config: cfg})
		var inv *notify.InvalidError
		if tc.secret != "" && (!errors.As(err, &inv) || !strings.Contains(inv.Msg, "redacted")) {
			t.Errorf("%s: the redacted view was taken back: %v", tc.url, err)
		}
		stored, err := db.Notifications().NotificationByID(ctx, n.ID)
		if err != nil || !strings.Contains(string(stored.Config), tc.url) {
			t.Errorf("%s: stored config %s %v", tc.url, stored.Config, err)
		}
	}
}
