package web_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// acmeAppAdmin is acmeAppSettings on an env of the test's dialect: alice
// owns organization acme and its private repository acme/app, and the
// UI knows her signed in.
func acmeAppAdmin(t *testing.T, e *testenv.Env) (meta.User, http.Handler) {
	t.Helper()
	alice := e.User("alice", false)
	e.Org("acme", "alice")
	if err := e.DB.Repositories().CreateRepository(context.Background(), "acme/app", "private", "stored text", "test", 0); err != nil {
		t.Fatal(err)
	}
	st := wire.WebStores(e.DB)
	st.Sessions = userSession{alice}
	return alice, newUI(t, st, web.Options{Auth: e.Authz, API: e.API})
}

// TestRefusedSettingsKeepWhatWasTyped: a description over the API's 16
// KiB, or a notification the API refuses, is answered with the settings
// page (400) whose form holds what was typed, not the stored description
// nor empty fields (before, the edit was lost).
func TestRefusedSettingsKeepWhatWasTyped(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, e *testenv.Env) {
		_, ui := acmeAppAdmin(t, e)
		long := strings.Repeat("a long <description> ", 17<<10/21+1)
		status, body := postSession(t, ui, "/repository/acme/app/-/settings/description", url.Values{"description": {long}})
		textarea := regexp.MustCompile(`(?s)<textarea id="description-text"[^>]*>(.*?)</textarea>`).FindStringSubmatch(body)
		if status != http.StatusBadRequest || textarea == nil {
			t.Fatalf("POST a 17 KiB description = %d, want 400 with the settings form\n%.2000s", status, body)
		}
		if got := html.UnescapeString(textarea[1]); got != long {
			t.Errorf("the refused description's textarea holds %.80q (%d bytes), want what was typed (%d bytes)", got, len(got), len(long))
		}
		// A notification whose extra configuration is no JSON object.
		form := url.Values{"event": {"repo_push"}, "method": {"slack"}, "target": {"https://hooks.example.com/typed"},
			"title": {"Typed title"}, "config": {`["typed secret"]`}}
		status, body = postSession(t, ui, "/repository/acme/app/-/settings/notifications/create", form)
		if status != http.StatusBadRequest {
			t.Fatalf("POST a refused notification = %d, want 400\n%.2000s", status, body)
		}
		for _, want := range []string{`name="target" required value="https://hooks.example.com/typed"`, `name="title" value="Typed title"`,
			`value="[&#34;typed secret&#34;]"`, `<option selected>slack</option>`, `<option selected>repo_push</option>`} {
			if !strings.Contains(body, want) {
				t.Errorf("the refused notification's form lacks %s\n%.6000s", want, body[strings.Index(body, `id="notifications"`):])
			}
		}
		// The page read afresh keeps nothing.
		if _, body := get(t, ui, "/repository/acme/app/settings", true); strings.Contains(body, "Typed title") || strings.Contains(body, "typed secret") {
			t.Error("the settings page read afresh shows what a refused form held")
		}
	})
}

// TestRefusedTokenKeepsTheForm: an access token the API refuses (a name
// with a space) is answered with the account page (400), the API's
// message above the form, which holds the name, repositories, actions and
// expiry typed; nothing is created.
func TestRefusedTokenKeepsTheForm(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, e *testenv.Env) {
		_, ui := acmeAppAdmin(t, e)
		status, body := postSession(t, ui, "/user/alice/tokens/create", url.Values{"name": {"Bad Name"}, "repository": {"acme/*"},
			"action": {"metadata/read", "content/write"}, "days": {"7"}})
		if status != http.StatusBadRequest || !strings.Contains(body, "<h1>Account alice</h1>") {
			t.Fatalf("POST a token named %q = %d, want 400 with the account page\n%.3000s", "Bad Name", status, body)
		}
		for _, want := range []string{`name="name" required value="Bad Name"`, `name="repository" placeholder="alice/*" value="acme/*"`,
			`value="metadata/read" checked`, `value="content/write" checked`, `name="days" type="number" min="0" value="7"`, `class="error" role="alert"`} {
			if !strings.Contains(body, want) {
				t.Errorf("the refused token's page lacks %s\n%.6000s", want, body)
			}
		}
		if strings.Contains(body, `value="content/read" checked`) {
			t.Error("the refused token's form ticks content/read, which was not ticked")
		}
		if res, answer := e.Do("alice", http.MethodGet, "/api/v1/tokens", nil); res.StatusCode != http.StatusOK || strings.Contains(string(answer), "Bad Name") {
			t.Errorf("tokens after the refusal: %d %s", res.StatusCode, answer)
		}
	})
}

