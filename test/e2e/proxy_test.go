package e2e

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// startProxyServer starts berth in token mode, as startAuthServer does,
// with users admin, alice and bob, but lets it reach loopback upstreams
// (notifications.allowedHosts, which the proxy cache's SSRF guard obeys).
func startProxyServer(t *testing.T) *authServer {
	t.Helper()
	if os.Getenv("BERTH_E2E_REGISTRY") != "" {
		t.Skip("starts its own berth in token mode; skipped with BERTH_E2E_REGISTRY")
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &authServer{bin: filepath.Join(runDir, "berth"), dataDir: t.TempDir(), host: fmt.Sprintf("127.0.0.1:%d", port),
		logPath: filepath.Join(t.TempDir(), "berth.log"), secrets: map[string]string{}}
	s.admin = authIdentity{"superuser", "admin", s.newSecret(t, "admin's password", "admin-pw-")}
	s.alice = authIdentity{"user", "alice", s.newSecret(t, "alice's password", "alice-pw-")}
	s.bob = authIdentity{"user", "bob", s.newSecret(t, "bob's password", "bob-pw-")}
	s.runAdmin(t, s.admin.pass+"\n", "user", "create", "admin", "--password-stdin", "--superuser")
	s.runAdmin(t, s.alice.pass+"\n", "user", "create", "alice", "--password-stdin")
	s.runAdmin(t, s.bob.pass+"\n", "user", "create", "bob", "--password-stdin")
	logf, err := os.OpenFile(s.logPath, os.O_CREATE|os.O_APPEND|os.O_WRONLY, 0o600)
	if err != nil {
		t.Fatal(err)
	}
	s.cmd = exec.Command(s.bin, "serve", "--addr", s.host, "--data-dir", s.dataDir, "--log-level", "debug")
	s.cmd.Env = append(berthEnv(), `BERTH_NOTIFICATIONS_ALLOWED_HOSTS=["loopback"]`)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	s.done = make(chan struct{})
	go func() { s.cmd.Wait(); logf.Close(); close(s.done) }()
	t.Cleanup(func() { s.stop(); s.checkLog(t) })
	client := http.Client{Timeout: 5 * time.Second}
	for deadline := time.Now().Add(30 * time.Second); ; {
		if resp, err := client.Get("http://" + s.host + "/healthz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return s
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("berth not ready after 30s")
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestProxyCacheFromDistribution configures an organization as a proxy
// cache of one namespace of a real upstream (CNCF Distribution with Basic
// auth) and pulls an index and an image through it, checked by digest
// with crane.
func TestProxyCacheFromDistribution(t *testing.T) {
	begin(t)
	up := startDistribution(t, "up", "upstream-pw")
	upAuth := remote.WithAuth(&authn.Basic{Username: "up", Password: "upstream-pw"})
	idx, _ := random.Index(2048, 2, 2)
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	ref, _ := name.ParseReference(up+"/library/base:1", name.Insecure)
	if err := remote.WriteIndex(ref, idx, upAuth); err != nil {
		t.Fatal(err)
	}
	img, _ := random.Image(4096, 2)
	ref, _ = name.ParseReference(up+"/library/tools/app:2", name.Insecure)
	if err := remote.Write(ref, img, upAuth); err != nil {
		t.Fatal(err)
	}

	s := startProxyServer(t)
	s.secrets["the upstream password"] = "upstream-pw"
	s.quayAPI(t, http.MethodPost, "/api/v1/organization/", `{"name":"hubcache"}`, "create the proxy organization")
	s.quayAPI(t, http.MethodPost, "/api/v1/organization/hubcache/proxycache",
		`{"upstream_registry":"`+up+`/library","upstream_registry_username":"up","upstream_registry_password":"upstream-pw","insecure":true}`,
		"configure the proxy cache")
	r := s.do(t, &s.alice, http.MethodGet, "/api/v1/organization/hubcache/proxycache", nil, nil)
	var view map[string]any
	if r.Status != 200 || json.Unmarshal(r.Body, &view) != nil || view["upstream_registry"] != up+"/library" || view["expiration_s"] != 86400.0 {
		t.Fatalf("GET proxycache: %s", r)
	}
	if strings.Contains(string(r.Body), "upstream-pw") {
		t.Fatal("GET proxycache shows the upstream password")
	}
	if r := s.do(t, &s.bob, http.MethodGet, "/api/v1/organization/hubcache/proxycache", nil, nil); r.Status != 403 {
		t.Fatalf("GET proxycache as bob (not an admin): %s", r)
	}

	env, _ := clientEnv(t)
	mustRun(t, opts{Env: env, Stdin: []byte(s.alice.pass)}, "crane", "auth", "login", s.host, "-u", s.alice.user, "--password-stdin")
	crane := func(args ...string) string {
		return strings.TrimSpace(mustRun(t, opts{Env: env}, "crane", append(args, "--insecure")...))
	}
	want := digestOf(t, idx)
	if d := crane("digest", s.host+"/hubcache/base:1"); d != want {
		t.Fatalf("crane digest hubcache/base:1 = %s, want %s", d, want)
	}
	// Every platform, on demand, with its blobs.
	im, _ := idx.IndexManifest()
	for _, c := range im.Manifests {
		if d := crane("digest", s.host+"/hubcache/base@"+c.Digest.String()); d != c.Digest.String() {
			t.Fatalf("child %s: %s", c.Digest, d)
		}
		crane("pull", "--format", "oci", s.host+"/hubcache/base@"+c.Digest.String(), filepath.Join(t.TempDir(), "img"))
	}
	wantImg := digestOf(t, img)
	if d := crane("digest", s.host+"/hubcache/tools/app:2"); d != wantImg {
		t.Fatalf("crane digest hubcache/tools/app:2 = %s, want %s", d, wantImg)
	}
	crane("pull", s.host+"/hubcache/tools/app:2", filepath.Join(t.TempDir(), "app.tar"))
	// Cached: served by digest after the upstream deleted it.
	del, _ := name.ParseReference(up+"/library/tools/app@"+wantImg, name.Insecure)
	if err := remote.Delete(del, upAuth); err != nil {
		t.Fatal(err)
	}
	if d := crane("digest", s.host+"/hubcache/tools/app@"+wantImg); d != wantImg {
		t.Fatalf("after upstream delete: %s", d)
	}
	// Pushes are refused; bob, with no rights in the organization, may
	// not pull.
	dst, _ := name.ParseReference(s.host+"/hubcache/mine:1", name.Insecure)
	if err := remote.Write(dst, img, remote.WithAuth(&authn.Basic{Username: s.alice.user, Password: s.alice.pass})); err == nil {
		t.Fatal("push to a proxy organization succeeded")
	}
	src, _ := name.ParseReference(s.host+"/hubcache/base:1", name.Insecure)
	if _, err := remote.Get(src, remote.WithAuth(&authn.Basic{Username: s.bob.user, Password: s.bob.pass})); err == nil {
		t.Fatal("bob pulled from alice's proxy organization")
	}
}
