package web_test

import (
	"context"
	"errors"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/web"
)

// strangerSession is the session cookie of a signed-in user, "stranger",
// whom readOnlyPublic allows nothing private.
const strangerSession = "stranger-session"

// oneSession knows one signed-in user, "stranger", whatever the cookie.
type oneSession struct{}

func (oneSession) CreateWebSession(context.Context, meta.WebSession) error { return nil }
func (oneSession) DeleteWebSession(context.Context, string) error          { return nil }
func (oneSession) WebSession(_ context.Context, h string, _ time.Time) (meta.WebSession, error) {
	return meta.WebSession{IDHash: h, UserID: 7, Username: "stranger", CSRF: strings.Repeat("c", 43), Enabled: true}, nil
}

// readOnlyPublic decides as the registry does for a user with no
// permission: reading public repositories (those in public), nothing else.
type readOnlyPublic struct{ public map[string]bool }

func (readOnlyPublic) Login(context.Context, *http.Request, string, string) (auth.Identity, error) {
	return auth.Identity{}, errors.New("no sign-in in this test")
}

func (a readOnlyPublic) Decide(_ context.Context, id auth.Identity, repo, action string) (bool, error) {
	return id.Superuser || (action == auth.ActionRead && a.public[repo]), nil
}

// get answers a GET as the stranger when signedIn, else anonymously.
func get(t *testing.T, ui http.Handler, path string, signedIn bool) (int, string) {
	t.Helper()
	req := httptest.NewRequest(http.MethodGet, path, nil)
	if signedIn {
		req.AddCookie(&http.Cookie{Name: "berth_session", Value: strangerSession})
	}
	rec := httptest.NewRecorder()
	ui.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// csrfToken is the double-submit token the tests' anonymous forms carry.
var csrfToken = strings.Repeat("t", 43)

// post answers a form POST of a visitor without a session (auth mode
// "none": a superuser), with its CSRF token.
func post(t *testing.T, ui http.Handler, path string, form url.Values) (int, string) {
	t.Helper()
	form.Set("csrf", csrfToken)
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "berth_csrf", Value: csrfToken})
	rec := httptest.NewRecorder()
	ui.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

var nextLink = regexp.MustCompile(`<a class="button" href="([^"]*)" rel="next">`)

// nextHref is the href of a page's "Next page" link, or "".
func nextHref(body string) string {
	if m := nextLink.FindStringSubmatch(body); m != nil {
		return html.UnescapeString(m[1])
	}
	return ""
}

func newUI(t *testing.T, st web.Stores, opts web.Options) *web.UI {
	t.Helper()
	ui, err := web.New(st, opts)
	if err != nil {
		t.Fatal(err)
	}
	return ui
}
