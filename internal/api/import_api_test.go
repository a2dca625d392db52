package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	stdlog "log"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/wire"
)

// copierImporter is the server's importer over the test's store: the real
// copier, reaching the upstream through a transport that trusts its test
// certificate. calls counts the imports it ran; timeout is the last
// one's Timeout.
type copierImporter struct {
	copier    *mirror.Copier
	transport http.RoundTripper
	calls     atomic.Int64
	timeout   atomic.Int64
}

func (i *copierImporter) Import(ctx context.Context, req mirror.ImportRequest) (string, mirror.Stats, error) {
	i.calls.Add(1)
	i.timeout.Store(int64(req.Timeout))
	req.Transport = i.transport
	d, st, err := i.copier.Import(ctx, req)
	return d.String(), st, err
}

// importEnv is an API with imports enabled, alice owning organizations
// acme and hub, and an HTTPS upstream holding library/nginx:latest.
type importEnv struct {
	*orgEnv
	imp      *copierImporter
	upstream string
}

func newImportEnv(t *testing.T) *importEnv {
	t.Helper()
	return newImportEnvWith(t, testenv.Options{})
}

// newImportEnvWith is an importEnv made with opts (whose API.Importer it
// sets).
func newImportEnvWith(t *testing.T, opts testenv.Options) *importEnv {
	t.Helper()
	imp := &copierImporter{}
	opts.API.Importer = imp
	e := newOrgEnvWith(t, opts)
	e.user("alice", false)
	up := httptest.NewTLSServer(ggcrregistry.New(ggcrregistry.Logger(stdlog.New(io.Discard, "", 0))))
	t.Cleanup(up.Close)
	imp.transport = up.Client().Transport
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	imp.copier = mirror.NewCopier(wire.CopierStores(e.db), e.env.Storage, policy, 0, nil)
	ie := &importEnv{orgEnv: e, imp: imp, upstream: strings.TrimPrefix(up.URL, "https://")}
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	ref, _ := name.ParseReference(ie.upstream + "/library/nginx:latest")
	if err := remote.Write(ref, img, remote.WithTransport(imp.transport)); err != nil {
		t.Fatal(err)
	}
	e.createOrg("alice", "acme")
	e.createOrg("alice", "hub")
	return ie
}

// importAs posts an import as user and returns the status and the answer.
func (e *importEnv) importAs(user, repo, mode string, tags ...string) (int, map[string]any) {
	e.t.Helper()
	b, _ := json.Marshal(map[string]any{"source": e.upstream + "/library/nginx:latest", "repository": repo, "tags": tags, "mode": mode})
	req, _ := http.NewRequest(http.MethodPost, e.url+"/api/v1/import", strings.NewReader(string(b)))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth(user, e.env.Secret(user))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	json.NewDecoder(res.Body).Decode(&out)
	return res.StatusCode, out
}

// TestImportIntoProxyCacheOrgRefused: an import into a proxy cache
// organization is refused as a /v2 push there is: it would serve every
// puller of hub/library/nginx:latest the importer's image. Nothing is
// fetched and no repository is created.
func TestImportIntoProxyCacheOrgRefused(t *testing.T) {
	e := newImportEnv(t)
	ctx := context.Background()
	if err := e.db.ProxyCaches().SetProxyCache(ctx, meta.ProxyCache{Namespace: "hub", Upstream: "registry-1.docker.io", ExpirationS: 86400}); err != nil {
		t.Fatal(err)
	}
	st, out := e.importAs("alice", "hub/library/nginx", "Force", "latest")
	if msg, _ := out["error_message"].(string); st != http.StatusForbidden || !strings.Contains(msg, "proxy cache") {
		t.Fatalf("import into a proxy cache organization: %d %v, want 403 naming the proxy cache", st, out)
	}
	if n := e.imp.calls.Load(); n != 0 {
		t.Fatalf("the importer ran %d times", n)
	}
	if ri, err := e.db.Repositories().Repository(ctx, "hub/library/nginx"); err != nil || ri.Exists {
		t.Fatalf("the refused import left repository %+v (%v)", ri, err)
	}
	// Elsewhere the same import works.
	if st, out := e.importAs("alice", "acme/nginx", "Force", "latest"); st != http.StatusCreated {
		t.Fatalf("import into acme: %d %v", st, out)
	}
}

