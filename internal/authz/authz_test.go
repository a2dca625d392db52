package authz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/berth-dev/berth/internal/wire"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
)

type env struct {
	t      *testing.T
	db     *meta.DB
	az     *authz.Authorizer
	url    string
	host   string
	logs   *bytes.Buffer
	tokens *auth.Tokens
}

const (
	alicePW = "alice-password-1"
	bobPW   = "bob-password-22"
	rootPW  = "root-password-333"
)

func newEnv(t *testing.T, dialect string, opts authz.Options) *env {
	t.Helper()
	db := metatest.Open(t, dialect)
	key, err := auth.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens("berth", "berth", 5*time.Minute, []auth.SigningKey{key})
	if err != nil {
		t.Fatal(err)
	}
	logs := &bytes.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts.Logger = log
	az := authz.New(wire.AuthzStores(db), tokens, opts)
	driver, _ := fs.New(t.TempDir(), fs.Options{})
	reg := registry.New(wire.RegistryStores(db), driver, registry.Options{Auth: az, Logger: log,
		Policy: oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}})
	mux := http.NewServeMux()
	mux.HandleFunc(authz.TokenPath, az.ServeToken)
	mux.Handle("/v2/", reg)
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	e := &env{t: t, db: db, az: az, url: srv.URL, host: strings.TrimPrefix(srv.URL, "http://"), logs: logs, tokens: tokens}
	e.user("alice", alicePW, false)
	e.user("bob", bobPW, false)
	e.user("root", rootPW, true)
	return e
}

func (e *env) user(name, pw string, super bool) meta.User {
	h, err := auth.HashPassword(pw)
	if err != nil {
		e.t.Fatal(err)
	}
	u, err := e.db.Users().CreateUser(context.Background(), meta.User{Username: name, SecretHash: h, Superuser: super})
	if err != nil {
		e.t.Fatal(err)
	}
	return u
}

