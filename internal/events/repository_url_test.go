package events_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// TestRepositoryURLOpensThatRepository: a payload's homepage opens the
// page of the event's repository in the web UI, as the UI routes paths,
// also for a nested name that ends like one of the pages under a
// repository (acme/app/activity is not acme/app's activity page).
func TestRepositoryURLOpensThatRepository(t *testing.T) {
	ctx := context.Background()
	db := metatest.Open(t, "sqlite")
	names := []string{"acme/app", "acme/app/activity", "acme/app/settings", "acme/team/manifest/x", "acme/a/manifest/sha256/vulnerabilities.csv", "acme/plain"}
	metatest.Orgs(t, db, "acme")
	for _, name := range names {
		if err := db.Repositories().CreateRepository(ctx, name, "public", "the repository "+name+" itself", "test", 0); err != nil {
			t.Fatal(err)
		}
	}
	ui, err := web.New(wire.WebStores(db), web.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv := events.Server{Host: "registry.example:5000", Scheme: "https"}
	for _, name := range names {
		link := srv.RepositoryURL(name)
		u, err := url.Parse(link)
		if err != nil || u.Scheme != "https" || u.Host != "registry.example:5000" {
			t.Fatalf("RepositoryURL(%q) = %q", name, link)
		}
		rec := httptest.NewRecorder()
		ui.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, u.RequestURI(), nil))
		if body := rec.Body.String(); rec.Code != http.StatusOK || !strings.Contains(body, "the repository "+name+" itself") {
			t.Errorf("RepositoryURL(%q) = %s: GET %d, not that repository's page\n%.1500s", name, link, rec.Code, body)
		}
	}
	if got := srv.RepositoryURL("acme/plain"); got != "https://registry.example:5000/repository/acme/plain" {
		t.Errorf("a plain name's link changed: %s", got)
	}
}
