package web_test

import (
	"context"
	"html"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// TestPutGuardedTagShowsTheCandidateNotice: "Put this tag on the
// manifest" for a tag the repository's gate guards moves nothing (the
// API's 202: the manifest becomes the tag's candidate); the page it
// redirects to says so, with the API's message and a link to the
// repository's Activity, and prod still names the manifest it named.
// Before, the page came back as after a move, with no word of it.
func TestPutGuardedTagShowsTheCandidateNotice(t *testing.T) {
	ctx := context.Background()
	e := testenv.New(t, testenv.Options{Open: true})
	released := putManifest(t, e.DB, "acme/app", "prod", meta.Manifest{Content: image("released")})
	next := putManifest(t, e.DB, "acme/app", "", meta.Manifest{Content: image("next")})
	if err := e.DB.Gates().PutGate(ctx, meta.Gate{Repository: "acme/app", Tags: []string{"prod"}}); err != nil {
		t.Fatal(err)
	}
	ui := newUI(t, wire.WebStores(e.DB), web.Options{API: e.API})
	page := "/repository/acme/app/manifest/" + next.String()
	form := url.Values{"tag": {"prod"}, "csrf": {csrfToken}}
	req := httptest.NewRequest(http.MethodPost, page+"/add-tag", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "berth_csrf", Value: csrfToken})
	rec := httptest.NewRecorder()
	ui.ServeHTTP(rec, req)
	to := rec.Header().Get("Location")
	if rec.Code != http.StatusSeeOther || !strings.HasPrefix(to, page) {
		t.Fatalf("POST add-tag prod = %d to %q, want 303 to the manifest page\n%.2000s", rec.Code, to, rec.Body.String())
	}
	status, body := get(t, ui, strings.SplitN(to, "#", 2)[0], false)
	if status != http.StatusOK {
		t.Fatalf("GET %s = %d", to, status)
	}
	if !strings.Contains(body, html.EscapeString(meta.ErrGuardedTag.Error())) || !strings.Contains(body, `href="/repository/acme/app/activity#gate"`) {
		t.Errorf("the page after the form does not say prod became a candidate, with a link to the Activity\n%.4000s", body)
	}
	m, err := e.DB.Manifests().GetManifest(ctx, "acme/app", "prod", "", false)
	if err != nil || m.Digest != released {
		t.Errorf("prod names %s (%v), want %s still", m.Digest, err, released)
	}
	// A move that happens says nothing of a candidate.
	form.Set("tag", "dev")
	req = httptest.NewRequest(http.MethodPost, page+"/add-tag", strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "berth_csrf", Value: csrfToken})
	rec = httptest.NewRecorder()
	ui.ServeHTTP(rec, req)
	if to := rec.Header().Get("Location"); rec.Code != http.StatusSeeOther || strings.Contains(to, "candidate") {
		t.Errorf("POST add-tag dev = %d to %q, want 303 with no candidate notice", rec.Code, to)
	}
}