func (e *env) ref(s string) name.Reference {
	r, err := name.ParseReference(e.host+"/"+s, name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	return r
}

func (e *env) push(repoTag, user, pw string) error {
	img, _ := random.Image(256, 1)
	var a authn.Authenticator = authn.Anonymous
	if user != "" {
		a = &authn.Basic{Username: user, Password: pw}
	}
	return remote.Write(e.ref(repoTag), img, remote.WithAuth(a))
}

func (e *env) pull(repoTag, user, pw string) error {
	var a authn.Authenticator = authn.Anonymous
	if user != "" {
		a = &authn.Basic{Username: user, Password: pw}
	}
	_, err := remote.Image(e.ref(repoTag), remote.WithAuth(a))
	return err
}

func errorCode(err error) string {
	var te *transport.Error
	if err == nil {
		return ""
	}
	if ok := asTransport(err, &te); ok {
		if len(te.Errors) > 0 {
			return string(te.Errors[0].Code)
		}
		if te.StatusCode == http.StatusUnauthorized { // HEAD: no body
			return "UNAUTHORIZED"
		}
	}
	return err.Error()
}

func asTransport(err error, te **transport.Error) bool {
	for err != nil {
		if t, ok := err.(*transport.Error); ok {
			*te = t
			return true
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return false
		}
		err = u.Unwrap()
	}
	return false
}

func (e *env) token(user, pw string, scopes ...string) (int, map[string]any) {
	q := url.Values{"service": {"berth"}}
	for _, s := range scopes {
		q.Add("scope", s)
	}
	req, _ := http.NewRequest("GET", e.url+authz.TokenPath+"?"+q.Encode(), nil)
	if user != "" {
		req.SetBasicAuth(user, pw)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body
}

func (e *env) claims(tok string) *auth.Claims {
	c, err := e.tokens.Verify(tok, time.Now())
	if err != nil {
		e.t.Fatal(err)
	}
	return c
}

func TestTokenEndpoint(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, authz.Options{CreatePrivateRepoOnPush: true})
			// Alice may push to her namespace, not to bob's: never more than
			// asked for and allowed.
			status, body := e.token("alice", alicePW, "repository:alice/app:pull,push", "repository:bob/app:pull,push,delete", "repository:alice/app:pull")
			if status != 200 || body["token"] == nil || body["access_token"] != body["token"] || body["expires_in"].(float64) != 300 {
				t.Fatalf("token: %d %v", status, body)
			}
			c := e.claims(body["token"].(string))
			if !c.Allows("repository", "alice/app", "push") || c.Allows("repository", "bob/app", "pull") || c.Allows("repository", "alice/app", "delete") {
				t.Fatalf("access = %+v", c.Access)
			}
			if c.Subject != "alice" || len(c.Access) != 1 { // bob/app, granted nothing, has no entry
				t.Fatalf("claims = %+v", c)
			}
			// Wrong password, unknown user, injection in the scope, other service.
			if s, _ := e.token("alice", "nope", "repository:alice/app:pull"); s != 401 {
				t.Fatalf("wrong password: %d", s)
			}
			if s, _ := e.token("mallory", "x", "repository:alice/app:pull"); s != 401 {
				t.Fatalf("unknown user: %d", s)
			}
			for _, bad := range []string{"repository:alice/app:pull\"},{\"type\":\"registry", "repository:../../etc:pull", "repository:alice/app:pull,admin", "repository:alice/APP:pull"} {
				if s, b := e.token("alice", alicePW, bad); s != 400 {
					t.Fatalf("scope %q: %d %v", bad, s, b)
				}
			}
			// At most 100 scopes per token, anonymous or not: each is a
			// permission decision.
			many := make([]string, 100)
			for i := range many {
				many[i] = fmt.Sprintf("repository:alice/r%d:pull", i)
			}
			if s, _ := e.token("alice", alicePW, many...); s != 200 {
				t.Fatalf("100 scopes: %d", s)
			}
			if s, b := e.token("", "", append(many, "repository:alice/one-more:pull")...); s != 400 || !strings.Contains(fmt.Sprint(b), "at most 100") {
				t.Fatalf("101 scopes, anonymous: %d %v", s, b)
			}
			req, _ := http.NewRequest("GET", e.url+authz.TokenPath+"?service=other", nil)
			req.SetBasicAuth("alice", alicePW)
			if resp, _ := http.DefaultClient.Do(req); resp.StatusCode != 400 {
				t.Fatalf("other service: %d", resp.StatusCode)
			}
			// The catalog is for superusers.
			_, body = e.token("alice", alicePW, "registry:catalog:*")
			if e.claims(body["token"].(string)).Allows("registry", "catalog", "*") {
				t.Fatal("catalog granted to a non-superuser")
			}
			_, body = e.token("root", rootPW, "registry:catalog:*")
			if !e.claims(body["token"].(string)).Allows("registry", "catalog", "*") {
				t.Fatal("catalog refused to a superuser")
			}
			// OAuth2 password grant (POST), as oras-go and containerd may use.
			form := url.Values{"grant_type": {"password"}, "username": {"alice"}, "password": {alicePW}, "service": {"berth"}, "scope": {"repository:alice/app:push"}}
			resp, err := http.PostForm(e.url+authz.TokenPath, form)
			if err != nil || resp.StatusCode != 200 {
				t.Fatalf("password grant: %v %d", err, resp.StatusCode)
			}
			resp.Body.Close()
			form.Set("grant_type", "refresh_token")
			if resp, _ := http.PostForm(e.url+authz.TokenPath, form); resp.StatusCode != 400 {
				t.Fatalf("refresh grant: %d", resp.StatusCode)
			}
		})
	}
}

