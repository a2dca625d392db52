package web_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// TestLongSearchesAreNoServerError: a search of the listing, a filter of
// the tags table and the API's tag filter of 25,001 underscores (each
// escaped for LIKE into two bytes: past SQLite's limit of 50,000 on a
// pattern) answer without a server error; longer than any name or tag,
// they match nothing.
func TestLongSearchesAreNoServerError(t *testing.T) {
	e := testenv.New(t, testenv.Options{Open: true})
	putManifest(t, e.DB, "acme/app", "v1", meta.Manifest{Content: image("app")})
	ui := newUI(t, wire.WebStores(e.DB), web.Options{})
	long := strings.Repeat("_", 25001)
	for _, path := range []string{"/repository?q=" + long, "/repository?sort=pushed&q=" + long, "/repository/acme/app?filter=" + long} {
		status, body := get(t, ui, path, false)
		if status != http.StatusOK || strings.Contains(body, ">v1</a>") || strings.Contains(body, ">acme/app</a>") {
			t.Errorf("GET %.40s… = %d, want 200 and no match\n%.1000s", path, status, body)
		}
	}
	if status, body := get(t, ui, "/repository?q=app", false); status != http.StatusOK || !strings.Contains(body, ">acme/app</a>") {
		t.Errorf("GET /repository?q=app = %d without acme/app", status)
	}
	res, body := e.Do("", http.MethodGet, "/api/v1/repository/acme/app/tag/?filter_tag_name=like:"+long, nil)
	if res.StatusCode >= 500 {
		t.Errorf("GET the API's tags with a long filter = %d %s", res.StatusCode, body)
	}
}
