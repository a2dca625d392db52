package mirror_test

import (
	"context"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// authRecorder is an upstream registry that records the Authorization
// header of every request it gets (and asks for Basic credentials, which
// it accepts whatever they are).
type authRecorder struct {
	mu   sync.Mutex
	seen []string
}

func (a *authRecorder) handler() http.Handler {
	reg := ggcrregistry.New(ggcrregistry.Logger(stdlog.New(io.Discard, "", 0)))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := r.Header.Get("Authorization")
		a.mu.Lock()
		a.seen = append(a.seen, h)
		a.mu.Unlock()
		if h == "" {
			w.Header().Set("WWW-Authenticate", `Basic realm="upstream"`)
			http.Error(w, "auth", http.StatusUnauthorized)
			return
		}
		reg.ServeHTTP(w, r)
	})
}

// credentials are the Basic credentials the upstream saw, decoded.
func (a *authRecorder) credentials() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []string
	for _, h := range a.seen {
		r := http.Request{Header: http.Header{"Authorization": {h}}}
		if u, p, ok := r.BasicAuth(); ok {
			out = append(out, u+":"+p)
		}
	}
	return out
}

func (a *authRecorder) requests() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.seen)
}

// waitSyncEnd waits until the mirror is neither due at once nor syncing.
func (f *mfix) waitSyncEnd(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for st := f.status(t); st.Status == meta.MirrorSyncNow || st.Status == meta.MirrorSyncing; st = f.status(t) {
		if time.Now().After(deadline) {
			t.Fatal("the sync did not end")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestMirrorUpstreamChangeNeedsCredentials: a repository admin who points
// a mirror at another registry host (or another proxy, or turns TLS
// verification off) without giving the credentials again is refused: the
// stored password would otherwise go to the new upstream at the next
// sync. Given again, it is the new password that the new upstream sees.
// A proxy URL takes no credentials, and one stored before is shown
// without them.
func TestMirrorUpstreamChangeNeedsCredentials(t *testing.T) {
	f := newMirrorFixture(t)
	f.push(t, "1.0", randomImage(t))
	other := &authRecorder{}
	o := httptest.NewTLSServer(other.handler()) // trusted by the fixture's transport: one test certificate
	t.Cleanup(o.Close)
	otherHost := strings.TrimPrefix(o.URL, "https://")
	srv := httptest.NewServer(api.New(wire.APIStores(f.db, 0), api.Open{}, api.Options{Mirrors: f.svc}))
	t.Cleanup(srv.Close)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); f.svc.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	path := "/api/v1/repository/" + mrepo + "/mirror"
	if code, out := apiCall(t, srv, http.MethodPost, path, map[string]any{
		"external_reference": f.upstream + "/lib/app", "external_registry_username": "up", "external_registry_password": "secret",
		"sync_interval": 3600, "sync_start_date": time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05Z"),
		"root_rule": map[string]any{"rule_kind": "tag_glob_csv", "rule_value": []string{"*"}}, "robot_username": "acme+mirror",
	}); code != http.StatusCreated {
		t.Fatalf("create: %d %v", code, out)
	}
	for _, change := range []map[string]any{
		{"external_reference": otherHost + "/lib/app"},
		{"external_registry_config": map[string]any{"verify_tls": false}},
		{"external_registry_config": map[string]any{"proxy": map[string]any{"https_proxy": "http://proxy.example:3128"}}},
	} {
		code, out := apiCall(t, srv, http.MethodPut, path, change)
		if msg, _ := out["error_message"].(string); code != http.StatusBadRequest || !strings.Contains(msg, "give the upstream credentials again") {
			t.Errorf("PUT %v without the password: %d %v, want 400", change, code, out)
		}
	}
	// What a sync-now then does: the stored mirror is unchanged, and the
	// other upstream hears nothing.
	if code, _ := apiCall(t, srv, http.MethodPost, path+"/sync-now", nil); code != http.StatusNoContent {
		t.Fatalf("sync-now: %d", code)
	}
	f.waitSyncEnd(t)
	if n := other.requests(); n != 0 {
		t.Fatalf("the other upstream got %d requests, credentials %v", n, other.credentials())
	}
	// Unchanged upstream: no credentials needed.
	if code, out := apiCall(t, srv, http.MethodPut, path, map[string]any{"external_reference": f.upstream + "/lib/other", "sync_interval": 7200}); code != http.StatusCreated {
		t.Fatalf("PUT on the same host: %d %v", code, out)
	}
	// Credentials in a proxy URL are refused.
	if code, out := apiCall(t, srv, http.MethodPut, path, map[string]any{"external_registry_password": "x",
		"external_registry_config": map[string]any{"proxy": map[string]any{"http_proxy": "http://u:proxysecret@proxy.example:3128"}}}); code != http.StatusBadRequest {
		t.Fatalf("PUT a proxy with credentials: %d %v", code, out)
	}
	// A new upstream with its own credentials: only those reach it.
	if code, out := apiCall(t, srv, http.MethodPut, path, map[string]any{"external_reference": otherHost + "/lib/app",
		"external_registry_username": "up2", "external_registry_password": "other"}); code != http.StatusCreated || out["external_reference"] != otherHost+"/lib/app" {
		t.Fatalf("PUT with credentials: %d %v", code, out)
	}
	if code, _ := apiCall(t, srv, http.MethodPost, path+"/sync-now", nil); code != http.StatusNoContent {
		t.Fatalf("sync-now: %d", code)
	}
	f.waitSyncEnd(t)
	creds := other.credentials()
	if len(creds) == 0 {
		t.Fatal("the new upstream got no credentials")
	}
	for _, c := range creds {
		if c != "up2:other" {
			t.Fatalf("the new upstream got credentials %q", c)
		}
	}
	// A proxy stored with credentials (before they were refused) is shown
	// without them (apiCall fails on any answer with "secret").
	m := f.status(t)
	m.Proxy.HTTPProxy = "http://u:proxysecret@proxy.example:3128"
	if err := f.db.Mirrors().UpdateMirror(context.Background(), m, false); err != nil {
		t.Fatal(err)
	}
	if code, out := apiCall(t, srv, http.MethodGet, path, nil); code != http.StatusOK {
		t.Fatalf("GET: %d %v", code, out)
	}
}

// TestMirrorVerifyTLSIsHTTPSOnly: with verify_tls, a mirror of an upstream
// that answers only plain HTTP fails, even on a loopback address (where
// go-containerregistry tries plain HTTP by itself), and the credentials
// never travel in clear text; with verify_tls false it syncs over plain
// HTTP, as it always did.
func TestMirrorVerifyTLSIsHTTPSOnly(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	plain := &authRecorder{}
	p := httptest.NewServer(plain.handler())
	t.Cleanup(p.Close)
	host := strings.TrimPrefix(p.URL, "http://")
	ref, _ := name.ParseReference(host+"/lib/app:1.0", name.Insecure)
	if err := remote.Write(ref, randomImage(t), upAuth); err != nil {
		t.Fatal(err)
	}
	before := len(plain.credentials())
	// A service as the server builds it: its own transport (no test
	// transport), dialling directly.
	driver, _ := fs.New(t.TempDir(), fs.Options{})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	copier := mirror.NewCopier(wire.CopierStores(f.db), driver, oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}, 0, log)
	svc := mirror.NewMirrorService(wire.MirrorStores(f.db), copier, f.sealer, mirror.MirrorOptions{Tries: 1, RetryBase: time.Millisecond, Logger: log})
	m := meta.Mirror{Repository: mrepo, Enabled: true, ExternalReference: host + "/lib/app", Username: "up",
		PasswordSealed: f.sealer.Seal([]byte("secret")), VerifyTLS: true, SyncInterval: time.Hour,
		SyncStartDate: time.Now().Add(time.Hour), RootRule: meta.MirrorRule{Kind: "tag_glob_csv", Value: []string{"*"}},
		RobotUsername: "acme+mirror"}
	if err := f.db.Mirrors().CreateMirror(ctx, m); err != nil {
		t.Fatal(err)
	}
	if err := svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	st := f.status(t)
	if st.Status != meta.MirrorFail || !strings.Contains(st.LastError, "plain HTTP") || !strings.Contains(st.LastError, "verify_tls") {
		t.Fatalf("sync over plain HTTP with verify_tls: %s %q, want FAIL saying plain HTTP is refused", st.Status, st.LastError)
	}
	t.Logf("last_error: %s", st.LastError)
	if creds := plain.credentials(); len(creds) != before || len(f.localTags(t)) != 0 {
		t.Fatalf("with verify_tls the credentials went over plain HTTP: %v; tags %v", creds[before:], f.localTags(t))
	}
	m = f.status(t)
	m.VerifyTLS = false
	if err := f.db.Mirrors().UpdateMirror(ctx, m, false); err != nil {
		t.Fatal(err)
	}
	if err := svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	if st := f.status(t); st.Status != meta.MirrorSuccess || f.localTags(t)["1.0"] == "" {
		t.Fatalf("sync over plain HTTP with verify_tls false: %s %q", st.Status, st.LastError)
	}
}
