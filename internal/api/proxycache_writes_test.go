package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/api"
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
