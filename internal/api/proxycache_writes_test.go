package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
)

// TestProxyCacheOrgRefusesTagWrites: a proxy cache organization's tags
// are its upstream's. A mirror there would overwrite them with another
// upstream's image (and the cache would serve it until it expired), and a
// tag move or restore would point a cached tag at another cached digest:
// all are refused, as /v2 pushes and imports are. An organization with
// mirrored repositories cannot become a proxy cache either.
func TestProxyCacheOrgRefusesTagWrites(t *testing.T) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			e := newUREnv(t, d, api.Options{Mirrors: fakeMirrors{}, ProxyCache: &fakeProxy{}})
			alice := e.user("alice", false)
			e.org("hub", alice)
			e.robot("hub", "ci")
			e.repo("hub/alpine", "public")
			d1 := e.image("hub/alpine", "3.19", 10)
			d2 := e.image("hub/alpine", "3.20", 20)
			e.want("alice", "POST", "/api/v1/organization/hub/proxycache", `{"upstream_registry":"docker.io"}`, http.StatusCreated)

			const repo = "/api/v1/repository/hub/alpine"
			mirror := `{"external_reference":"evil.example/x/alpine","sync_interval":3600,` +
				`"root_rule":{"rule_kind":"tag_glob_csv","rule_value":["*"]},"robot_username":"hub+ci"}`
			says := func(r urResp) {
				t.Helper()
				if !strings.Contains(string(r.body), "proxy cache") {
					t.Fatalf("the refusal does not name the proxy cache: %s", r.body)
				}
			}
			says(e.want("alice", "POST", repo+"/mirror", mirror, http.StatusForbidden))
			e.want("alice", "GET", repo+"/mirror", nil, http.StatusNotFound)
			says(e.want("alice", "PUT", repo+"/tag/3.20", `{"manifest_digest":"`+d1.String()+`"}`, http.StatusForbidden))
			says(e.want("alice", "POST", repo+"/tag/3.20/restore", `{"manifest_digest":"`+d1.String()+`"}`, http.StatusForbidden))
			var tags struct {
				Tags []struct {
					Name   string `json:"name"`
					Digest string `json:"manifest_digest"`
				} `json:"tags"`
			}
			if err := json.Unmarshal(e.want("alice", "GET", repo+"/tag/?specificTag=3.20", nil, http.StatusOK).body, &tags); err != nil || len(tags.Tags) != 1 || tags.Tags[0].Digest != d2.String() {
				t.Fatalf("3.20 after refused writes: %+v %v, want %s", tags, err, d2)
			}

			// The other way round: an organization with a mirror.
			e.org("mir", alice)
			e.robot("mir", "ci")
			e.repo("mir/alpine", "public")
			e.want("alice", "POST", "/api/v1/repository/mir/alpine/mirror", strings.ReplaceAll(mirror, "hub+ci", "mir+ci"), http.StatusCreated)
			says(e.want("alice", "POST", "/api/v1/organization/mir/proxycache", `{"upstream_registry":"docker.io"}`, http.StatusBadRequest))
			e.want("alice", "GET", "/api/v1/organization/mir/proxycache", nil, http.StatusNotFound)
		})
	}
}

// TestProxyCacheOrgLegacyMirror: a mirror made before proxy cache
// organizations refused them (its organization became a proxy cache while
// it had the mirror) can still be stopped through the API: a PUT that
// leaves it disabled is accepted, whatever else it sends back (a GET's
// body with is_enabled false, as Quay's UI does). One that would leave it
// enabled is refused, and so is sync-now, each with 403 naming the proxy
// cache. Before, the disabling PUT was refused too, and sync-now synced.
func TestProxyCacheOrgLegacyMirror(t *testing.T) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			e := newUREnv(t, d, api.Options{Mirrors: fakeMirrors{}, ProxyCache: &fakeProxy{}})
			alice := e.user("alice", false)
			e.org("hub", alice)
			e.robot("hub", "ci")
			e.repo("hub/alpine", "public")
			const repo = "/api/v1/repository/hub/alpine"
			e.want("alice", "POST", repo+"/mirror", `{"external_reference":"upstream.example/x/alpine","sync_interval":3600,`+
				`"root_rule":{"rule_kind":"tag_glob_csv","rule_value":["*"]},"robot_username":"hub+ci"}`, http.StatusCreated)
			// The organization becomes a proxy cache as it could before
			// the refusal: its mirrored repository out of state MIRROR for
			// the moment the store checks.
			setState := func(state string) {
				t.Helper()
				if err := e.db.Repositories().UpdateRepository(ctx, "hub/alpine", nil, &state, nil, nil); err != nil {
					t.Fatal(err)
				}
			}
			setState("NORMAL")
			if err := e.db.ProxyCaches().SetProxyCache(ctx, meta.ProxyCache{Namespace: "hub", Upstream: "docker.io", ExpirationS: 86400}); err != nil {
				t.Fatal(err)
			}
			setState("MIRROR")
			says := func(r urResp) {
				t.Helper()
				if !strings.Contains(string(r.body), "proxy cache") {
					t.Fatalf("the refusal does not name the proxy cache: %s", r.body)
				}
			}
			says(e.want("alice", "POST", repo+"/mirror/sync-now", nil, http.StatusForbidden))
			says(e.want("alice", "PUT", repo+"/mirror", `{"sync_interval":7200}`, http.StatusForbidden))
			// What a GET shows, sent back with is_enabled false.
			var m map[string]any
			if err := json.Unmarshal(e.want("alice", "GET", repo+"/mirror", nil, http.StatusOK).body, &m); err != nil {
				t.Fatal(err)
			}
			m["is_enabled"] = false
			e.want("alice", "PUT", repo+"/mirror", m, http.StatusCreated)
			if err := json.Unmarshal(e.want("alice", "GET", repo+"/mirror", nil, http.StatusOK).body, &m); err != nil || m["is_enabled"] != false {
				t.Fatalf("the mirror after a disabling PUT: %v %v", m, err)
			}
			// Disabled, it may be changed (its stored credentials cleared),
			// not enabled again.
			e.want("alice", "PUT", repo+"/mirror", `{"external_registry_username":"","external_registry_password":""}`, http.StatusCreated)
			says(e.want("alice", "PUT", repo+"/mirror", `{"is_enabled":true}`, http.StatusForbidden))
			says(e.want("alice", "POST", repo+"/mirror/sync-now", nil, http.StatusForbidden))
			e.want("alice", "POST", repo+"/mirror/sync-cancel", nil, http.StatusNoContent)
		})
	}
}
