package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/wire"
)

// leakEnv is acme's robot-leak set-up: alice owns organization acme,
// whose robot acme+ci may read private acme/secret, which holds layer
// (D); bob administers private acme/app and acme/app2 only; root is a
// superuser. Bob's own registry (upstream) serves manifests naming D at
// bob/app and bob/other, and answers 404 for D's bytes (layerGets counts
// the requests). svc syncs with the registry's authorizer.
type leakEnv struct {
	*orgEnv
	layer     digest.Digest
	upstream  string
	layerGets atomic.Int64
	svc       *mirror.MirrorService
}

func newLeakEnv(t *testing.T, dialect string) *leakEnv {
	t.Helper()
	e := &leakEnv{orgEnv: newOrgEnvWith(t, testenv.Options{Dialect: dialect, API: api.Options{Mirrors: fakeMirrors{}}})}
	e.user("alice", false)
	e.user("bob", false)
	e.user("root", true)
	e.createOrg("alice", "acme")
	e.env.Robot("acme", "ci")
	for _, repo := range []string{"secret", "app", "app2"} {
		e.expect("alice", "POST", "/api/v1/repository", `{"namespace":"acme","repository":"`+repo+`","visibility":"private"}`, http.StatusCreated)
	}
	e.expect("alice", "PUT", "/api/v1/repository/acme/secret/permissions/user/acme+ci", `{"role":"read"}`, http.StatusOK)
	e.expect("alice", "PUT", "/api/v1/repository/acme/app/permissions/user/bob", `{"role":"admin"}`, http.StatusOK)
	e.expect("alice", "PUT", "/api/v1/repository/acme/app2/permissions/user/bob", `{"role":"admin"}`, http.StatusOK)

	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	lh, _ := layers[0].Digest()
	e.layer = digest.Digest(lh.String())
	secret, _ := name.ParseReference(e.env.Host+"/acme/secret:1", name.Insecure)
	if err := remote.Write(secret, img, remote.WithAuth(&authn.Basic{Username: "alice", Password: e.env.Secret("alice")})); err != nil {
		t.Fatal(err)
	}

	// Bob's registry names D, and has not its bytes.
	var hide atomic.Bool
	up := ggcrregistry.New(ggcrregistry.Logger(stdlog.New(io.Discard, "", 0)))
	evil := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hide.Load() && strings.Contains(r.URL.Path, "/blobs/"+e.layer.String()) {
			e.layerGets.Add(1)
			http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
			return
		}
		up.ServeHTTP(w, r)
	}))
	t.Cleanup(evil.Close)
	e.upstream = strings.TrimPrefix(evil.URL, "https://")
	for _, path := range []string{"/bob/app:1", "/bob/other:1"} {
		src, _ := name.ParseReference(e.upstream + path)
		if err := remote.Write(src, img, remote.WithTransport(evil.Client().Transport)); err != nil {
			t.Fatal(err)
		}
	}
	hide.Store(true)

	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	copier := mirror.NewCopier(wire.CopierStores(e.db), e.env.Storage, policy, 0, log)
	sealer, err := auth.NewSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	e.svc = mirror.NewMirrorService(wire.MirrorStores(e.db), copier, sealer, mirror.MirrorOptions{Transport: evil.Client().Transport,
		Tries: 1, RetryBase: time.Millisecond, Logger: log, Auth: e.az})
	return e
}

// sync syncs repo's mirror, requiring the status want.
func (e *leakEnv) sync(repo, want string) {
	e.t.Helper()
	ctx := context.Background()
	if err := e.svc.Sync(ctx, repo); err != nil {
		e.t.Fatal(err)
	}
	m, err := e.db.Mirrors().GetMirror(ctx, repo)
	if err != nil || m.Status != want {
		e.t.Fatalf("sync of %s: status %s (%s) %v, want %s", repo, m.Status, m.LastError, err, want)
	}
}

// mirrorBody is a POST body mirroring ref's tag 1 as acme+ci.
func (e *leakEnv) mirrorBody(ref string) string {
	b, _ := json.Marshal(map[string]any{"external_reference": ref, "sync_interval": 3600,
		"sync_start_date": time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05Z"),
		"root_rule":       map[string]any{"rule_kind": "tag_glob_csv", "rule_value": []string{"1"}}, "robot_username": "acme+ci"})
	return string(b)
}

// notLinked requires that the last sync of repo asked the upstream for D
// (more than gets requests in all) and that repo does not link it.
func (e *leakEnv) notLinked(repo string, gets int64) {
	e.t.Helper()
	if n := e.layerGets.Load(); n <= gets {
		e.t.Fatalf("the sync of %s did not ask the upstream for D (%d requests in all): it linked it", repo, n)
	}
	if _, err := e.db.Blobs().RepositoryBlob(context.Background(), repo, e.layer); !errors.Is(err, meta.ErrBlobNotFound) {
		e.t.Fatalf("after the sync, %s links acme/secret's layer (%v)", repo, err)
	}
	if res, _ := e.env.Do("bob", http.MethodGet, "/v2/"+repo+"/blobs/"+e.layer.String(), nil); res.StatusCode != http.StatusNotFound {
		e.t.Fatalf("bob's GET of D from %s: %d, want 404", repo, res.StatusCode)
	}
}