func TestPushPullWithClients(t *testing.T) {
	e := newEnv(t, "sqlite", authz.Options{CreatePrivateRepoOnPush: true})
	ctx := context.Background()
	if err := e.push("alice/app:v1", "alice", alicePW); err != nil {
		t.Fatalf("alice pushes to her namespace: %v", err)
	}
	ri, _ := e.db.Repositories().Repository(ctx, "alice/app")
	if !ri.Exists || ri.Visibility != "private" {
		t.Fatalf("repository created by push: %+v", ri)
	}
	if err := e.pull("alice/app:v1", "alice", alicePW); err != nil {
		t.Fatal(err)
	}
	// Bob and anonymous cannot read a private repository, nor push to it:
	// bob, a known identity, is told DENIED; anonymous is challenged.
	if code := errorCode(e.pull("alice/app:v1", "bob", bobPW)); code != "DENIED" {
		t.Fatalf("bob pull: %s", code)
	}
	if code := errorCode(e.pull("alice/app:v1", "", "")); code != "UNAUTHORIZED" {
		t.Fatalf("anonymous pull: %s", code)
	}
	if code := errorCode(e.push("alice/app:v2", "bob", bobPW)); code != "UNAUTHORIZED" {
		t.Fatalf("bob push: %s", code)
	}
	// Public: anonymous pulls, still cannot push.
	pub := "public"
	e.db.Repositories().UpdateRepository(ctx, "alice/app", &pub, nil, nil, nil)
	if err := e.pull("alice/app:v1", "", ""); err != nil {
		t.Fatalf("anonymous pull of a public repository: %v", err)
	}
	if code := errorCode(e.push("alice/app:v3", "", "")); code != "UNAUTHORIZED" {
		t.Fatalf("anonymous push: %s", code)
	}
	// A robot with a write permission, a scoped token inside and outside
	// its scope.
	secret, _ := auth.NewSecret(authz.SecretPrefix)
	robot, err := e.db.Users().CreateRobot(ctx, "alice", "ci", auth.HashSecret(secret))
	if err != nil {
		t.Fatal(err)
	}
	// (the repository is public now: the robot reads it, and its push is
	// DENIED with a reason rather than challenged)
	if err := e.push("alice/app:robot", "alice+ci", secret); errorCode(err) != "DENIED" || !strings.Contains(err.Error(), "alice+ci may not push alice/app") {
		t.Fatalf("robot without permission: %v", err)
	}
	ri, _ = e.db.Repositories().Repository(ctx, "alice/app")
	e.db.Access().SetPermission(ctx, ri.ID, robot.ID, 0, "write")
	if err := e.push("alice/app:robot", "alice+ci", secret); err != nil {
		t.Fatalf("robot with write: %v", err)
	}
	tokSecret, _ := auth.NewSecret(authz.SecretPrefix)
	scopes, _ := json.Marshal([]auth.TokenScope{{Repository: "alice/ci/*", Actions: []string{auth.TokenContentRead, auth.TokenContentWrite}}})
	e.db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: "ci-token", SecretHash: auth.HashSecret(tokSecret), Scopes: scopes})
	if err := e.push("alice/ci/new/app:v1", "ci-token", tokSecret); err != nil {
		t.Fatalf("token inside its scope (a repository that did not exist): %v", err)
	}
	if code := errorCode(e.push("alice/other:v1", "ci-token", tokSecret)); code != "UNAUTHORIZED" {
		t.Fatalf("token outside its scope: %s", code)
	}
	e.db.Access().RevokeAccessToken(ctx, "ci-token")
	if code := errorCode(e.pull("alice/ci/new/app:v1", "ci-token", tokSecret)); code != "UNAUTHORIZED" {
		t.Fatalf("revoked token: %s", code)
	}
	// Read-only: refused even to the owner, even with a token issued before.
	_, body := e.token("alice", alicePW, "repository:alice/app:pull,push")
	tok := body["token"].(string)
	ro := auth.StateReadOnly
	e.db.Repositories().UpdateRepository(ctx, "alice/app", nil, &ro, nil, nil)
	req, _ := http.NewRequest("POST", e.url+"/v2/alice/app/blobs/uploads/", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	resp, _ := http.DefaultClient.Do(req)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 403 || !strings.Contains(string(b), "alice/app is read-only") {
		t.Fatalf("push to a read-only repository with an earlier token: %d %s", resp.StatusCode, b)
	}
	if err := e.pull("alice/app:v1", "alice", alicePW); err != nil {
		t.Fatalf("pull of a read-only repository: %v", err)
	}
	// No secret in the logs.
	for _, s := range []string{alicePW, bobPW, rootPW, secret, tokSecret, tok} {
		if strings.Contains(e.logs.String(), s) {
			t.Fatalf("a secret appears in the log")
		}
	}
}

