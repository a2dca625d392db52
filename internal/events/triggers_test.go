package events

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

func basePayload(t *testing.T) []byte {
	t.Helper()
	p, err := SamplePayload(Server{Host: "registry.example.com"}, EventBaseImageUpdated, "team/app")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(p)
	return b
}

// TestGitHubDispatch: the request GitHub's repository_dispatch API
// expects, a client payload within its ten-key limit, and a token a
// receiver echoes kept out of the result.
func TestGitHubDispatch(t *testing.T) {
	const token = "ghp_secret-token-value"
	var got struct {
		path, auth, accept, version string
		body                        map[string]any
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got.path, got.auth, got.accept, got.version = r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Accept"), r.Header.Get("X-GitHub-Api-Version")
		json.NewDecoder(r.Body).Decode(&got.body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	m := GitHubDispatch{APIURL: srv.URL, Repository: "acme/app", Token: token, Client: srv.Client()}
	res := m.Deliver(context.Background(), Delivery{Kind: EventBaseImageUpdated, EventUUID: "u1", Body: basePayload(t)})
	if res.Err != nil || res.StatusCode != 204 {
		t.Fatalf("deliver: %+v", res)
	}
	if got.path != "/repos/acme/app/dispatches" || got.auth != "Bearer "+token || got.accept != "application/vnd.github+json" || got.version == "" {
		t.Fatalf("request: %+v", got)
	}
	if got.body["event_type"] != EventBaseImageUpdated {
		t.Fatalf("event_type: %v", got.body["event_type"])
	}
	cp, _ := got.body["client_payload"].(map[string]any)
	base, _ := cp["base"].(map[string]any)
	if len(cp) > 10 || cp["repository"] != "team/app" || base["new_digest"] == nil || cp["digest"] == nil {
		t.Fatalf("client_payload (%d keys): %v", len(cp), cp)
	}
	// A receiver that echoes the token: the result does not carry it.
	echo := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized)
		io.WriteString(w, "bad credentials: "+r.Header.Get("Authorization"))
	}))
	defer echo.Close()
	m.APIURL, m.Client = echo.URL, echo.Client()
	res = m.Deliver(context.Background(), Delivery{Kind: EventBaseImageUpdated, Body: basePayload(t)})
	if res.Err == nil || strings.Contains(res.ResponseSnippet, token) || strings.Contains(res.Err.Error(), token) {
		t.Fatalf("token leaked or failure missed: %+v", res)
	}
	for _, bad := range []string{"", "acme", "acme/app/x", "a b/c"} {
		if ValidateGitHubDispatch(bad, "", "") == nil {
			t.Errorf("repository %q accepted", bad)
		}
	}
	if ValidateGitHubDispatch("acme/app", strings.Repeat("x", 101), "") == nil || ValidateGitHubDispatch("acme/app", "", "ftp://x") == nil {
		t.Error("bad event_type or api_url accepted")
	}
}

// TestGitLabTrigger: GitLab's pipeline trigger request, with the event as
// BERTH_* variables, and the token kept out of the result.
func TestGitLabTrigger(t *testing.T) {
	const token = "glptt-secret-trigger"
	var form url.Values
	var path string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		path = r.URL.EscapedPath()
		r.ParseForm()
		form = r.PostForm
		w.WriteHeader(http.StatusCreated)
		io.WriteString(w, `{"id":1,"token":"`+r.PostForm.Get("token")+`"}`)
	}))
	defer srv.Close()
	m := GitLabTrigger{BaseURL: srv.URL, Project: "group/sub/app", Token: token, Ref: "release", Client: srv.Client()}
	res := m.Deliver(context.Background(), Delivery{Kind: EventBaseImageUpdated, Body: basePayload(t)})
	if res.Err != nil || res.StatusCode != 201 || strings.Contains(res.ResponseSnippet, token) {
		t.Fatalf("deliver: %+v", res)
	}
	if path != "/api/v4/projects/group%2Fsub%2Fapp/trigger/pipeline" || form.Get("token") != token || form.Get("ref") != "release" {
		t.Fatalf("request: %s %v", path, form)
	}
	if form.Get("variables[BERTH_REPOSITORY]") != "team/app" || form.Get("variables[BERTH_BASE_TAG]") != "1.9" ||
		form.Get("variables[BERTH_BASE_NEW_DIGEST]") == "" || form.Get("variables[BERTH_TAGS]") != "latest,v1" {
		t.Fatalf("variables: %v", form)
	}
	if ValidateGitLabTrigger(" ", "") == nil || ValidateGitLabTrigger("1", "nope") == nil || ValidateGitLabTrigger("42", "") != nil {
		t.Error("gitlab_trigger validation")
	}
}
