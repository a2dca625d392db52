package web_test

import (
	"context"
	"html"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

var (
	buttonTag = regexp.MustCompile(`(?s)<button([^>]*)>(.*?)</button>`)
	ariaLabel = regexp.MustCompile(`aria-label="([^"]*)"`)
	anyTag    = regexp.MustCompile(`<[^>]*>`)
)

// buttonNames are the accessible names of a page's buttons: the
// aria-label, else the text.
func buttonNames(body string) []string {
	var out []string
	for _, m := range buttonTag.FindAllStringSubmatch(body, -1) {
		if l := ariaLabel.FindStringSubmatch(m[1]); l != nil {
			out = append(out, html.UnescapeString(l[1]))
			continue
		}
		out = append(out, strings.Join(strings.Fields(html.UnescapeString(anyTag.ReplaceAllString(m[2], ""))), " "))
	}
	return out
}

// distinctButtons fails the test for each accessible name two buttons of
// the page share, and for each of want missing.
func distinctButtons(t *testing.T, page, body string, want ...string) {
	t.Helper()
	seen := map[string]int{}
	for _, n := range buttonNames(body) {
		seen[n]++
	}
	for n, c := range seen {
		if c > 1 {
			t.Errorf("%s: %d buttons are named %q", page, c, n)
		}
	}
	for _, w := range want {
		if seen[w] == 0 {
			t.Errorf("%s: no button is named %q; the names: %q", page, w, buttonNames(body))
		}
	}
}

// TestButtonsNameTheirTarget: the one-click buttons of the settings,
// account and organization pages (remove a permission, delete a
// notification or a policy, revoke a token, regenerate or delete a robot)
// each have an accessible name of their own, naming what they act on
// (before, two permissions had two buttons named "Remove").
func TestButtonsNameTheirTarget(t *testing.T) {
	late := &lateNotifier{}
	testenv.ForDialects(t, testenv.Options{API: api.Options{Notifier: late}}, func(t *testing.T, e *testenv.Env) {
		sealer, err := auth.NewSealer(make([]byte, 32))
		if err != nil {
			t.Fatal(err)
		}
		late.svc = notify.New(wire.NotifyStores(e.DB), sealer, notify.Options{})
		_, ui := acmeAppAdmin(t, e)
		e.User("bob", false)
		e.User("carol", false)
		if _, err := e.DB.Organizations().PutTeam(context.Background(), "acme", meta.Team{Name: "devs", Role: "member"}); err != nil {
			t.Fatal(err)
		}
		for _, f := range []struct {
			action string
			form   url.Values
		}{
			{"/repository/acme/app/-/settings/permissions/user", url.Values{"name": {"bob"}, "role": {"read"}}},
			{"/repository/acme/app/-/settings/permissions/user", url.Values{"name": {"carol"}, "role": {"write"}}},
			{"/repository/acme/app/-/settings/permissions/team", url.Values{"name": {"devs"}, "role": {"read"}}},
			{"/repository/acme/app/-/settings/policies/autoprunepolicy/create", url.Values{"method": {"number_of_tags"}, "value": {"5"}}},
			{"/repository/acme/app/-/settings/policies/autoprunepolicy/create", url.Values{"method": {"number_of_tags"}, "value": {"9"}}},
			{"/repository/acme/app/-/settings/policies/immutabilitypolicy/create", url.Values{"pattern": {"^v1"}}},
			{"/repository/acme/app/-/settings/policies/immutabilitypolicy/create", url.Values{"pattern": {"^v2"}}},
			{"/repository/acme/app/-/settings/notifications/create", url.Values{"event": {"repo_push"}, "method": {"webhook"}, "target": {"https://example.com/a"}}},
			{"/repository/acme/app/-/settings/notifications/create", url.Values{"event": {"repo_push"}, "method": {"webhook"}, "target": {"https://example.com/b"}}},
			{"/user/alice/tokens/create", url.Values{"name": {"ci-a"}, "action": {"content/read"}, "days": {"1"}}},
			{"/user/alice/tokens/create", url.Values{"name": {"ci-b"}, "action": {"content/read"}, "days": {"1"}}},
			{"/user/alice/robots/create", url.Values{"name": {"one"}}},
			{"/user/alice/robots/create", url.Values{"name": {"two"}}},
			{"/organization/acme/robots/create", url.Values{"name": {"one"}}},
			{"/organization/acme/robots/create", url.Values{"name": {"two"}}},
		} {
			if status, body := postSession(t, ui, f.action, f.form); status >= 400 {
				t.Fatalf("POST %s %v = %d\n%.2000s", f.action, f.form, status, body)
			}
		}
		for page, want := range map[string][]string{
			"/repository/acme/app/settings": {"Remove permission of user bob", "Remove permission of user carol", "Remove permission of team devs"},
			"/user/alice":                   {"Revoke token ci-a", "Revoke token ci-b", "Delete robot alice+one", "Regenerate token of robot alice+two"},
			"/organization/acme":            {"Delete robot acme+one", "Delete robot acme+two"},
		} {
			status, body := get(t, ui, page, true)
			if status != http.StatusOK {
				t.Fatalf("GET %s = %d\n%.2000s", page, status, body)
			}
			distinctButtons(t, page, body, want...)
		}
	})
}

// adminUI is an env with root, a superuser, and bob, and the UI as root
// signed in.
func adminUI(t *testing.T, e *testenv.Env) http.Handler {
	t.Helper()
	root := e.User("root", true)
	e.User("bob", false)
	e.User("carol", false)
	st := wire.WebStores(e.DB)
	st.Sessions = superuserSession{userSession{root}}
	return newUI(t, st, web.Options{Auth: e.Authz, API: e.API})
}

// TestAdminNewPasswordNeedsConfirming: the admin page's "New password"
// sets none without its confirmation (a stray click), and one with it;
// each user's button has a name of its own.
func TestAdminNewPasswordNeedsConfirming(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, e *testenv.Env) {
		ui := adminUI(t, e)
		ctx := context.Background()
		hash := func() string {
			u, err := e.DB.Users().UserByName(ctx, "bob")
			if err != nil {
				t.Fatal(err)
			}
			return u.SecretHash
		}
		status, body := get(t, ui, "/admin", true)
		if status != http.StatusOK {
			t.Fatalf("GET /admin = %d", status)
		}
		distinctButtons(t, "/admin", body, "New password for bob", "New password for carol", "Disable bob")
		before := hash()
		for _, form := range []url.Values{{}, {"confirm": {"carol"}}} {
			status, body := postSession(t, ui, "/admin/users/bob/password", form)
			if status != http.StatusBadRequest || strings.Contains(body, `id="secret"`) {
				t.Errorf("a new password for bob with the form %v = %d, want 400 and no password\n%.2000s", form, status, body)
			}
			if hash() != before {
				t.Fatalf("a new password for bob with the form %v changed the password", form)
			}
		}
		status, body = postSession(t, ui, "/admin/users/bob/password", url.Values{"confirm": {"bob"}})
		if status != http.StatusOK || !strings.Contains(body, `id="secret"`) || hash() == before {
			t.Errorf("a confirmed new password for bob = %d, shown: %v, changed: %v", status, strings.Contains(body, `id="secret"`), hash() != before)
		}
	})
}