func TestBasicAndBearerOnV2(t *testing.T) {
	e := newEnv(t, "sqlite", authz.Options{CreatePrivateRepoOnPush: true})
	do := func(method, path, authz string) *http.Response {
		req, _ := http.NewRequest(method, e.url+path, nil)
		if authz != "" {
			req.Header.Set("Authorization", authz)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	resp := do("GET", "/v2/", "")
	if resp.StatusCode != 401 || !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), `Bearer realm="http://`+e.host+`/v2/auth",service="berth"`) {
		t.Fatalf("anonymous /v2/: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	basic := func(u, p string) string {
		r, _ := http.NewRequest("GET", "/", nil)
		r.SetBasicAuth(u, p)
		return r.Header.Get("Authorization")
	}
	if resp := do("GET", "/v2/", basic("alice", alicePW)); resp.StatusCode != 200 {
		t.Fatalf("Basic on /v2/: %d", resp.StatusCode)
	}
	if resp := do("GET", "/v2/", basic("alice", "wrong")); resp.StatusCode != 401 || !strings.Contains(resp.Header.Get("WWW-Authenticate"), "invalid_token") {
		t.Fatalf("wrong Basic: %d %q", resp.StatusCode, resp.Header.Get("WWW-Authenticate"))
	}
	// A Basic identity without permission gets DENIED, not a challenge loop.
	if resp := do("GET", "/v2/alice/app/tags/list", basic("bob", bobPW)); resp.StatusCode != 403 {
		t.Fatalf("bob Basic on alice's repository: %d", resp.StatusCode)
	}
	// Forged and expired bearer tokens.
	k, _ := auth.NewSigningKey()
	other, _ := auth.NewTokens("berth", "berth", time.Minute, []auth.SigningKey{k})
	forged, _, _ := other.Issue("alice", auth.KindUser, 0, []auth.Access{{Type: "repository", Name: "alice/app", Actions: []string{"pull"}}}, time.Now())
	if resp := do("GET", "/v2/alice/app/tags/list", "Bearer "+forged); resp.StatusCode != 401 {
		t.Fatalf("forged token: %d", resp.StatusCode)
	}
	expired, _, _ := e.tokens.Issue("alice", auth.KindUser, 0, []auth.Access{{Type: "repository", Name: "alice/app", Actions: []string{"pull"}}}, time.Now().Add(-time.Hour))
	if resp := do("GET", "/v2/alice/app/tags/list", "Bearer "+expired); resp.StatusCode != 401 {
		t.Fatalf("expired token: %d", resp.StatusCode)
	}
	if resp := do("GET", "/v2/_catalog", basic("alice", alicePW)); resp.StatusCode != 403 {
		t.Fatalf("catalog for a user: %d", resp.StatusCode)
	}
	if resp := do("GET", "/v2/_catalog", basic("root", rootPW)); resp.StatusCode != 200 {
		t.Fatalf("catalog for a superuser: %d", resp.StatusCode)
	}
}

func TestCreateOnPushSettings(t *testing.T) {
	e := newEnv(t, "sqlite", authz.Options{CreatePrivateRepoOnPush: false, CreateNamespaceOnPush: true})
	ctx := context.Background()
	if err := e.push("alice/app:v1", "alice", alicePW); err != nil {
		t.Fatal(err)
	}
	if ri, _ := e.db.Repositories().Repository(ctx, "alice/app"); ri.Visibility != "public" {
		t.Fatalf("CREATE_PRIVATE_REPO_ON_PUSH=false made a %s repository", ri.Visibility)
	}
	// An access token never administers what it creates: its push makes
	// a private repository whatever the setting (as the API's create).
	tokSecret, _ := auth.NewSecret(authz.SecretPrefix)
	scopes, _ := json.Marshal([]auth.TokenScope{{Repository: "alice/*", Actions: []string{auth.TokenContentRead, auth.TokenContentWrite}}})
	if _, err := e.db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: "ci-token", SecretHash: auth.HashSecret(tokSecret), Scopes: scopes}); err != nil {
		t.Fatal(err)
	}
	if err := e.push("alice/by-token:v1", "ci-token", tokSecret); err != nil {
		t.Fatalf("token push creating a repository: %v", err)
	}
	if ri, _ := e.db.Repositories().Repository(ctx, "alice/by-token"); ri.Visibility != "private" {
		t.Fatalf("a token's push made a %s repository, want private", ri.Visibility)
	}
	if err := e.push("neworg/team/app:v1", "alice", alicePW); err != nil {
		t.Fatalf("push creating a namespace: %v", err)
	}
	ns, err := e.db.Users().NamespaceByName(ctx, "neworg")
	if err != nil || ns.Kind != meta.NamespaceOrg {
		t.Fatalf("namespace: %+v %v", ns, err)
	}
	if role, _ := e.db.Organizations().OrgRole(ctx, "neworg", 1); role != "admin" {
		t.Fatalf("pusher's role in the new organization: %q", role)
	}
	// Bob cannot push into the organization alice now owns.
	if code := errorCode(e.push("neworg/other:v1", "bob", bobPW)); code != "UNAUTHORIZED" {
		t.Fatalf("bob into alice's organization: %s", code)
	}
}

