package server_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestBaseImageTrigger runs the loop through a served Berth (workers,
// feed, graph, notifications): an application built on a base, a
// github_dispatch notification on the application's repository, the base
// tag moves, and the "GitHub" receives exactly one dispatch for the
// application, none for an image on another base; the API shows the
// application stale.
func TestBaseImageTrigger(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			host, _ := serveLive(t, dialect, func(cfg *config.Config) { cfg.Auth.Mode = "none" })
			var mu sync.Mutex
			var dispatches []map[string]any
			github := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				var body map[string]any
				json.NewDecoder(r.Body).Decode(&body)
				body["_auth"], body["_path"] = r.Header.Get("Authorization"), r.URL.Path
				mu.Lock()
				dispatches = append(dispatches, body)
				mu.Unlock()
				w.WriteHeader(http.StatusNoContent)
			}))
			defer github.Close()

			push := func(ref string, img v1.Image) string {
				t.Helper()
				r, err := name.ParseReference(host+"/"+ref, name.Insecure)
				if err != nil {
					t.Fatal(err)
				}
				if err := remote.Write(r, img); err != nil {
					t.Fatal(err)
				}
				d, _ := img.Digest()
				return d.String()
			}
			on := func(base v1.Image) v1.Image {
				l, _ := random.Layer(512, types.DockerLayer)
				img, err := mutate.AppendLayers(base, l)
				if err != nil {
					t.Fatal(err)
				}
				return img
			}
			api := func(method, path string, body any) (int, []byte) {
				t.Helper()
				var rd io.Reader
				if body != nil {
					b, _ := json.Marshal(body)
					rd = bytes.NewReader(b)
				}
				req, _ := http.NewRequest(method, "http://"+host+path, rd)
				req.Header.Set("Content-Type", "application/json")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				b, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, b
			}
			waitFor := func(what string, cond func() bool) {
				t.Helper()
				deadline := time.Now().Add(30 * time.Second)
				for !cond() {
					if time.Now().After(deadline) {
						t.Fatalf("timed out waiting for %s", what)
					}
					time.Sleep(20 * time.Millisecond)
				}
			}

			base, _ := random.Image(1024, 2)
			other, _ := random.Image(1024, 2)
			oldBase := push("mirror/base:1.9", base)
			push("mirror/other:1", other)
			// The platform's mirror is public: a private base of another
			// namespace is not named in its dependents' events.
			if st, b := api("POST", "/api/v1/repository/mirror/base/changevisibility", map[string]any{"visibility": "public"}); st != 200 {
				t.Fatalf("make the base public: %d %s", st, b)
			}
			app := push("team/app:v1", on(base))
			push("team/tool:1", on(other))
			// Indexed: the application's base is found by its layers.
			waitFor("the application's base", func() bool {
				st, b := api("GET", "/api/v1/repository/team/app/manifest/"+app+"/bases", nil)
				return st == 200 && strings.Contains(string(b), oldBase)
			})
			for _, repo := range []string{"team/app", "team/tool"} {
				st, b := api("POST", "/api/v1/repository/"+repo+"/notification/", map[string]any{
					"event": "base_image_updated", "method": "github_dispatch", "title": "rebuild",
					"config": map[string]any{"repository": "acme/" + strings.TrimPrefix(repo, "team/"), "token": "ghp_test-token",
						"api_url": github.URL, "event_type": "base-updated"}})
				if st != 201 || strings.Contains(string(b), "ghp_test-token") {
					t.Fatalf("create notification: %d %s", st, b)
				}
			}
			patched := push("mirror/base:1.9", random1(t))
			waitFor("the dispatch", func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(dispatches) > 0
			})
			time.Sleep(500 * time.Millisecond) // anything else would have arrived by now
			mu.Lock()
			got := append([]map[string]any(nil), dispatches...)
			mu.Unlock()
			if len(got) != 1 {
				t.Fatalf("%d dispatches, want 1: %v", len(got), got)
			}
			cp, _ := got[0]["client_payload"].(map[string]any)
			b, _ := cp["base"].(map[string]any)
			if got[0]["_path"] != "/repos/acme/app/dispatches" || got[0]["_auth"] != "Bearer ghp_test-token" || got[0]["event_type"] != "base-updated" ||
				cp["repository"] != "team/app" || cp["digest"] != app || b["old_digest"] != oldBase || b["new_digest"] != patched || b["tag"] != "1.9" {
				t.Fatalf("dispatch: %v", got[0])
			}
			st, body := api("GET", "/api/v1/repository/mirror/base/manifest/"+oldBase+"/dependents", nil)
			var deps struct {
				Dependents []struct {
					Repository string `json:"repository"`
					Stale      bool   `json:"stale"`
				} `json:"dependents"`
			}
			json.Unmarshal(body, &deps)
			if st != 200 || len(deps.Dependents) != 1 || deps.Dependents[0].Repository != "team/app" || !deps.Dependents[0].Stale {
				t.Fatalf("dependents: %d %s", st, body)
			}
		})
	}
}

func random1(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(1024, 2)
	if err != nil {
		t.Fatal(err)
	}
	return img
}