// TestAdminDeleteUserNeedsTheNameTwice: the admin page's "Delete user"
// deletes nothing unless the name is typed again in its confirmation
// (the page answers 400 with both fields); with it, the user is deleted.
func TestAdminDeleteUserNeedsTheNameTwice(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, e *testenv.Env) {
		ui := adminUI(t, e)
		ctx := context.Background()
		for _, confirm := range []string{"", "carol", "bo"} {
			status, body := postSession(t, ui, "/admin/users/delete", url.Values{"username": {"bob"}, "confirm": {confirm}})
			if status != http.StatusBadRequest {
				t.Errorf("delete bob, confirmed as %q = %d, want 400\n%.2000s", confirm, status, body)
			}
			if !strings.Contains(body, `name="username" required autocomplete="off" value="bob"`) {
				t.Errorf("delete bob, confirmed as %q: the form does not keep the name\n%.3000s", confirm, body)
			}
			if _, err := e.DB.Users().UserByName(ctx, "bob"); err != nil {
				t.Fatalf("delete bob, confirmed as %q: bob is gone: %v", confirm, err)
			}
		}
		if status, body := postSession(t, ui, "/admin/users/delete", url.Values{"username": {"bob"}, "confirm": {"bob"}}); status != http.StatusSeeOther {
			t.Fatalf("delete bob, confirmed = %d\n%.2000s", status, body)
		}
		if _, err := e.DB.Users().UserByName(ctx, "bob"); err == nil {
			t.Error("bob is still there after a confirmed deletion")
		}
		if _, err := e.DB.Users().UserByName(ctx, "carol"); err != nil {
			t.Errorf("carol: %v", err)
		}
	})
}

// TestRepositoryListSaysNoneVisibleYet: a page that read its 1,000 rows
// (private ones of another namespace) without one the visitor may see
// does not say "No repository." above its "Next page": it says none of
// the rows checked so far are visible and that the next page goes on.
func TestRepositoryListSaysNoneVisibleYet(t *testing.T) {
	m := newManyPrivate()
	ui := newUI(t, web.Stores{Sessions: oneSession{}, Repositories: m},
		web.Options{Auth: readOnlyPublic{map[string]bool{"pub/z0": true, "pub/z1": true, "pub/z2": true}}})
	status, body := get(t, ui, "/repository", true)
	if status != http.StatusOK || nextHref(body) == "" {
		t.Fatalf("GET /repository = %d, next %q", status, nextHref(body))
	}
	if strings.Contains(body, "No repository") {
		t.Errorf("the page says there is no repository above its Next page\n%.3000s", body)
	}
	if !strings.Contains(body, "None of the repositories checked so far") {
		t.Errorf("the page does not say the next page goes on\n%.3000s", body)
	}
}