// TestRefusedPushCreatesNothing: the repository, the organization
// (CREATE_NAMESPACE_ON_PUSH) and the creator's permission are created in
// the push's own transaction, so a push refused for a missing layer leaves
// none of them and no repo_created event; a push that succeeds creates all
// three, and its creator administers the repository.
func TestRefusedPushCreatesNothing(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, authz.Options{CreatePrivateRepoOnPush: true, CreateNamespaceOnPush: true})
			ctx := context.Background()
			missing := digest.FromString("never uploaded")
			m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example+json",`+
				`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},`+
				`"layers":[{"mediaType":"application/vnd.example+json","digest":"%s","size":5}]}`, missing)
			req, _ := http.NewRequest("PUT", e.url+"/v2/ghostorg/app/manifests/v1", strings.NewReader(m))
			req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			req.SetBasicAuth("alice", alicePW)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 400 || !strings.Contains(string(body), "MANIFEST_BLOB_UNKNOWN") {
				t.Fatalf("refused push: %d %s", resp.StatusCode, body)
			}
			if ri, err := e.db.Repositories().Repository(ctx, "ghostorg/app"); err != nil || ri.Exists {
				t.Fatalf("a refused push left repository %+v (%v)", ri, err)
			}
			if _, err := e.db.Users().NamespaceByName(ctx, "ghostorg"); !errors.Is(err, meta.ErrNamespaceNotFound) {
				t.Fatalf("a refused push left the organization: %v", err)
			}
			evs, _ := e.db.Outbox().EventsAfter(ctx, 0, 100)
			for _, ev := range evs {
				if ev.Repository == "ghostorg/app" {
					t.Fatalf("a refused push left event %s", ev.Kind)
				}
			}
			// The same push, complete, creates all three.
			if err := e.push("ghostorg/app:v1", "alice", alicePW); err != nil {
				t.Fatal(err)
			}
			ri, err := e.db.Repositories().Repository(ctx, "ghostorg/app")
			if err != nil || !ri.Exists || ri.Visibility != "private" {
				t.Fatalf("repository after the push: %+v %v", ri, err)
			}
			alice, _ := e.db.Users().UserByName(ctx, "alice")
			if st, _ := e.db.Access().StandingOf(ctx, alice, "ghostorg/app"); st.Role != "admin" {
				t.Fatalf("creator's role: %q", st.Role)
			}
			if ns, err := e.db.Users().NamespaceByName(ctx, "ghostorg"); err != nil || ns.Kind != meta.NamespaceOrg {
				t.Fatalf("organization: %+v %v", ns, err)
			}
		})
	}
}

