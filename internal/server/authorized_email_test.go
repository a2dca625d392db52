package server_test

import (
	"bufio"
	"context"
	"io"
	"mime/quotedprintable"
	"net/http"
	"net/http/cookiejar"
	"net/mail"
	"net/url"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv/smtpsink"
)

// confirmFormToken finds a form's CSRF token in a page.
var confirmFormToken = regexp.MustCompile(`name="csrf" value="([^"]+)"`)

// codeLink finds the confirmation link in a message's decoded text.
var codeLink = regexp.MustCompile(`https://registry\.example\.com/authrepoemail\?code=([A-Za-z0-9_-]+)`)

// TestAuthorizedEmailFlow: an email notification of a repository or an
// organization mails only addresses confirmed through the link that
// POST .../authorizedemail/{email} mails; the link works without
// sign-in, once; requests are rate-limited and for admins only.
func TestAuthorizedEmailFlow(t *testing.T) {
	ctx := context.Background()
	sink := smtpsink.New(t, smtpsink.Options{})
	_, hs, db := startServer(t, func(cfg *config.Config) {
		cfg.Scan.Enabled = false
		cfg.ExternalURL = "https://registry.example.com"
		cfg.Notifications.SMTPAddr = sink.Addr
		cfg.Notifications.SMTPFrom = "berth@registry.example.com"
	})
	hash, _ := auth.HashPassword(pw)
	users := map[string]meta.User{}
	for _, name := range []string{"owner", "stranger"} {
		u, err := db.Users().CreateUser(ctx, meta.User{Username: name, SecretHash: hash})
		if err != nil {
			t.Fatal(err)
		}
		users[name] = u
	}
	if _, err := db.Organizations().CreateOrganization(ctx, "acme", users["owner"].ID); err != nil {
		t.Fatal(err)
	}
	if err := db.Repositories().CreateRepository(ctx, "acme/app", "public", "", "owner", users["owner"].ID); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, url: hs.URL, db: db, creds: map[string][2]string{"owner": {"owner", pw}, "stranger": {"stranger", pw}}}
	const addr = "ops@example.com"
	auth := "/api/v1/repository/acme/app/authorizedemail/" + addr
	notif := "/api/v1/repository/acme/app/notification/"
	create := `{"event":"repo_push","method":"email","config":{"email":"` + addr + `"}}`

	if st, _, raw := w.call("GET", auth, "owner", ""); st != http.StatusNotFound {
		t.Fatalf("GET before any request: %d %s", st, raw)
	}
	// The path's address is decoded once: "%" is allowed in an address.
	if st, _, raw := w.call("GET", "/api/v1/repository/acme/app/authorizedemail/a%25b@example.com", "owner", ""); st != http.StatusNotFound || !strings.Contains(raw, "a%b@example.com") {
		t.Fatalf("GET of an address holding %%: %d %s", st, raw)
	}
	if st, _, raw := w.call("POST", auth, "stranger", ""); st != http.StatusForbidden {
		t.Fatalf("POST by a non-admin: %d %s", st, raw)
	}
	if st, _, raw := w.call("POST", notif, "owner", create); st != http.StatusBadRequest || !strings.Contains(raw, addr) || !strings.Contains(raw, "authorizedemail") {
		t.Fatalf("notification to an unconfirmed address: %d %s", st, raw)
	}
	if st, _, raw := w.call("POST", "/api/v1/repository/acme/app/authorizedemail/Ops%20%3Cops@example.com%3E", "owner", ""); st != http.StatusBadRequest {
		t.Fatalf("address with a name: %d %s", st, raw)
	}
	sink.None(t)

	st, v, raw := w.call("POST", auth, "owner", "")
	if st != http.StatusOK || v["email"] != addr || v["repository"] != "app" || v["namespace"] != "acme" || v["confirmed"] != false {
		t.Fatalf("POST: %d %s", st, raw)
	}
	m := sink.Next(t)
	msg, err := mail.ReadMessage(strings.NewReader(m.Data))
	if err != nil {
		t.Fatal(err)
	}
	raw2, err := io.ReadAll(quotedprintable.NewReader(msg.Body))
	if err != nil {
		t.Fatal(err)
	}
	body := string(raw2)
	found := codeLink.FindStringSubmatch(body)
	if len(m.Rcpt) != 1 || m.Rcpt[0] != addr || found == nil || !strings.Contains(body, "acme/app") {
		t.Fatalf("confirmation mail to %v:\n%s", m.Rcpt, m.Data)
	}
	code := found[1]
	if st, _, raw := w.call("POST", auth, "owner", ""); st != http.StatusTooManyRequests {
		t.Fatalf("second POST within 10 minutes: %d %s", st, raw)
	}
	sink.None(t)

	// The link, followed by someone with no account: it shows a button
	// (a mail scanner opening the link confirms nothing), whose form
	// posts the code.
	jar, _ := cookiejar.New(nil)
	browser := &http.Client{Jar: jar}
	read := func(resp *http.Response, err error) (int, string) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b strings.Builder
		bufio.NewReader(resp.Body).WriteTo(&b)
		return resp.StatusCode, b.String()
	}
	confirm := func(code string) (int, string) {
		t.Helper()
		st, page := read(browser.Get(hs.URL + "/authrepoemail?code=" + url.QueryEscape(code)))
		token := confirmFormToken.FindStringSubmatch(page)
		if st != http.StatusOK || token == nil || !strings.Contains(page, `action="/authrepoemail"`) {
			t.Fatalf("the link's page: %d %s", st, page)
		}
		if st, v, raw := w.call("GET", auth, "owner", ""); st != http.StatusOK || v["confirmed"] != false {
			t.Fatalf("opening the link confirmed the address: %d %s", st, raw)
		}
		return read(browser.PostForm(hs.URL+"/authrepoemail", url.Values{"code": {code}, "csrf": {token[1]}}))
	}
	if st, page := confirm(code + "x"); st != http.StatusBadRequest || !strings.Contains(page, "wrong, already used or expired") {
		t.Fatalf("wrong code: %d %s", st, page)
	}
	if st, page := confirm(code); st != http.StatusOK || !strings.Contains(page, "repository acme/app") || !strings.Contains(page, addr) {
		t.Fatalf("confirm: %d %s", st, page)
	}
	_, page := read(browser.Get(hs.URL + "/authrepoemail?code=" + url.QueryEscape(code)))
	token := confirmFormToken.FindStringSubmatch(page)
	if token == nil {
		t.Fatalf("the link's page again: %s", page)
	}
	if st, _ := read(browser.PostForm(hs.URL+"/authrepoemail", url.Values{"code": {code}})); st != http.StatusForbidden {
		t.Fatalf("a post without the form's token: %d", st)
	}
	if st, _ := read(browser.PostForm(hs.URL+"/authrepoemail", url.Values{"code": {code}, "csrf": {token[1]}})); st != http.StatusBadRequest {
		t.Fatalf("code used twice: %d", st)
	}
	if st, v, raw := w.call("GET", auth, "owner", ""); st != http.StatusOK || v["confirmed"] != true {
		t.Fatalf("GET after confirmation: %d %s", st, raw)
	}
	if st, _, raw := w.call("POST", notif, "owner", create); st != http.StatusCreated {
		t.Fatalf("notification to a confirmed address: %d %s", st, raw)
	}
	// Confirmed for the repository is not confirmed for its organization.
	orgCreate := `{"event":"repo_push","method":"email","config":{"email":"` + addr + `, dev@example.com"}}`
	if st, _, raw := w.call("POST", "/api/v1/organization/acme/notification/", "owner", orgCreate); st != http.StatusBadRequest ||
		!strings.Contains(raw, "dev@example.com") || !strings.Contains(raw, "/api/v1/organization/acme/authorizedemail/") {
		t.Fatalf("organization notification to unconfirmed addresses: %d %s", st, raw)
	}
	if st, _, raw := w.call("POST", "/api/v1/organization/acme/authorizedemail/dev@example.com", "stranger", ""); st != http.StatusForbidden {
		t.Fatalf("organization POST by a non-admin: %d %s", st, raw)
	}
	if st, v, raw := w.call("POST", "/api/v1/organization/acme/authorizedemail/dev@example.com", "owner", ""); st != http.StatusOK || v["namespace"] != "acme" {
		t.Fatalf("organization POST: %d %s", st, raw)
	}
	if m := sink.Next(t); len(m.Rcpt) != 1 || m.Rcpt[0] != "dev@example.com" || !strings.Contains(m.Data, "organization acme") {
		t.Fatalf("organization confirmation mail to %v:\n%s", m.Rcpt, m.Data)
	}
}

// TestAuthorizedEmailNoSMTP: without SMTP settings no confirmation can
// be asked for, and the answer says why.
func TestAuthorizedEmailNoSMTP(t *testing.T) {
	ctx := context.Background()
	_, hs, db := startServer(t, func(cfg *config.Config) { cfg.Scan.Enabled = false })
	hash, _ := auth.HashPassword(pw)
	u, err := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: hash})
	if err != nil {
		t.Fatal(err)
	}
	if err := db.Repositories().CreateRepository(ctx, "owner/app", "public", "", "owner", u.ID); err != nil {
		t.Fatal(err)
	}
	w := &world{t: t, url: hs.URL, db: db, creds: map[string][2]string{"owner": {"owner", pw}}}
	if st, _, raw := w.call("POST", "/api/v1/repository/owner/app/authorizedemail/ops@example.com", "owner", ""); st != http.StatusNotImplemented || !strings.Contains(raw, "SMTP") {
		t.Fatalf("POST without SMTP: %d %s", st, raw)
	}
}
