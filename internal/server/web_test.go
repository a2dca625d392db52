package server_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"html"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
)

// browser is a cookie-keeping HTTP client, as a web browser is.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar}}
}

func (b *browser) get(path string) (int, string) {
	b.t.Helper()
	resp, err := b.c.Get(b.base + path)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (b *browser) post(path string, form url.Values) (int, string) {
	b.t.Helper()
	resp, err := b.c.PostForm(b.base+path, form)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

var csrfField = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// csrf is the token of the forms of a page.
func (b *browser) csrf(path string) string {
	b.t.Helper()
	_, body := b.get(path)
	m := csrfField.FindStringSubmatch(body)
	if m == nil {
		b.t.Fatalf("no CSRF token in the forms of %s", path)
	}
	return m[1]
}

func (b *browser) signIn(user, pass string) {
	b.t.Helper()
	tok := b.csrf("/signin")
	status, body := b.post("/signin", url.Values{"csrf": {tok}, "username": {user}, "password": {pass}, "next": {"/repository"}})
	if status != http.StatusOK || !strings.Contains(body, "Signed in as <strong>"+user) {
		b.t.Fatalf("sign in as %s: %d\n%s", user, status, body)
	}
}

// TestWebPermissions: every page applies the API's permission decision;
// an anonymous visitor and a user without rights see nothing private.
func TestWebPermissions(t *testing.T) {
	w := newWorld(t)
	priv := w.digest["private"].String()
	pages := []string{"/", "/repository", "/repository?q=acme&sort=pushed", "/repository?sort=size",
		"/repository/acme/private", "/repository/acme/private?filter=v&sort=name",
		"/repository/acme/private/activity", "/repository/acme/private/manifest/" + priv,
		"/repository/acme/private/manifest/" + priv + "/vulnerabilities.csv"}
	for _, who := range []string{"anonymous", "stranger"} {
		b := newBrowser(t, w.url)
		if who != "anonymous" {
			b.signIn(who, pw)
		}
		for _, p := range pages {
			status, body := b.get(p)
			if strings.Contains(body, "acme/private") || strings.Contains(body, priv) {
				t.Errorf("%s sees the private repository on %s (%d)", who, p, status)
			}
			if strings.HasPrefix(p, "/repository/acme/private") && status != http.StatusNotFound {
				t.Errorf("%s: GET %s = %d, want 404", who, p, status)
			}
		}
		if _, body := b.get("/repository"); !strings.Contains(body, "acme/public") {
			t.Errorf("%s does not see the public repository", who)
		}
	}
	// A reader sees the private tags, not its notifications and mirror.
	b := newBrowser(t, w.url)
	b.signIn("reader", pw)
	if status, body := b.get("/repository/acme/private"); status != 200 || !strings.Contains(body, priv[7:19]) {
		t.Errorf("reader: tags page %d, digest shown: %v", status, strings.Contains(body, priv[7:19]))
	}
	if _, body := b.get("/repository"); !strings.Contains(body, "acme/private") {
		t.Error("reader does not find acme/private in the listing")
	}
	if _, body := b.get("/repository/acme/private/activity"); strings.Contains(body, "<h2>Notifications") || strings.Contains(body, "Sync now") {
		t.Error("reader sees the admins' activity")
	}
	if _, body := b.get("/repository/acme/private"); strings.Contains(body, "delete-tags") || strings.Contains(body, "/settings") {
		t.Error("reader is offered tag deletion or the settings")
	}
	root := newBrowser(t, w.url)
	root.signIn("root", pw)
	// The settings page is found from the repository's page by its admins.
	if _, body := root.get("/repository/acme/private"); !strings.Contains(body, `href="/repository/acme/private/settings"`) {
		t.Error("root finds no link to the settings on the repository's page")
	}
	if _, body := root.get("/repository/acme/private/activity"); !strings.Contains(body, "<h2>Notifications") {
		t.Error("root does not see the notifications")
	}
}

// TestWebCSRF: a POST without the form's token, with another's token, or
// from another origin is refused and changes nothing.
func TestWebCSRF(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	b := newBrowser(t, w.url)
	if status, _ := b.post("/signin", url.Values{"username": {"writer"}, "password": {pw}}); status != http.StatusForbidden {
		t.Errorf("sign-in without a CSRF token: %d, want 403", status)
	}
	b.signIn("writer", pw)
	tok := b.csrf("/repository/acme/private")
	other := newBrowser(t, w.url)
	other.signIn("owner", pw)
	otherTok := other.csrf("/repository/acme/private")
	exists := func() bool {
		rows, _, err := w.db.Manifests().TagRows(ctx, "acme/private", meta.TagRowQuery{Filter: "v1", Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		return len(rows) == 1
	}
	for name, form := range map[string]url.Values{
		"no token":        {"tag": {"v1"}},
		"empty token":     {"tag": {"v1"}, "csrf": {""}},
		"another's token": {"tag": {"v1"}, "csrf": {otherTok}},
	} {
		if status, _ := b.post("/repository/acme/private/delete-tags", form); status != http.StatusForbidden || !exists() {
			t.Errorf("%s: %d, tag kept %v; want 403 and the tag kept", name, status, exists())
		}
	}
	req, _ := http.NewRequest("POST", w.url+"/repository/acme/private/delete-tags", strings.NewReader(url.Values{"tag": {"v1"}, "csrf": {tok}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Origin", "https://evil.example")
	if resp, err := b.c.Do(req); err != nil || resp.StatusCode != http.StatusForbidden || !exists() {
		t.Errorf("cross-origin post: %v %v, tag kept %v", resp.StatusCode, err, exists())
	}
	// GET never changes anything.
	if status, _ := b.get("/repository/acme/private/delete-tags?tag=v1&csrf=" + tok); status == 200 && !exists() {
		t.Error("a GET deleted a tag")
	}
	// A reader may not delete, even with its own token.
	r := newBrowser(t, w.url)
	r.signIn("reader", pw)
	if status, _ := r.post("/repository/acme/private/delete-tags", url.Values{"tag": {"v1"}, "csrf": {r.csrf("/repository/acme/private")}}); status != http.StatusForbidden || !exists() {
		t.Errorf("reader delete: %d, want 403", status)
	}
	if status, body := b.post("/repository/acme/private/delete-tags", url.Values{"tag": {"v1"}, "csrf": {tok}}); status != 200 || exists() {
		t.Errorf("writer delete with the token: %d, tag kept %v\n%s", status, exists(), body)
	}
}

// TestWebSession: sign-in cookies, sign-out, expiry, wrong passwords and
// the security headers.
func TestWebSession(t *testing.T) {
	w := newWorld(t)
	ctx := context.Background()
	b := newBrowser(t, w.url)
	tok := b.csrf("/signin")
	if status, body := b.post("/signin", url.Values{"csrf": {tok}, "username": {"reader"}, "password": {"wrong"}}); status != http.StatusUnauthorized || !strings.Contains(body, "Wrong username or password") {
		t.Errorf("wrong password: %d", status)
	}
	// A refused sign-in puts the name back in the form, not one no
	// account can have (before, a 1 MiB name came back whole).
	long := strings.Repeat("n", 100_000)
	if status, body := b.post("/signin", url.Values{"csrf": {tok}, "username": {long}, "password": {"wrong"}}); status != http.StatusUnauthorized || len(body) > 50_000 {
		t.Errorf("a sign-in with a 100 KB name: %d, %d bytes answered", status, len(body))
	}
	if status, body := b.post("/signin", url.Values{"csrf": {tok}, "username": {"reader"}, "password": {"wrong"}}); status != http.StatusUnauthorized || !strings.Contains(body, `value="reader"`) {
		t.Errorf("a wrong password does not give the name back to the form: %d", status)
	}
	req, _ := http.NewRequest("POST", w.url+"/signin", strings.NewReader(url.Values{"csrf": {tok}, "username": {"reader"}, "password": {pw}}.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "berth_csrf", Value: tok})
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	var session *http.Cookie
	for _, c := range resp.Cookies() {
		if c.Name == "berth_session" {
			session = c
		}
	}
	if resp.StatusCode != http.StatusSeeOther || session == nil || !session.HttpOnly || session.SameSite != http.SameSiteLaxMode {
		t.Fatalf("sign-in: %d, session cookie %+v", resp.StatusCode, session)
	}
	withCookie := func(c *http.Cookie) string {
		req, _ := http.NewRequest("GET", w.url+"/repository/acme/private", nil)
		req.AddCookie(c)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		for _, h := range []string{"Content-Security-Policy", "X-Frame-Options", "X-Content-Type-Options", "Referrer-Policy"} {
			if resp.Header.Get(h) == "" {
				t.Errorf("no %s header", h)
			}
		}
		if strings.Contains(resp.Header.Get("Content-Security-Policy"), "unsafe-inline") {
			t.Error("the CSP allows inline script or style")
		}
		return string(body)
	}
	if body := withCookie(session); !strings.Contains(body, "Signed in as <strong>reader") {
		t.Fatal("the session cookie does not sign in")
	}
	// Sign out: the cookie no longer works.
	jar, _ := cookiejar.New(nil)
	u, _ := url.Parse(w.url)
	jar.SetCookies(u, []*http.Cookie{session})
	sb := &browser{t: t, base: w.url, c: &http.Client{Jar: jar}}
	if status, _ := sb.post("/signout", url.Values{"csrf": {sb.csrf("/repository")}}); status != 200 {
		t.Errorf("sign out: %d", status)
	}
	if body := withCookie(session); strings.Contains(body, "Signed in") || strings.Contains(body, "acme/private</h1>") {
		t.Error("the session still works after signing out")
	}
	// An expired session signs no one in.
	reader, err := w.db.Users().UserByName(ctx, "reader")
	if err != nil {
		t.Fatal(err)
	}
	if err := w.db.WebSessions().CreateWebSession(ctx, meta.WebSession{IDHash: hashHex("expired-session-id"), UserID: reader.ID, CSRF: "x",
		ExpiresAt: time.Now().Add(-time.Second)}); err != nil {
		t.Fatal(err)
	}
	if body := withCookie(&http.Cookie{Name: "berth_session", Value: "expired-session-id"}); strings.Contains(body, "Signed in") {
		t.Error("an expired session signs in")
	}
	// The registry and the API keep their routes.
	if r := w.do("GET", "/v2/", "", "", nil); r.StatusCode != http.StatusUnauthorized {
		t.Errorf("/v2/: %d", r.StatusCode)
	}
	if r := w.do("GET", "/api/v1/repository?public=true", "", "", nil); r.Header.Get("Content-Type") != "application/json" {
		t.Errorf("/api/v1: %s", r.Header.Get("Content-Type"))
	}
}

func hashHex(s string) string {
	h := sha256.Sum256([]byte(s))
	return hex.EncodeToString(h[:])
}

// TestWebSignInNext: the page a sign-in returns to stays on this site,
// whatever next= says: a scheme, another host, backslashes, and control
// characters or spaces that browsers strip from a Location ("/\t/evil"
// is "//evil" to them), are refused for "/".
func TestWebSignInNext(t *testing.T) {
	w := newWorld(t)
	for next, want := range map[string]string{
		"/repository/acme/private?tab=tags": "/repository/acme/private?tab=tags",
		"/repository/a%09b":                 "/repository/a%09b",
		"/\t/evil.example":                  "/",
		"/\n/evil.example":                  "/",
		"/\r/evil.example":                  "/",
		"/ /evil.example":                   "/",
		"/\u00a0/evil.example":              "/",
		"/\x7f/evil.example":                "/",
		"\t//evil.example":                  "/",
		"//evil.example":                    "/",
		"/\\evil.example":                   "/",
		"https://evil.example/":             "/",
		"javascript:alert(1)":               "/",
		"":                                  "/",
	} {
		tok := newBrowser(t, w.url).csrf("/signin")
		req, _ := http.NewRequest("POST", w.url+"/signin", strings.NewReader(url.Values{"csrf": {tok}, "username": {"reader"}, "password": {pw}, "next": {next}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: "berth_csrf", Value: tok})
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusSeeOther || resp.Header.Get("Location") != want {
			t.Errorf("next=%q: %d, Location %q, want %q", next, resp.StatusCode, resp.Header.Get("Location"), want)
		}
		// The form carries the same value the sign-in would use.
		b := newBrowser(t, w.url)
		if status, body := b.get("/signin?next=" + url.QueryEscape(next)); status != 200 || !strings.Contains(body, `name="next" value="`+html.EscapeString(want)+`"`) {
			t.Errorf("GET /signin?next=%q: %d, the form does not return to %q", next, status, want)
		}
	}
}

// TestWebSignInRefusesAccessTokens: the web UI signs in users with their
// password only. A user's API token (the first user's +initialize token,
// which acts as the user) is for clients: it gets no session, which would
// have outlived the token's revocation.
func TestWebSignInRefusesAccessTokens(t *testing.T) {
	_, hs, _ := startServer(t, func(cfg *config.Config) { cfg.FeatureUserInitialize = true })
	body := strings.NewReader(`{"username": "admin", "password": "admin-password-1", "access_token": true}`)
	resp, err := http.Post(hs.URL+"/api/v1/user/initialize", "application/json", body)
	if err != nil {
		t.Fatal(err)
	}
	var init struct {
		AccessToken string `json:"access_token"`
	}
	json.NewDecoder(resp.Body).Decode(&init)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || init.AccessToken == "" {
		t.Fatalf("initialize: %d, token %q", resp.StatusCode, init.AccessToken)
	}
	signIn := func(user, pass string) (int, *http.Cookie) {
		t.Helper()
		tok := newBrowser(t, hs.URL).csrf("/signin")
		req, _ := http.NewRequest("POST", hs.URL+"/signin", strings.NewReader(url.Values{"csrf": {tok}, "username": {user}, "password": {pass}}.Encode()))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: "berth_csrf", Value: tok})
		resp, err := http.DefaultTransport.RoundTrip(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		for _, c := range resp.Cookies() {
			if c.Name == "berth_session" && c.MaxAge >= 0 {
				return resp.StatusCode, c
			}
		}
		return resp.StatusCode, nil
	}
	if status, session := signIn("admin+initialize", init.AccessToken); status != http.StatusUnauthorized || session != nil {
		t.Fatalf("sign-in with the API token: %d, session cookie %v; want 401 and none", status, session)
	}
	if status, session := signIn("admin", "admin-password-1"); status != http.StatusSeeOther || session == nil {
		t.Fatalf("sign-in with the password: %d, session cookie %v", status, session)
	}
}
