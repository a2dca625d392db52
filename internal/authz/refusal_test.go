package authz_test

import (
	"context"
	"encoding/json"
	"errors"
	"github.com/berth-dev/berth/internal/wire"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
)

const missingNS = "namespace quickstart does not exist (create it, or enable CREATE_NAMESPACE_ON_PUSH)"

// answer is one raw HTTP exchange.
type answer struct {
	status int
	header http.Header
	body   string
}

// specError is the first error of a spec error body.
func (a answer) specError() (code, message string) {
	var b struct {
		Errors []struct{ Code, Message string }
	}
	json.Unmarshal([]byte(a.body), &b)
	if len(b.Errors) == 0 {
		return "", ""
	}
	return b.Errors[0].Code, b.Errors[0].Message
}

func (e *env) raw(method, path, authorization string) answer {
	e.t.Helper()
	req, _ := http.NewRequest(method, e.url+path, nil)
	if authorization != "" {
		req.Header.Set("Authorization", authorization)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return answer{resp.StatusCode, resp.Header, string(b)}
}

func basicAuth(user, pw string) string {
	r, _ := http.NewRequest("GET", "/", nil)
	r.SetBasicAuth(user, pw)
	return r.Header.Get("Authorization")
}

// bearer is a registry token of user for the scopes, as clients get it.
func (e *env) bearer(user, pw string, scopes ...string) string {
	e.t.Helper()
	status, body := e.token(user, pw, scopes...)
	if status != 200 {
		e.t.Fatalf("token of %s: %d %v", user, status, body)
	}
	return "Bearer " + body["token"].(string)
}

// requireNothingIn checks that a refused push left no repository and no
// namespace.
func (e *env) requireNothingIn(ns, repo string) {
	e.t.Helper()
	ctx := context.Background()
	if ri, err := e.db.Repositories().Repository(ctx, repo); err != nil || ri.Exists {
		e.t.Fatalf("a refused push created %s (%v)", repo, err)
	}
	if _, err := e.db.Users().NamespaceByName(ctx, ns); !errors.Is(err, meta.ErrNamespaceNotFound) {
		e.t.Fatalf("a refused push left namespace %s: %v", ns, err)
	}
}

// TestRefusalMissingNamespace: without CREATE_NAMESPACE_ON_PUSH a push into
// a namespace that does not exist is refused for everyone, superusers
// included (as in Quay), with the spec's DENIED and a message that says
// what to do; a real client (go-containerregistry, as crane) shows it, and
// a token client gets it rather than a challenge loop. Nothing is created.
func TestRefusalMissingNamespace(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, authz.Options{CreatePrivateRepoOnPush: true})
			for _, who := range []struct{ user, pw string }{{"alice", alicePW}, {"root", rootPW}} {
				err := e.push("quickstart/app:v1", who.user, who.pw)
				if errorCode(err) != "DENIED" || !strings.Contains(err.Error(), missingNS) {
					t.Fatalf("%s pushes into a missing namespace: %v, want DENIED: %s", who.user, err, missingNS)
				}
			}
			e.requireNothingIn("quickstart", "quickstart/app")

			// Over the wire: Basic credentials and a registry token alike.
			const upload = "/v2/quickstart/app/blobs/uploads/"
			tok := e.bearer("alice", alicePW, "repository:quickstart/app:pull,push")
			for name, authorization := range map[string]string{"Basic": basicAuth("alice", alicePW), "token": tok} {
				a := e.raw("POST", upload, authorization)
				if code, msg := a.specError(); a.status != 403 || code != "DENIED" || msg != missingNS {
					t.Fatalf("POST %s with %s: %d %s, want 403 DENIED %q", upload, name, a.status, a.body, missingNS)
				}
				// A read finds nothing there: 404, so that clients that look
				// before they push go on to the push and its reason.
				a = e.raw("GET", "/v2/quickstart/app/manifests/v1", authorization)
				if code, msg := a.specError(); a.status != 404 || code != "NAME_UNKNOWN" || !strings.Contains(msg, "namespace quickstart does not exist") {
					t.Fatalf("GET a manifest in a missing namespace with %s: %d %s", name, a.status, a.body)
				}
				if a = e.raw("HEAD", "/v2/quickstart/app/blobs/sha256:"+strings.Repeat("a", 64), authorization); a.status != 404 {
					t.Fatalf("HEAD a blob in a missing namespace with %s: %d", name, a.status)
				}
			}
			// Anonymous callers are still asked to log in.
			if a := e.raw("POST", upload, ""); a.status != 401 || a.header.Get("WWW-Authenticate") == "" {
				t.Fatalf("anonymous POST %s: %d %v", upload, a.status, a.header)
			}
			e.requireNothingIn("quickstart", "quickstart/app")

			// Once the organization exists, its owner pushes.
			ctx := context.Background()
			alice, _ := e.db.Users().UserByName(ctx, "alice")
			if _, err := e.db.Organizations().CreateOrganization(ctx, "quickstart", alice.ID); err != nil {
				t.Fatal(err)
			}
			if err := e.push("quickstart/app:v1", "alice", alicePW); err != nil {
				t.Fatalf("push after the organization was created: %v", err)
			}
		})
	}
}

