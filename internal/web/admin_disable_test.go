package web_test

import (
	"context"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestAdminDisableUserNeedsTheName: the admin page's "Disable" disables
// no one unless the user's name is typed in the field beside it (400,
// the page again with the message and what was typed in that user's
// field); with it, the user is disabled; "Enable" stays one click.
func TestAdminDisableUserNeedsTheName(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, e *testenv.Env) {
		ui := adminUI(t, e)
		ctx := context.Background()
		enabled := func(name string) bool {
			t.Helper()
			u, err := e.DB.Users().UserByName(ctx, name)
			if err != nil {
				t.Fatal(err)
			}
			return u.Enabled
		}
		confirmOf := func(body, name string) (string, bool) {
			m := regexp.MustCompile(`(?s)<form method="post" action="/admin/users/` + name + `/disable"[^>]*>(.*?)</form>`).FindStringSubmatch(body)
			if m == nil {
				return "", false
			}
			v := regexp.MustCompile(`<input name="confirm"[^>]*value="([^"]*)"`).FindStringSubmatch(m[1])
			if v == nil {
				return "", regexp.MustCompile(`<input name="confirm"[^>]* required`).MatchString(m[1])
			}
			return v[1], true
		}
		status, body := get(t, ui, "/admin", true)
		if _, ok := confirmOf(body, "bob"); status != http.StatusOK || !ok {
			t.Fatalf("GET /admin = %d without a required confirmation beside bob's Disable\n%.4000s", status, body)
		}
		distinctButtons(t, "/admin", body, "Disable bob", "Disable carol")
		for _, confirm := range []string{"", "carol", "bo"} {
			status, body := postSession(t, ui, "/admin/users/bob/disable", url.Values{"confirm": {confirm}})
			if status != http.StatusBadRequest || !strings.Contains(body, "<h1>Administration</h1>") || !strings.Contains(body, `class="error" role="alert"`) {
				t.Errorf("disable bob, confirmed as %q = %d, want 400 with the admin page and a message\n%.2000s", confirm, status, body)
			}
			if got, _ := confirmOf(body, "bob"); got != confirm {
				t.Errorf("disable bob, confirmed as %q: bob's field holds %q, want what was typed", confirm, got)
			}
			if got, _ := confirmOf(body, "carol"); got != "" {
				t.Errorf("disable bob, confirmed as %q: carol's field holds %q", confirm, got)
			}
			if !enabled("bob") {
				t.Fatalf("disable bob, confirmed as %q: bob was disabled", confirm)
			}
		}
		if status, body := postSession(t, ui, "/admin/users/bob/disable", url.Values{"confirm": {"bob"}}); status != http.StatusSeeOther {
			t.Fatalf("disable bob, confirmed = %d\n%.2000s", status, body)
		}
		if enabled("bob") || !enabled("carol") {
			t.Errorf("after a confirmed disable of bob: bob enabled %v, carol enabled %v", enabled("bob"), enabled("carol"))
		}
		if status, body := postSession(t, ui, "/admin/users/bob/enable", url.Values{}); status != http.StatusSeeOther || !enabled("bob") {
			t.Errorf("enable bob (one click) = %d, enabled %v\n%.2000s", status, enabled("bob"), body)
		}
	})
}
