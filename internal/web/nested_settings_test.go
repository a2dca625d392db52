package web_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/gate"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// noGateRuns turns the gate endpoints on; nothing here evaluates.
type noGateRuns struct{}

func (noGateRuns) EvaluateAs(context.Context, int64, string) (gate.Evaluation, error) {
	return gate.Evaluation{}, nil
}

func (noGateRuns) Override(context.Context, int64, string, string) (gate.Evaluation, error) {
	return gate.Evaluation{}, nil
}

// postSession posts a form as the session's user (userSession's token).
func postSession(t *testing.T, ui http.Handler, path string, form url.Values) (int, string) {
	t.Helper()
	form.Set("csrf", strings.Repeat("c", 43))
	req := httptest.NewRequest(http.MethodPost, path, strings.NewReader(form.Encode()))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.AddCookie(&http.Cookie{Name: "berth_session", Value: strangerSession})
	rec := httptest.NewRecorder()
	ui.ServeHTTP(rec, req)
	return rec.Code, rec.Body.String()
}

// TestSettingsOfRepositoriesNamedLikeEndpoints: the settings of
// acme/ci/gate and acme/app/tag/v1, whose names end like an API endpoint
// of acme/ci (its gate) and acme/app (its tag v1), show and change those
// repositories, and deleting them deletes them alone: acme/ci keeps its
// gate and acme/app its tag v1 (before, the delete removed acme/ci's
// gate, or acme/app's tag). The API's paths keep their meaning, and the
// name followed by "/-" addresses the nested repository itself.
func TestSettingsOfRepositoriesNamedLikeEndpoints(t *testing.T) {
	e := testenv.New(t, testenv.Options{API: api.Options{Gates: noGateRuns{}}})
	alice := e.User("alice", false)
	e.Org("acme", "alice")
	ctx := context.Background()
	for name, desc := range map[string]string{"acme/ci": "", "acme/ci/gate": "the gate repository", "acme/app": "",
		"acme/app/tag/v1": "the tag repository"} {
		if err := e.DB.Repositories().CreateRepository(ctx, name, "private", desc, "test", 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.DB.Gates().PutGate(ctx, meta.Gate{Repository: "acme/ci", Tags: []string{"release"}, Config: json.RawMessage(`{"tags":["release"]}`)}); err != nil {
		t.Fatal(err)
	}
	v1 := putManifest(t, e.DB, "acme/app", "v1", meta.Manifest{Content: image("app")})

	// The API: the old paths mean what they meant; "/-" ends a name.
	for path, want := range map[string]string{
		"/api/v1/repository/acme/ci/gate":      `"tags":["release"]`,
		"/api/v1/repository/acme/ci/gate/-":    `"description":"the gate repository"`,
		"/api/v1/repository/acme/ci/gate/-/":   `"description":"the gate repository"`,
		"/api/v1/repository/acme/app/tag/v1/-": `"description":"the tag repository"`,
	} {
		res, body := e.Do("alice", http.MethodGet, path, nil)
		if res.StatusCode != http.StatusOK || !strings.Contains(string(body), want) {
			t.Errorf("GET %s = %d %s, want %s", path, res.StatusCode, body, want)
		}
	}

	for _, c := range []struct {
		method, path string
		status       int
	}{
		{http.MethodDelete, "/api/v1/repository/acme/ci/gate/-/gate", http.StatusNotFound}, // acme/ci/gate has none
		{http.MethodGet, "/api/v1/repository/acme/ci/gate/-/nosuchthing", http.StatusNotFound},
		{http.MethodPatch, "/api/v1/repository/acme/ci/gate/-", http.StatusMethodNotAllowed},
		{http.MethodGet, "/api/v1/repository/acme/app/tag/v1/-/tag/", http.StatusOK},
		{http.MethodGet, "/api/v1/repository/acme/-", http.StatusBadRequest}, // no namespace/name
	} {
		if res, body := e.Do("alice", c.method, c.path, nil); res.StatusCode != c.status {
			t.Errorf("%s %s = %d %s, want %d", c.method, c.path, res.StatusCode, body, c.status)
		}
	}

	st := wire.WebStores(e.DB)
	st.Sessions = userSession{alice}
	ui := newUI(t, st, web.Options{Auth: e.Authz, API: e.API})
	for repo, desc := range map[string]string{"acme/ci/gate": "the gate repository", "acme/app/tag/v1": "the tag repository"} {
		status, body := get(t, ui, "/repository/"+repo+"/-/settings", true)
		if status != http.StatusOK || !strings.Contains(body, "<title>Settings of "+repo) || !strings.Contains(body, desc) {
			t.Errorf("GET the settings of %s = %d, want 200 with its description %q\n%.3000s", repo, status, desc, body)
		}
	}
	if status, body := postSession(t, ui, "/repository/acme/app/tag/v1/-/settings/description", url.Values{"description": {"changed"}}); status != http.StatusSeeOther {
		t.Errorf("POST the description of acme/app/tag/v1 = %d\n%.2000s", status, body)
	}
	if ri, err := e.DB.Repositories().Repository(ctx, "acme/app/tag/v1"); err != nil || ri.Description != "changed" {
		t.Errorf("acme/app/tag/v1 after its description was changed: %+v, %v", ri, err)
	}
	for _, repo := range []string{"acme/ci/gate", "acme/app/tag/v1"} {
		if status, body := postSession(t, ui, "/repository/"+repo+"/-/settings/delete", url.Values{"confirm": {repo}}); status != http.StatusSeeOther {
			t.Errorf("POST delete %s = %d\n%.2000s", repo, status, body)
		}
		if ri, err := e.DB.Repositories().Repository(ctx, repo); err != nil || ri.Exists {
			t.Errorf("%s after its deletion: exists %v, %v", repo, ri.Exists, err)
		}
	}
	if g, err := e.DB.Gates().GetGate(ctx, "acme/ci"); err != nil || len(g.Tags) != 1 {
		t.Errorf("acme/ci's gate after acme/ci/gate was deleted: %+v, %v", g, err)
	}
	if m, err := e.DB.Manifests().GetManifest(ctx, "acme/app", "v1", "", false); err != nil || m.Digest != v1 {
		t.Errorf("acme/app:v1 after acme/app/tag/v1 was deleted: %v, %v", m.Digest, err)
	}
}
