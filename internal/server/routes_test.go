package server_test

import (
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/berth-dev/berth/internal/config"
)

// TestUncleanPaths: paths with "..", "//" or "/./" get the registry's
// spec errors (or a JSON 400 outside /v2), never ServeMux's 307 redirect
// with an HTML body.
func TestUncleanPaths(t *testing.T) {
	hs := serveConfig(t, func(cfg *config.Config) { cfg.Auth.Mode = "none" })
	client := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, c := range []struct {
		method, path string
		status       int
		code         string
	}{
		{"GET", "/v2/a/../b/manifests/latest", 400, "NAME_INVALID"},
		{"GET", "/v2//a/manifests/latest", 400, "NAME_INVALID"},
		{"GET", "/v2/a/./b/tags/list", 400, "NAME_INVALID"},
		{"HEAD", "/v2/a/../b/blobs/sha256:0000000000000000000000000000000000000000000000000000000000000000", 400, ""},
		{"PUT", "/v2/a//b/manifests/v1", 400, "NAME_INVALID"},
		{"GET", "/v2/../etc/passwd", 404, "UNSUPPORTED"},
		{"GET", "/api/v1/../v2/_catalog", 400, ""},
		{"GET", "/api/v1//repository", 400, ""},
	} {
		req, _ := http.NewRequest(c.method, hs.URL+c.path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status || resp.Header.Get("Content-Type") != "application/json" {
			t.Errorf("%s %s: %d %s %q", c.method, c.path, resp.StatusCode, resp.Header.Get("Content-Type"), body)
			continue
		}
		if c.method == "HEAD" {
			if resp.ContentLength <= 0 {
				t.Errorf("HEAD %s: no Content-Length", c.path)
			}
			continue
		}
		if c.code != "" {
			var e struct {
				Errors []struct{ Code string } `json:"errors"`
			}
			if err := json.Unmarshal(body, &e); err != nil || len(e.Errors) != 1 || e.Errors[0].Code != c.code {
				t.Errorf("%s %s: body %s, want code %s", c.method, c.path, body, c.code)
			}
		}
	}
}

// TestTokenEndpointRouted: /v2/auth is the token endpoint, not a registry
// path, in token mode.
func TestTokenEndpointRouted(t *testing.T) {
	hs := serveConfig(t, func(*config.Config) {})
	resp, err := http.Get(hs.URL + "/v2/auth?service=berth&scope=repository:a/b:pull")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	// Anonymous: a token with no access (200), never the registry's 404.
	if resp.StatusCode != 200 || !json.Valid(body) {
		t.Fatalf("GET /v2/auth: %d %s", resp.StatusCode, body)
	}
}