// TestRefusedActionLinksBack: an action answered with a page of its own
// (here a stale form, refused before it runs) links back to the page the
// form came from, not only to the listing.
func TestRefusedActionLinksBack(t *testing.T) {
	_, ui := acmeAppSettings(t, testenv.Options{})
	for action, page := range map[string]string{
		"/user/alice/robots/ci/delete":                       "/user/alice",
		"/organization/acme/robots/ci/delete":                "/organization/acme",
		"/repository/acme/app/-/settings/description":        "/repository/acme/app/settings",
		"/repository/acme/app/-/settings/permissions/user":   "/repository/acme/app/settings",
		"/repository/acme/app/restore-tag":                   "/repository/acme/app/activity",
		"/repository/acme/app/delete-tags":                   "/repository/acme/app",
		"/repository/acme/app/-/manifest/sha256:abc/add-tag": "/repository/acme/app/manifest/sha256:abc",
		"/admin/users/bob/password":                          "/admin",
	} {
		req := httptest.NewRequest(http.MethodPost, action, strings.NewReader("csrf=stale"))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: "berth_session", Value: strangerSession})
		rec := httptest.NewRecorder()
		ui.ServeHTTP(rec, req)
		_, main, _ := strings.Cut(rec.Body.String(), `<main id="main">`)
		if rec.Code != http.StatusForbidden || !strings.Contains(main, `<a href="`+page+`">Back to `) {
			t.Errorf("a stale form posted to %s = %d, want 403 linking back to %s\n%.2000s", action, rec.Code, page, main)
		}
	}
}

// expiringSession knows alice's session ("alice-session") and no other:
// any other cookie is a session that expired.
type expiringSession struct{ alice meta.User }

func (expiringSession) CreateWebSession(context.Context, meta.WebSession) error { return nil }
func (expiringSession) DeleteWebSession(context.Context, string) error          { return nil }
func (s expiringSession) WebSession(ctx context.Context, h string, at time.Time) (meta.WebSession, error) {
	if h != hashOf("alice-session") {
		return meta.WebSession{}, meta.ErrSessionNotFound
	}
	return userSession{s.alice}.WebSession(ctx, h, at)
}

var signInLink = regexp.MustCompile(`<a class="button" href="/signin\?next=([^"]*)">Sign in</a>`)

