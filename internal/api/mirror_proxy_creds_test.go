package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
)

// TestMirrorProxyWithoutSchemeRefused: a proxy URL in http_proxy syntax
// without a scheme ("user:pass@proxy:3128") parses as scheme "user" with
// opaque text and no userinfo. It is refused with 400, as any proxy that
// is not scheme://host[:port] (http, https, socks5) is, and nothing is
// stored: the password is never shown by GET, and no sync tries a proxy
// it cannot dial.
func TestMirrorProxyWithoutSchemeRefused(t *testing.T) {
	e := newOrgEnvWith(t, testenv.Options{API: api.Options{Mirrors: fakeMirrors{}}})
	e.user("alice", false)
	e.createOrg("alice", "acme")
	e.createRobot("alice", "/api/v1/organization/acme", "mirror", "")
	e.expect("alice", "POST", "/api/v1/repository", `{"namespace":"acme","repository":"app","visibility":"private"}`, http.StatusCreated)
	const path = "/api/v1/repository/acme/app/mirror"
	e.expect("alice", "POST", path, `{"external_reference":"registry.example:5000/library/alpine","sync_interval":3600,
		"root_rule":{"rule_kind":"tag_glob_csv","rule_value":["latest"]},"robot_username":"acme+mirror",
		"external_registry_config":{"proxy":{"https_proxy":"http://proxy.example:3128"}}}`, http.StatusCreated)
	for _, p := range []string{"user:pass@proxy:3128", "proxy:3128", "ftp://proxy:3128", "http:///nohost"} {
		r := e.expect("alice", "PUT", path, `{"external_registry_config":{"proxy":{"https_proxy":"`+p+`"}}}`, http.StatusBadRequest)
		if !strings.Contains(string(r.body), "https_proxy") {
			t.Fatalf("the refusal of https_proxy %q does not name the field: %s", p, r.body)
		}
		m, err := e.db.Mirrors().GetMirror(context.Background(), "acme/app")
		if err != nil {
			t.Fatal(err)
		}
		if m.Proxy != (meta.MirrorProxy{HTTPSProxy: "http://proxy.example:3128"}) {
			t.Fatalf("after the refused https_proxy %q the mirror's proxy is %+v", p, m.Proxy)
		}
		if got := e.expect("alice", "GET", path, "", http.StatusOK); strings.Contains(string(got.body), "pass") {
			t.Fatalf("GET shows the proxy password: %s", got.body)
		}
	}
	// The same refusal on create.
	e.expect("alice", "POST", "/api/v1/repository", `{"namespace":"acme","repository":"app2","visibility":"private"}`, http.StatusCreated)
	e.expect("alice", "POST", "/api/v1/repository/acme/app2/mirror", `{"external_reference":"registry.example:5000/library/alpine","sync_interval":3600,
		"root_rule":{"rule_kind":"tag_glob_csv","rule_value":["latest"]},"robot_username":"acme+mirror",
		"external_registry_config":{"proxy":{"http_proxy":"user:pass@proxy:3128"}}}`, http.StatusBadRequest)
	e.expect("alice", "GET", "/api/v1/repository/acme/app2/mirror", "", http.StatusNotFound)
	// A proxy of each scheme a sync dials is taken.
	for _, p := range []string{"http://proxy:3128", "https://proxy.example", "socks5://proxy:1080"} {
		e.expect("alice", "PUT", path, `{"external_registry_config":{"proxy":{"https_proxy":"`+p+`"}}}`, http.StatusCreated)
	}
}
