package web_test

import (
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// TestFormsAcceptTheExternalOrigin: behind a proxy that hands the UI
// another Host (berth:5000), a form posted from the registry's public
// origin (externalURL's, https://registry.example.com) runs, as the API
// accepts it (before, every form was refused with 403); one from another
// site, or from the public host over another scheme, is still refused
// and changes nothing; without a trusted origin, only the request's own
// host is accepted.
func TestFormsAcceptTheExternalOrigin(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	putManifest(t, db, "acme/app", "v1", meta.Manifest{Content: image("app")})
	calls := 0
	trusting := newUI(t, wire.WebStores(db), web.Options{API: countingAPI{&calls}, TrustedOrigin: "https://registry.example.com"})
	plain := newUI(t, wire.WebStores(db), web.Options{API: countingAPI{&calls}})
	postFrom := func(ui http.Handler, origin string) int {
		t.Helper()
		form := url.Values{"tag": {"v1"}, "csrf": {csrfToken}}
		req := httptest.NewRequest(http.MethodPost, "/repository/acme/app/delete-tags", strings.NewReader(form.Encode()))
		req.Host = "berth:5000"
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.Header.Set("Origin", origin)
		req.AddCookie(&http.Cookie{Name: "berth_csrf", Value: csrfToken})
		rec := httptest.NewRecorder()
		ui.ServeHTTP(rec, req)
		return rec.Code
	}
	for _, c := range []struct {
		ui     http.Handler
		origin string
		runs   bool
	}{
		{trusting, "https://registry.example.com", true},
		{trusting, "https://REGISTRY.example.com", true},
		{trusting, "http://berth:5000", true},
		{trusting, "https://evil.example", false},
		{trusting, "http://registry.example.com", false},
		{trusting, "https://registry.example.com.evil.example", false},
		{plain, "https://registry.example.com", false},
		{plain, "http://berth:5000", true},
	} {
		calls = 0
		status := postFrom(c.ui, c.origin)
		if c.runs && (status != http.StatusOK || calls != 1) {
			t.Errorf("trusting %v, a form posted from %s = %d with %d API calls, want 200 and 1", c.ui == trusting, c.origin, status, calls)
		}
		if !c.runs && (status != http.StatusForbidden || calls != 0) {
			t.Errorf("trusting %v, a form posted from %s = %d with %d API calls, want 403 and none", c.ui == trusting, c.origin, status, calls)
		}
	}
}
