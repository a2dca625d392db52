package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
)

// fakeProxy seals by prefixing and counts invalidations.
type fakeProxy struct{ invalidated atomic.Int32 }

func (*fakeProxy) SealPassword(pw string) string { return "sealed:" + strings.Repeat("*", len(pw)) }
func (*fakeProxy) ValidateUpstream(u string, _ bool) error {
	if strings.ContainsAny(u, " @") {
		return errors.New("bad upstream")
	}
	return nil
}
func (f *fakeProxy) Invalidate() { f.invalidated.Add(1) }

func newProxyOrgEnv(t *testing.T, p api.ProxyCaches) *orgEnv {
	t.Helper()
	e := newOrgEnvWith(t, testenv.Options{API: api.Options{ProxyCache: p}})
	e.user("alice", false)
	e.user("bob", false)
	return e
}

func TestProxyCacheAPI(t *testing.T) {
	fp := &fakeProxy{}
	e := newProxyOrgEnv(t, fp)
	e.expect("alice", "POST", "/api/v1/organization/", `{"name":"hub"}`, http.StatusCreated)
	const path = "/api/v1/organization/hub/proxycache"
	e.expect("alice", "GET", path, "", http.StatusNotFound)
	e.expect("bob", "POST", path, `{"upstream_registry":"docker.io"}`, http.StatusForbidden)
	e.expect("", "POST", path, `{"upstream_registry":"docker.io"}`, http.StatusUnauthorized)
	e.expect("alice", "POST", path, `{}`, http.StatusBadRequest)
	e.expect("alice", "POST", path, `{"upstream_registry":"bad host"}`, http.StatusBadRequest)
	e.expect("alice", "POST", path, `{"upstream_registry":"docker.io","expiration_s":0}`, http.StatusBadRequest)
	// Past a time.Duration's range it wrapped negative: every pull went upstream.
	e.expect("alice", "POST", path, `{"upstream_registry":"docker.io","expiration_s":9300000000}`, http.StatusBadRequest)
	e.expect("alice", "POST", path, `{"upstream_registry":"docker.io","upstream_registry_password":"x"}`, http.StatusBadRequest)
	e.expect("alice", "POST", "/api/v1/organization/nope/proxycache", `{"upstream_registry":"docker.io"}`, http.StatusNotFound)
	e.expect("alice", "POST", path, `{"upstream_registry":"registry.example:5000/library","upstream_registry_username":"u",
		"upstream_registry_password":"hunter2","insecure":true}`, http.StatusCreated)
	if fp.invalidated.Load() != 1 {
		t.Fatalf("invalidated %d times", fp.invalidated.Load())
	}
	// Quay's clients name the organization in the body too (org_name):
	// the path's is accepted, another refused.
	r0 := e.expect("alice", "POST", path, `{"org_name":"other","upstream_registry":"quay.io"}`, http.StatusBadRequest)
	if !strings.Contains(string(r0.body), "org_name") {
		t.Fatalf("the refusal does not name org_name: %s", r0.body)
	}
	e.expect("alice", "POST", path, `{"org_name":"hub","upstream_registry":"registry.example:5000/library","upstream_registry_username":"u",
		"upstream_registry_password":"hunter2","insecure":true}`, http.StatusCreated)
	pc, err := e.db.ProxyCaches().ProxyCacheOf(context.Background(), "hub")
	if err != nil || pc.PasswordSealed != "sealed:*******" || pc.ExpirationS != 86400 || !pc.Insecure {
		t.Fatalf("stored %+v, %v", pc, err)
	}
	r := e.expect("alice", "GET", path, "", http.StatusOK)
	var v map[string]any
	if err := json.Unmarshal(r.body, &v); err != nil || v["upstream_registry"] != "registry.example:5000/library" ||
		v["upstream_registry_username"] != "u" || v["expiration_s"] != 86400.0 || v["insecure"] != true {
		t.Fatalf("GET: %s", r.body)
	}
	if strings.Contains(string(r.body), "sealed") || strings.Contains(string(r.body), "password") {
		t.Fatalf("GET shows the password: %s", r.body)
	}
	e.expect("bob", "GET", path, "", http.StatusForbidden)
	e.expect("bob", "DELETE", path, "", http.StatusForbidden)
	e.expect("alice", "DELETE", path, "", http.StatusNoContent)
	e.expect("alice", "DELETE", path, "", http.StatusNotFound)
	if _, err := e.db.ProxyCaches().ProxyCacheOf(context.Background(), "hub"); !errors.Is(err, meta.ErrProxyCacheNotFound) {
		t.Fatalf("after delete: %v", err)
	}
}

func TestProxyCacheAPIDisabled(t *testing.T) {
	e := newProxyOrgEnv(t, nil)
	e.expect("alice", "POST", "/api/v1/organization/", `{"name":"hub"}`, http.StatusCreated)
	e.expect("alice", "POST", "/api/v1/organization/hub/proxycache", `{"upstream_registry":"docker.io"}`, http.StatusNotImplemented)
}