// TestRefusalCreateNamespaceOnPush: with CREATE_NAMESPACE_ON_PUSH a user
// (a superuser too) creates the missing namespace as an organization it
// owns; a robot or an access token, which cannot own one, is refused with
// a reason, and nothing is created.
func TestRefusalCreateNamespaceOnPush(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, authz.Options{CreatePrivateRepoOnPush: true, CreateNamespaceOnPush: true})
			ctx := context.Background()
			if err := e.push("rootorg/app:v1", "root", rootPW); err != nil {
				t.Fatalf("superuser push creating a namespace: %v", err)
			}
			root, _ := e.db.Users().UserByName(ctx, "root")
			if ns, err := e.db.Users().NamespaceByName(ctx, "rootorg"); err != nil || ns.Kind != meta.NamespaceOrg {
				t.Fatalf("namespace created by the superuser's push: %+v %v, want an organization", ns, err)
			}
			if role, _ := e.db.Organizations().OrgRole(ctx, "rootorg", root.ID); role != "admin" {
				t.Fatalf("the superuser's role in the organization its push created: %q, want admin", role)
			}

			robotSecret, _ := auth.NewSecret(authz.SecretPrefix)
			if _, err := e.db.Users().CreateRobot(ctx, "alice", "ci", auth.HashSecret(robotSecret)); err != nil {
				t.Fatal(err)
			}
			tokSecret, _ := auth.NewSecret(authz.SecretPrefix)
			scopes, _ := json.Marshal([]auth.TokenScope{{Repository: "tokorg/*", Actions: []string{auth.TokenContentRead, auth.TokenContentWrite}}})
			if _, err := e.db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: "ci-token", SecretHash: auth.HashSecret(tokSecret), Scopes: scopes}); err != nil {
				t.Fatal(err)
			}
			for _, c := range []struct{ user, pw, ns, kind string }{
				{"alice+ci", robotSecret, "robotorg", "robot"},
				{"ci-token", tokSecret, "tokorg", "token"},
			} {
				err := e.push(c.ns+"/app:v1", c.user, c.pw)
				want := "namespace " + c.ns + " does not exist, and a " + c.kind + " cannot create one by pushing"
				if errorCode(err) != "DENIED" || !strings.Contains(err.Error(), want) {
					t.Fatalf("%s pushes into a missing namespace: %v, want DENIED: %s", c.user, err, want)
				}
				e.requireNothingIn(c.ns, c.ns+"/app")
			}
		})
	}
}