// TestSignInAfterARefusedPostReturnsToTheForm: a settings form posted
// after the session expired is refused with a page whose "Sign in" link
// returns, once signed in, to the settings page (200), not to the form's
// action, which has no page (404 before).
func TestSignInAfterARefusedPostReturnsToTheForm(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, e *testenv.Env) {
		alice, _ := acmeAppAdmin(t, e)
		st := wire.WebStores(e.DB)
		st.Sessions = expiringSession{alice}
		ui := newUI(t, st, web.Options{Auth: e.Authz, API: e.API})
		for _, action := range []string{"/repository/acme/app/-/settings/gate", "/user/alice/tokens/create", "/organization/acme/robots/create", "/admin/users/create"} {
			req := httptest.NewRequest(http.MethodPost, action, strings.NewReader("csrf="+csrfToken+"&tags=latest&name=x"))
			req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
			req.AddCookie(&http.Cookie{Name: "berth_session", Value: "expired-session"})
			req.AddCookie(&http.Cookie{Name: "berth_csrf", Value: csrfToken})
			rec := httptest.NewRecorder()
			ui.ServeHTTP(rec, req)
			m := signInLink.FindStringSubmatch(rec.Body.String())
			if rec.Code < 400 || m == nil {
				t.Fatalf("POST %s with an expired session = %d without a sign-in link\n%.2000s", action, rec.Code, rec.Body.String())
			}
			next, err := url.QueryUnescape(html.UnescapeString(m[1]))
			if err != nil {
				t.Fatal(err)
			}
			req = httptest.NewRequest(http.MethodGet, next, nil)
			req.AddCookie(&http.Cookie{Name: "berth_session", Value: "alice-session"})
			rec = httptest.NewRecorder()
			ui.ServeHTTP(rec, req)
			if action == "/admin/users/create" {
				// alice is no superuser: the page is not hers, but it is one.
				if next != "/admin" {
					t.Errorf("POST %s: sign in returns to %q, want /admin", action, next)
				}
				continue
			}
			if rec.Code != http.StatusOK {
				t.Errorf("POST %s: sign in returns to %s, which answers %d", action, next, rec.Code)
			}
		}
	})
}

// hashOf is the stored hash of a session id (SHA-256, hex).
func hashOf(id string) string {
	sum := sha256.Sum256([]byte(id))
	return hex.EncodeToString(sum[:])
}

// TestRefusedFormsKeepWhatWasTyped: each form of the account,
// organization and settings pages that the API refuses for what it holds
// answers with its page (400 or 409), the typed value back in the form.
func TestRefusedFormsKeepWhatWasTyped(t *testing.T) {
	e, ui := acmeAppSettings(t, testenv.Options{})
	if _, err := e.DB.Organizations().PutTeam(context.Background(), "acme", meta.Team{Name: "devs", Role: "member"}); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		action string
		form   url.Values
		want   string
	}{
		{"/user/alice/organizations/create", url.Values{"name": {"Bad Org"}, "email": {"typed@example.com"}}, `value="typed@example.com"`},
		{"/user/alice/repositories/create", url.Values{"namespace": {"acme"}, "repository": {"Bad Repo"}, "visibility": {"public"}, "description": {"typed words"}}, `value="typed words"`},
		{"/user/alice/robots/create", url.Values{"name": {"Bad Robot"}, "description": {"typed robot"}}, `value="typed robot"`},
		{"/organization/acme/robots/create", url.Values{"name": {"Bad Robot"}, "description": {"typed robot"}}, `value="typed robot"`},
		{"/organization/acme/teams/save", url.Values{"team": {"new-team"}, "role": {"nonsense"}, "description": {"typed team"}}, `value="typed team"`},
		{"/organization/acme/teams/save", url.Values{"team": {"devs"}, "role": {"nonsense"}, "description": {"typed devs"}}, `value="typed devs"`},
		{"/repository/acme/app/-/settings/permissions/user", url.Values{"name": {"nobody-here"}, "role": {"nonsense"}}, `value="nobody-here"`},
		{"/repository/acme/app/-/settings/policies/autoprunepolicy/create", url.Values{"method": {"creation_date"}, "value": {"forever"}, "pattern": {"typed-pattern"}}, `value="typed-pattern"`},
		{"/repository/acme/app/-/settings/policies/immutabilitypolicy/create", url.Values{"pattern": {"(["}}, `value="(["`},
	} {
		status, body := postSession(t, ui, c.action, c.form)
		if status != http.StatusBadRequest && status != http.StatusConflict {
			t.Errorf("POST %s %v = %d, want a refusal\n%.2000s", c.action, c.form, status, body)
			continue
		}
		if !strings.Contains(body, c.want) {
			_, main, _ := strings.Cut(body, `<main id="main">`)
			t.Errorf("POST %s %v = %d without %s\n%.6000s", c.action, c.form, status, c.want, main)
		}
	}
}
