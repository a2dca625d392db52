package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
)

// TestNotificationUnsendableRefused: a notification that could never be
// sent (a header value the HTTP client refuses: a control character other
// than a tab, or DEL; a github_dispatch repository that is no URL path
// segment as it is) is refused with 400 when it is created, and nothing is
// stored; a tab, or a plain owner/name, is accepted.
func TestNotificationUnsendableRefused(t *testing.T) {
	e := notifyEnv(t, "sqlite")
	const base = "/api/v1/superuser/notification/"
	webhook := func(value string) string {
		return `{"event":"repo_push","method":"webhook","config":{"url":"https://hooks.example.com/x","headers":{"X-Key":"` + value + `"}}}`
	}
	dispatch := func(repo string) string {
		return `{"event":"repo_push","method":"github_dispatch","config":{"repository":"` + repo + `","token":"ghp_token"}}`
	}
	withToken := func(method, token string) string {
		cfg := `"repository":"o/app"`
		if method == "gitlab_trigger" {
			cfg = `"project":"42"`
		}
		return `{"event":"repo_push","method":"` + method + `","config":{` + cfg + `,"token":"` + token + `"}}`
	}
	for _, body := range []string{
		webhook(`k\u0001ey`), webhook(`k\u007fey`), webhook(`k\u001bey`), webhook(`k\rey`),
		dispatch("o/na%zz"), dispatch("o/na%20me"), dispatch("o/na;me"), dispatch("o/n a"), dispatch("o/na\\\\me"),
		withToken("github_dispatch", `ghp_token\n`), withToken("github_dispatch", `ghp_\u0001token`), withToken("gitlab_trigger", ` ghp_token`),
	} {
		r := e.expect("root", "POST", base, body, http.StatusBadRequest)
		if msg, _ := r.json(t)["error_message"].(string); msg == "" || strings.Contains(msg, "ghp_token") {
			t.Errorf("%s: %s", body, r.body)
		}
	}
	if r := e.expect("root", "GET", base, "", http.StatusOK); strings.Contains(string(r.body), `"uuid"`) {
		t.Fatalf("refused notifications stored: %s", r.body)
	}
	e.expect("root", "POST", base, webhook(`k\tey`), http.StatusCreated)
	r := e.send("root", "POST", base, dispatch("acme-1/app.web_2"), true) // its config shows "token", masked
	e.check(r, "POST", base, http.StatusCreated)
}

// TestNotificationAttemptsPaged: GET .../attempts answers the newest 100
// attempts and a next_page that continues before them, so that every
// attempt kept (150 here) is reachable, once each, newest first; limit
// asks for fewer.
func TestNotificationAttemptsPaged(t *testing.T) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			e := notifyEnv(t, d)
			const base = "/api/v1/superuser/notification/"
			n := e.expect("root", "POST", base, `{"event":"repo_push","method":"webhook","config":{"url":"https://hooks.example.com/x"}}`, http.StatusCreated).json(t)
			uuid, _ := n["uuid"].(string)
			stored, err := e.db.Notifications().NotificationByUUID(context.Background(), meta.ScopeRegistry, "", uuid)
			if err != nil {
				t.Fatal(err)
			}
			const total = 150
			for i := range total {
				a := meta.Attempt{NotificationID: stored.ID, EventUUID: fmt.Sprintf("event-%03d", i), JobID: int64(i + 1), Attempt: 1, StatusCode: 503}
				if err := e.db.Notifications().RecordAttempt(context.Background(), a, false); err != nil {
					t.Fatal(err)
				}
			}
			page := func(query string) ([]string, string) {
				t.Helper()
				r := e.expect("root", "GET", base+uuid+"/attempts"+query, "", http.StatusOK).json(t)
				var events []string
				as, _ := r["attempts"].([]any)
				for _, a := range as {
					ev, _ := a.(map[string]any)["event_id"].(string)
					events = append(events, ev)
				}
				next, _ := r["next_page"].(string)
				return events, next
			}
			var all []string
			pages := 0
			for q := ""; ; {
				evs, next := page(q)
				if len(evs) > 100 {
					t.Fatalf("a page of %d attempts", len(evs))
				}
				all, pages = append(all, evs...), pages+1
				if next == "" {
					break
				}
				if pages > total {
					t.Fatal("next_page never ends")
				}
				q = "?next_page=" + next
			}
			if len(all) != total || pages != 2 {
				t.Fatalf("%d attempts in %d pages, want %d in 2", len(all), pages, total)
			}
			for i, ev := range all {
				if want := fmt.Sprintf("event-%03d", total-1-i); ev != want {
					t.Fatalf("attempt %d is %s, want %s (every one, newest first)", i, ev, want)
				}
			}
			first, next := page("?limit=20")
			second, _ := page("?limit=20&next_page=" + next)
			if len(first) != 20 || len(second) != 20 || first[19] != "event-130" || second[0] != "event-129" {
				t.Fatalf("limit=20: %v then %v", first, second)
			}
			for _, q := range []string{"?limit=0", "?limit=101", "?next_page=x", "?next_page=-1"} {
				e.expect("root", "GET", base+uuid+"/attempts"+q, "", http.StatusBadRequest)
			}
		})
	}
}