// linked requires that the last sync of repo did not ask the upstream
// for D (gets requests in all before it) and that bob may pull D from
// repo.
func (e *leakEnv) linked(repo string, gets int64) {
	e.t.Helper()
	if n := e.layerGets.Load(); n != gets {
		e.t.Fatalf("the sync of %s asked the upstream for D %d times, want it linked", repo, n-gets)
	}
	if res, _ := e.env.Do("bob", http.MethodGet, "/v2/"+repo+"/blobs/"+e.layer.String(), nil); res.StatusCode != http.StatusOK {
		e.t.Fatalf("bob's GET of D from %s after its sync linked it: %d, want 200", repo, res.StatusCode)
	}
}

// put PUTs body to repo's mirror as user, requiring 201.
func (e *leakEnv) put(user, repo, body string) {
	e.t.Helper()
	if res, b := e.env.Do(user, http.MethodPut, "/api/v1/repository/"+repo+"/mirror", []byte(body),
		"Content-Type", "application/json"); res.StatusCode != http.StatusCreated {
		e.t.Fatalf("%s's PUT of %s's mirror (%s): %d %s", user, repo, body, res.StatusCode, b)
	}
}

// configuredBy is the ID of the account repo's mirror records as its
// configurer.
func (e *leakEnv) configuredBy(repo string) int64 {
	e.t.Helper()
	m, err := e.db.Mirrors().GetMirror(context.Background(), repo)
	if err != nil {
		e.t.Fatal(err)
	}
	return m.ConfiguredBy
}

// TestMirrorLinksOnlyWhatItsConfigurerMayRead: a repository admin cannot
// borrow a robot's pull rights through a mirror. A mirror bob configures
// as acme+ci, or one whose upstream he points at his registry after alice
// (an owner of acme) configured it, asks the upstream for D and links
// nothing: the sync fails and bob cannot pull D from his repository.
// Once alice changes what acme/app's mirror syncs (its tag filter), its
// sync links D from acme/secret without downloading it.
func TestMirrorLinksOnlyWhatItsConfigurerMayRead(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newLeakEnv(t, dialect)

			// Bob configures acme/app's mirror as acme+ci.
			e.expect("bob", "POST", "/api/v1/repository/acme/app/mirror", e.mirrorBody(e.upstream+"/bob/app"), http.StatusCreated)
			e.sync("acme/app", meta.MirrorFail)
			e.notLinked("acme/app", 0)

			// Alice configures acme/app2's mirror; bob points it at his
			// registry.
			e.expect("alice", "POST", "/api/v1/repository/acme/app2/mirror", e.mirrorBody("registry.example:5000/library/alpine"), http.StatusCreated)
			e.put("bob", "acme/app2", `{"external_reference":"`+e.upstream+`/bob/app"}`)
			gets := e.layerGets.Load()
			e.sync("acme/app2", meta.MirrorFail)
			e.notLinked("acme/app2", gets)

			// Alice, who may read acme/secret, changes acme/app's tag
			// filter: she configured what it syncs, and D is linked, not
			// asked for.
			// (Its last_error names D: the env's own check would refuse
			// the answer for its digest.)
			e.put("alice", "acme/app", `{"root_rule":{"rule_kind":"tag_glob_csv","rule_value":["1","2"]}}`)
			gets = e.layerGets.Load()
			e.sync("acme/app", meta.MirrorSuccess)
			e.linked("acme/app", gets)
		})
	}
}

// TestMirrorRoutinePutKeepsConfigurer: a PUT that changes nothing of
// what a mirror syncs or from where (its interval, is_enabled, or a GET's
// answer sent back with a new interval, as Quay's UI does) leaves the
// mirror's configurer as it was, whoever sends it. Bob's mirror of his
// registry as acme+ci, so updated by the superuser root, still links
// nothing of acme/secret's; root's PUT of another external_reference
// makes root its configurer, and D is linked.
func TestMirrorRoutinePutKeepsConfigurer(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newLeakEnv(t, dialect)
			bob, err := e.db.Users().UserByName(context.Background(), "bob")
			if err != nil {
				t.Fatal(err)
			}
			root, err := e.db.Users().UserByName(context.Background(), "root")
			if err != nil {
				t.Fatal(err)
			}
			e.expect("bob", "POST", "/api/v1/repository/acme/app/mirror", e.mirrorBody(e.upstream+"/bob/app"), http.StatusCreated)

			e.put("root", "acme/app", `{"sync_interval":600}`)
			e.put("root", "acme/app", `{"is_enabled":false}`)
			e.put("root", "acme/app", `{"is_enabled":true}`)
			var view map[string]any
			if err := json.Unmarshal(e.expect("root", "GET", "/api/v1/repository/acme/app/mirror", "", http.StatusOK).body, &view); err != nil {
				t.Fatal(err)
			}
			view["sync_interval"] = 900
			full, _ := json.Marshal(view)
			e.put("root", "acme/app", string(full))
			e.sync("acme/app", meta.MirrorFail)
			e.notLinked("acme/app", 0)
			if by := e.configuredBy("acme/app"); by != bob.ID {
				t.Fatalf("after root's PUTs of the interval and is_enabled, acme/app's mirror is configured by %d, want bob (%d)", by, bob.ID)
			}

			// Root points the mirror elsewhere: root answers for it now.
			e.put("root", "acme/app", `{"external_reference":"`+e.upstream+`/bob/other"}`)
			if by := e.configuredBy("acme/app"); by != root.ID {
				t.Fatalf("after root's PUT of external_reference, acme/app's mirror is configured by %d, want root (%d)", by, root.ID)
			}
			gets := e.layerGets.Load()
			e.sync("acme/app", meta.MirrorSuccess)
			e.linked("acme/app", gets)
		})
	}
}
