package web_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/web"
)

// TestIndexVulnerabilityCSVIsPerPlatform: the vulnerabilities CSV of a
// multi-platform image is refused (404, saying the CSV is per platform,
// and linking the platform's CSV), never an empty file called complete;
// the index's page links each platform's CSV, which answers with the
// platform's data (here incomplete: Debian without advisories).
func TestIndexVulnerabilityCSVIsPerPlatform(t *testing.T) {
	e := newScanEnv(t)
	deb := e.push("acme/app", "deb", debianImage(nil))
	e.pushIndex("acme/app", "multi", deb)
	e.drain()
	idx, err := e.db.Manifests().GetManifest(context.Background(), "acme/app", "multi", "", false)
	if err != nil {
		t.Fatal(err)
	}
	ui := newUI(t, e.stores(), web.Options{Auth: readOnlyPublic{public: map[string]bool{"acme/app": true}}})
	platformCSV := "/repository/acme/app/manifest/" + deb + "/vulnerabilities.csv"

	req := httptest.NewRequest(http.MethodGet, "/repository/acme/app/manifest/"+idx.Digest.String()+"/vulnerabilities.csv", nil)
	rec := httptest.NewRecorder()
	ui.ServeHTTP(rec, req)
	body := rec.Body.String()
	if rec.Code != http.StatusNotFound || rec.Header().Get("Berth-Vulnerability-Data") != "" || strings.Contains(rec.Header().Get("Content-Type"), "csv") {
		t.Errorf("the CSV of an index = %d, %q, Berth-Vulnerability-Data %q; want a 404 page",
			rec.Code, rec.Header().Get("Content-Type"), rec.Header().Get("Berth-Vulnerability-Data"))
	}
	if !strings.Contains(body, "per platform") || !strings.Contains(body, `href="`+platformCSV+`"`) {
		t.Errorf("the refusal does not say the CSV is per platform, with the platform's link\n%.3000s", body)
	}

	status, body := get(t, ui, "/repository/acme/app/manifest/"+idx.Digest.String(), false)
	if status != http.StatusOK || !strings.Contains(body, `href="`+platformCSV+`"`) {
		t.Errorf("the index's page (%d) does not link the platform's CSV\n%.3000s", status, body)
	}
	if strings.Contains(body, idx.Digest.String()+"/vulnerabilities.csv") {
		t.Error("the index's page links a CSV of the index")
	}

	req = httptest.NewRequest(http.MethodGet, platformCSV, nil)
	rec = httptest.NewRecorder()
	ui.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK || rec.Header().Get("Berth-Vulnerability-Data") != "incomplete" {
		t.Errorf("the platform's CSV = %d, Berth-Vulnerability-Data %q; want 200, incomplete", rec.Code, rec.Header().Get("Berth-Vulnerability-Data"))
	}
}