// TestRegistryTokensStopWithTheirAccount: a registry token is checked
// against the store on every request, as Basic credentials are: it stops
// when its user is disabled (and works again when enabled), when its user
// is deleted even if another user takes the name, when its access token
// is revoked, and a scoped access token stops while the user who created
// it is disabled. Before, each kept working until it expired (up to
// auth.tokenTTL, 24 h at most). An access token's use is recorded.
func TestRegistryTokensStopWithTheirAccount(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, authz.Options{CreatePrivateRepoOnPush: true})
			if err := e.push("alice/app:v1", "alice", alicePW); err != nil {
				t.Fatal(err)
			}
			get := func(tok string) int {
				t.Helper()
				req, _ := http.NewRequest("GET", e.url+"/v2/alice/app/manifests/v1", nil)
				req.Header.Set("Accept", "application/vnd.docker.distribution.manifest.v2+json")
				req.Header.Set("Authorization", "Bearer "+tok)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			tokenOf := func(user, pw string) string {
				t.Helper()
				st, body := e.token(user, pw, "repository:alice/app:pull,push")
				tok, _ := body["token"].(string)
				if st != 200 || tok == "" {
					t.Fatalf("token for %s: %d %v", user, st, body)
				}
				return tok
			}
			setEnabled := func(user string, on bool) {
				t.Helper()
				if _, err := e.db.Users().UpdateUser(ctx, user, meta.UserChange{Enabled: &on}); err != nil {
					t.Fatal(err)
				}
			}

			tok := tokenOf("alice", alicePW)
			if st := get(tok); st != 200 {
				t.Fatalf("alice's token: %d", st)
			}
			setEnabled("alice", false)
			if st := get(tok); st != 401 {
				t.Fatalf("the token of a disabled user: %d", st)
			}
			setEnabled("alice", true)
			if st := get(tok); st != 200 {
				t.Fatalf("the token of a user enabled again: %d", st)
			}

			// An access token alice made, scoped to alice/*.
			scopes, _ := json.Marshal([]auth.TokenScope{{Repository: "alice/*", Actions: []string{auth.TokenContentRead}}})
			secret, _ := auth.NewSecret(authz.SecretPrefix)
			if _, err := e.db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: "bobs-token", SecretHash: auth.HashSecret(secret),
				Scopes: scopes, CreatedBy: "alice"}); err != nil {
				t.Fatal(err)
			}
			before := time.Now()
			accessTok := tokenOf("bobs-token", secret)
			if st := get(accessTok); st != 200 {
				t.Fatalf("the access token's registry token: %d", st)
			}
			// Its use is recorded (shown as last_used_at to its holders).
			if at, err := e.db.Access().AccessTokenByName(ctx, "bobs-token"); err != nil || at.LastUsedAt.Before(before.Add(-time.Second)) {
				t.Fatalf("last use of the access token: %v %v", at.LastUsedAt, err)
			}
			setEnabled("alice", false)
			if st := get(accessTok); st != 401 {
				t.Fatalf("a registry token of an access token whose creator is disabled: %d", st)
			}
			if err := e.pull("alice/app:v1", "bobs-token", secret); errorCode(err) != "UNAUTHORIZED" {
				t.Fatalf("an access token whose creator is disabled, as Basic credentials: %v", err)
			}
			setEnabled("alice", true)
			if st := get(accessTok); st != 200 {
				t.Fatalf("the access token's registry token, its creator enabled again: %d", st)
			}
			if err := e.db.Access().RevokeAccessToken(ctx, "bobs-token"); err != nil {
				t.Fatal(err)
			}
			if st := get(accessTok); st != 401 {
				t.Fatalf("a registry token of a revoked access token: %d", st)
			}

			// A deleted user's token, when another user takes the name.
			if err := e.db.Repositories().DeleteRepository(ctx, "alice/app", "root"); err != nil {
				t.Fatal(err)
			}
			if err := e.db.Users().DeleteUser(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
			if st := get(tok); st != 401 {
				t.Fatalf("the token of a deleted user: %d", st)
			}
			e.user("alice", "new-alice-password", false)
			if err := e.push("alice/app:v1", "alice", "new-alice-password"); err != nil {
				t.Fatal(err)
			}
			if st := get(tok); st != 401 {
				t.Fatalf("the token of a deleted user, after another user took the name: %d", st)
			}
		})
	}
}

// TestOneComponentNamesAreNotPushed: a push of a repository named like a
// namespace (host/alice) is refused with how to name it: such a
// repository, which namespace queries leave out, outlived its user's
// deletion, and whoever made an organization of the name owned it.
func TestOneComponentNamesAreNotPushed(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, authz.Options{CreatePrivateRepoOnPush: true, CreateNamespaceOnPush: true})
			err := e.push("alice:v1", "alice", alicePW)
			var te *transport.Error
			if err == nil || !asTransport(err, &te) || errorCode(err) != "DENIED" || !strings.Contains(err.Error(), "push alice/alice") {
				t.Fatalf("a push of a one-component name: %v", err)
			}
			if ri, err := e.db.Repositories().Repository(context.Background(), "alice"); err != nil || ri.Exists {
				t.Fatalf("the repository was made: %+v %v", ri, err)
			}
			if err := e.push("alice/app:v1", "alice", alicePW); err != nil {
				t.Fatalf("a push into the user's namespace: %v", err)
			}
		})
	}
}