// TestForceImportOntoImmutableTag: Force does not move a tag an
// immutability policy covers: the answer is 403 with the policy's
// message, not a 502 blaming the upstream, and the tag stays.
func TestForceImportOntoImmutableTag(t *testing.T) {
	e := newImportEnv(t)
	ctx := context.Background()
	if st, out := e.importAs("alice", "acme/nginx", "NoForce", "1.0"); st != http.StatusCreated {
		t.Fatalf("first import: %d %v", st, out)
	}
	before, err := e.db.Manifests().GetManifest(ctx, "acme/nginx", "1.0", "", false)
	if err != nil {
		t.Fatal(err)
	}
	e.expect("alice", "POST", "/api/v1/organization/acme/immutabilitypolicy/", `{"tagPattern":"^1\\.0$","tagPatternMatches":true}`, http.StatusCreated)
	// Another image upstream, imported over the immutable tag.
	img, _ := random.Image(256, 1)
	ref, _ := name.ParseReference(e.upstream + "/library/nginx:latest")
	if err := remote.Write(ref, img, remote.WithTransport(e.imp.transport)); err != nil {
		t.Fatal(err)
	}
	st, out := e.importAs("alice", "acme/nginx", "Force", "1.0")
	if msg, _ := out["error_message"].(string); st != http.StatusForbidden || !strings.Contains(msg, "immutable") {
		t.Fatalf("Force import onto an immutable tag: %d %v, want 403 saying the tag is immutable", st, out)
	}
	after, err := e.db.Manifests().GetManifest(ctx, "acme/nginx", "1.0", "", false)
	if err != nil || after.Digest != before.Digest {
		t.Fatalf("the immutable tag moved: %s -> %s (%v)", before.Digest, after.Digest, err)
	}
}

// TestRefusedImportCreatesNothing: an import refused for its source or its
// tags creates neither the repository nor the organization a push would
// have created for it.
func TestRefusedImportCreatesNothing(t *testing.T) {
	e := newImportEnvWith(t, testenv.Options{Authz: authz.Options{CreateNamespaceOnPush: true}})
	ctx := context.Background()
	for _, c := range []struct {
		name, body, says string
	}{
		{"bad source", `{"source":"::bad","repository":"newns/app"}`, "source"},
		{"bad tag", `{"source":"` + e.upstream + `/library/nginx:latest","repository":"newns/app","tags":["no good"]}`, "tag"},
	} {
		r := e.expect("alice", "POST", "/api/v1/import", c.body, http.StatusBadRequest)
		if !strings.Contains(string(r.body), c.says) {
			t.Fatalf("%s: the refusal does not name the %s: %s", c.name, c.says, r.body)
		}
		if ri, err := e.db.Repositories().Repository(ctx, "newns/app"); err != nil || ri.Exists {
			t.Fatalf("%s: the refused import left repository newns/app (%v)", c.name, err)
		}
		if _, err := e.db.Users().NamespaceByName(ctx, "newns"); !errors.Is(err, meta.ErrNamespaceNotFound) {
			t.Fatalf("%s: the refused import left namespace newns (%v)", c.name, err)
		}
	}
	// The same import, valid, creates both.
	if st, out := e.importAs("alice", "newns/app", "NoForce", "latest"); st != http.StatusCreated {
		t.Fatalf("valid import into a new namespace: %d %v", st, out)
	}
}

// TestFailedImportRemovesTheRepositoryItMade: an import that fails
// upstream (its source tag does not exist) answers 502 and leaves no
// repository behind where it made one for the copy; a repository that
// existed before stays.
func TestFailedImportRemovesTheRepositoryItMade(t *testing.T) {
	e := newImportEnv(t)
	ctx := context.Background()
	body := `{"source":"` + e.upstream + `/library/nginx:missing","repository":"%s"}`
	r := e.expect("alice", "POST", "/api/v1/import", strings.Replace(body, "%s", "acme/fresh", 1), http.StatusBadGateway)
	if !strings.Contains(string(r.body), "upstream_error") {
		t.Fatalf("the failed import's answer: %s", r.body)
	}
	if ri, err := e.db.Repositories().Repository(ctx, "acme/fresh"); err != nil || ri.Exists {
		t.Fatalf("the failed import left repository acme/fresh (%v)", err)
	}
	if st, out := e.importAs("alice", "acme/kept", "NoForce", "latest"); st != http.StatusCreated {
		t.Fatalf("import into acme/kept: %d %v", st, out)
	}
	e.expect("alice", "POST", "/api/v1/import", strings.Replace(body, "%s", "acme/kept", 1), http.StatusBadGateway)
	if ri, err := e.db.Repositories().Repository(ctx, "acme/kept"); err != nil || !ri.Exists {
		t.Fatalf("a failed import into existing acme/kept removed it (%v)", err)
	}
}
