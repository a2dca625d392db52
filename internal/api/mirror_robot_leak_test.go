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

// TestMirrorLinksOnlyWhatItsConfigurerMayRead: a repository admin cannot
// borrow a robot's pull rights through a mirror. Bob administers
// acme/app and acme/app2 only; the organization's robot acme+ci may read
// private acme/secret, which holds layer D. Bob's own registry serves a
// manifest naming D without its bytes. A mirror Bob configures as
// acme+ci, or one whose upstream he points at his registry after alice
// (an owner of acme) configured it, asks the upstream for D and links
// nothing: the sync fails and Bob cannot pull D from his repository.
// Once alice configures the mirror of acme/app, its sync links D from
// acme/secret without downloading it.
func TestMirrorLinksOnlyWhatItsConfigurerMayRead(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newOrgEnvWith(t, testenv.Options{Dialect: dialect, API: api.Options{Mirrors: fakeMirrors{}}})
			e.user("alice", false)
			e.user("bob", false)
			e.createOrg("alice", "acme")
			e.env.Robot("acme", "ci")
			ctx := context.Background()
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
			layer := digest.Digest(lh.String())
			secret, _ := name.ParseReference(e.env.Host+"/acme/secret:1", name.Insecure)
			if err := remote.Write(secret, img, remote.WithAuth(&authn.Basic{Username: "alice", Password: e.env.Secret("alice")})); err != nil {
				t.Fatal(err)
			}

			// Bob's registry names D, and has not its bytes.
			var hide atomic.Bool
			var layerGets atomic.Int64
			up := ggcrregistry.New(ggcrregistry.Logger(stdlog.New(io.Discard, "", 0)))
			evil := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if hide.Load() && strings.Contains(r.URL.Path, "/blobs/"+layer.String()) {
					layerGets.Add(1)
					http.Error(w, `{"errors":[{"code":"BLOB_UNKNOWN"}]}`, http.StatusNotFound)
					return
				}
				up.ServeHTTP(w, r)
			}))
			t.Cleanup(evil.Close)
			upstream := strings.TrimPrefix(evil.URL, "https://")
			src, _ := name.ParseReference(upstream + "/bob/app:1")
			if err := remote.Write(src, img, remote.WithTransport(evil.Client().Transport)); err != nil {
				t.Fatal(err)
			}
			hide.Store(true)

			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
			copier := mirror.NewCopier(wire.CopierStores(e.db), e.env.Storage, policy, 0, log)
			sealer, err := auth.NewSealer(make([]byte, 32))
			if err != nil {
				t.Fatal(err)
			}
			svc := mirror.NewMirrorService(wire.MirrorStores(e.db), copier, sealer, mirror.MirrorOptions{Transport: evil.Client().Transport,
				Tries: 1, RetryBase: time.Millisecond, Logger: log, Auth: e.az})
			sync := func(repo, want string) {
				t.Helper()
				if err := svc.Sync(ctx, repo); err != nil {
					t.Fatal(err)
				}
				m, err := e.db.Mirrors().GetMirror(ctx, repo)
				if err != nil || m.Status != want {
					t.Fatalf("sync of %s: status %s (%s) %v, want %s", repo, m.Status, m.LastError, err, want)
				}
			}
			mirrorBody := func(ref string) string {
				b, _ := json.Marshal(map[string]any{"external_reference": ref, "sync_interval": 3600,
					"sync_start_date": time.Now().Add(time.Hour).UTC().Format("2006-01-02T15:04:05Z"),
					"root_rule":       map[string]any{"rule_kind": "tag_glob_csv", "rule_value": []string{"1"}}, "robot_username": "acme+ci"})
				return string(b)
			}
			notLinked := func(repo string, gets int64) {
				t.Helper()
				if n := layerGets.Load(); n <= gets {
					t.Fatalf("the sync of %s did not ask the upstream for D (%d requests in all): it linked it", repo, n)
				}
				if _, err := e.db.Blobs().RepositoryBlob(ctx, repo, layer); !errors.Is(err, meta.ErrBlobNotFound) {
					t.Fatalf("after the sync, %s links acme/secret's layer (%v)", repo, err)
				}
				if res, _ := e.env.Do("bob", http.MethodGet, "/v2/"+repo+"/blobs/"+layer.String(), nil); res.StatusCode != http.StatusNotFound {
					t.Fatalf("bob's GET of D from %s: %d, want 404", repo, res.StatusCode)
				}
			}

			// Bob configures acme/app's mirror as acme+ci.
			e.expect("bob", "POST", "/api/v1/repository/acme/app/mirror", mirrorBody(upstream+"/bob/app"), http.StatusCreated)
			sync("acme/app", meta.MirrorFail)
			notLinked("acme/app", 0)

			// Alice configures acme/app2's mirror; bob points it at his
			// registry.
			e.expect("alice", "POST", "/api/v1/repository/acme/app2/mirror", mirrorBody("registry.example:5000/library/alpine"), http.StatusCreated)
			e.expect("bob", "PUT", "/api/v1/repository/acme/app2/mirror", `{"external_reference":"`+upstream+`/bob/app"}`, http.StatusCreated)
			gets := layerGets.Load()
			sync("acme/app2", meta.MirrorFail)
			notLinked("acme/app2", gets)

			// Alice, who may read acme/secret, configures acme/app's
			// mirror: D is linked, not asked for.
			// (Its last_error names D: the env's own check would refuse
			// the answer for its digest.)
			if res, body := e.env.Do("alice", http.MethodPut, "/api/v1/repository/acme/app/mirror", []byte(`{"sync_interval": 7200}`),
				"Content-Type", "application/json"); res.StatusCode != http.StatusCreated {
				t.Fatalf("alice's PUT of acme/app's mirror: %d %s", res.StatusCode, body)
			}
			gets = layerGets.Load()
			sync("acme/app", meta.MirrorSuccess)
			if n := layerGets.Load(); n != gets {
				t.Fatalf("the sync of the mirror alice configured asked the upstream for D %d times, want it linked", n-gets)
			}
			if res, _ := e.env.Do("bob", http.MethodGet, "/v2/acme/app/blobs/"+layer.String(), nil); res.StatusCode != http.StatusOK {
				t.Fatalf("bob's GET of D from acme/app after alice's mirror linked it: %d, want 200", res.StatusCode)
			}
		})
	}
}