// TestRefusalRepositoryState: a write to a mirror says it is a mirror, to
// a read-only repository that it is read-only, with Basic credentials and
// with a registry token alike; someone who may not read the repository is
// not told its state. A token that merely lacks a scope its identity now
// has is challenged, so that the client asks for a new one.
func TestRefusalRepositoryState(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, authz.Options{CreatePrivateRepoOnPush: true})
			ctx := context.Background()
			for _, repo := range []string{"alice/mirror", "alice/ro", "alice/app"} {
				if err := e.push(repo+":v1", "alice", alicePW); err != nil {
					t.Fatal(err)
				}
			}
			mirror, ro, robot := auth.StateMirror, auth.StateReadOnly, "alice+mirror"
			e.db.Repositories().UpdateRepository(ctx, "alice/mirror", nil, &mirror, &robot, nil)
			e.db.Repositories().UpdateRepository(ctx, "alice/ro", nil, &ro, nil, nil)

			for _, c := range []struct{ repo, want string }{
				{"alice/mirror", "alice/mirror is a mirror (repository state MIRROR): it takes no pushes"},
				{"alice/ro", "alice/ro is read-only (repository state READ_ONLY): it takes no pushes"},
			} {
				for _, who := range []struct{ user, pw string }{{"alice", alicePW}, {"root", rootPW}} {
					err := e.push(c.repo+":v2", who.user, who.pw)
					if errorCode(err) != "DENIED" || !strings.Contains(err.Error(), c.want) {
						t.Fatalf("%s pushes to %s: %v, want DENIED: %s", who.user, c.repo, err, c.want)
					}
				}
				tok := e.bearer("alice", alicePW, "repository:"+c.repo+":pull,push")
				a := e.raw("POST", "/v2/"+c.repo+"/blobs/uploads/", tok)
				if code, msg := a.specError(); a.status != 403 || code != "DENIED" || !strings.HasPrefix(msg, c.want) {
					t.Fatalf("POST to %s with alice's token: %d %s, want 403 DENIED %q", c.repo, a.status, a.body, c.want)
				}
				a = e.raw("DELETE", "/v2/"+c.repo+"/manifests/v1", basicAuth("alice", alicePW))
				if code, msg := a.specError(); a.status != 403 || code != "DENIED" || !strings.Contains(msg, "it takes no deletes") {
					t.Fatalf("DELETE in %s: %d %s", c.repo, a.status, a.body)
				}
				// bob may not read alice's private repository: no state for him.
				a = e.raw("POST", "/v2/"+c.repo+"/blobs/uploads/", basicAuth("bob", bobPW))
				if code, msg := a.specError(); a.status != 403 || code != "DENIED" || msg != "bob may not push "+c.repo {
					t.Fatalf("POST to %s as bob: %d %s", c.repo, a.status, a.body)
				}
			}

			// alice's token for pull only, then a push she may make: the
			// challenge names the scope to ask for.
			tok := e.bearer("alice", alicePW, "repository:alice/app:pull")
			a := e.raw("POST", "/v2/alice/app/blobs/uploads/", tok)
			if ch := a.header.Get("WWW-Authenticate"); a.status != 401 || !strings.Contains(ch, `scope="repository:alice/app:pull,push"`) || !strings.Contains(ch, "insufficient_scope") {
				t.Fatalf("POST with a token lacking push that alice may have: %d %q", a.status, ch)
			}
		})
	}
}

// TestOpenAuthorizer: in auth mode "none" a push into a namespace that
// does not exist creates it as an organization (without owners: there are
// no accounts), never a namespace that is neither user nor organization;
// a mirror still refuses pushes and says why.
func TestOpenAuthorizer(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			driver, _ := fs.New(t.TempDir(), fs.Options{})
			srv := httptest.NewServer(registry.New(wire.RegistryStores(db), driver, registry.Options{Auth: authz.Open{Repositories: db.Repositories()},
				Policy: oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}}))
			t.Cleanup(srv.Close)
			e := &env{t: t, db: db, url: srv.URL, host: strings.TrimPrefix(srv.URL, "http://")}
			img, _ := random.Image(256, 1)
			if err := remote.Write(e.ref("devorg/team/app:v1"), img, remote.WithAuth(authn.Anonymous)); err != nil {
				t.Fatal(err)
			}
			ns, err := db.Users().NamespaceByName(ctx, "devorg")
			if err != nil || ns.Kind != meta.NamespaceOrg {
				t.Fatalf("namespace created by an open push: %+v %v, want an organization", ns, err)
			}
			mirror, robot := auth.StateMirror, "devorg+mirror"
			db.Repositories().UpdateRepository(ctx, "devorg/team/app", nil, &mirror, &robot, nil)
			a := e.raw("POST", "/v2/devorg/team/app/blobs/uploads/", "")
			if code, msg := a.specError(); a.status != 403 || code != "DENIED" || !strings.HasPrefix(msg, "devorg/team/app is a mirror") {
				t.Fatalf("open push to a mirror: %d %s", a.status, a.body)
			}
		})
	}
}
