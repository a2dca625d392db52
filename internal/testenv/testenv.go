// Package testenv assembles one Berth for a test: the metadata store of a
// dialect, filesystem storage in a temporary directory, token
// authentication, the /v2 registry and the /api/v1 API behind one
// httptest server, with helpers that create users, robots, organizations
// and access tokens and remember their credentials. Only tests import it.
//
// What differs between tests is an option: open or token
// authentication, the pull-through cache, the artifact policy, the GC
// delay and anything else registry.Options, api.Options and
// authz.Options carry. The server's own composition (internal/server)
// is tested through server.New; this is the environment of the packages
// below it.
package testenv

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/proxy"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// AdminName is the superuser Admin creates.
const AdminName = "admin"

// Options say how an Env differs from the default: SQLite, token
// authentication, every artifact type allowed, logs discarded.
type Options struct {
	// Dialect of the metadata store: "sqlite" when empty, or one of
	// Dialects().
	Dialect string
	// Open is auth mode "none": no token authentication; the registry
	// allows every request (registry.AllowAll unless Registry.Auth is
	// set) and the API treats every caller as an anonymous superuser
	// (api.Open).
	Open bool
	// Registry is passed to registry.New. Unset, Policy allows every
	// artifact type (with v1.1 artifacts), Logger is the Env's and Auth
	// the token authorizer (nil in Open mode).
	Registry registry.Options
	// API is passed to api.New; an unset Logger is the Env's, and
	// ProxyCache is the pull-through cache when Proxy is set.
	API api.Options
	// APIAuth, if set, authenticates API callers instead of the token
	// authorizer (or api.Open).
	APIAuth api.Authenticator
	// Authz is passed to authz.New in token mode; an unset Logger is the
	// Env's.
	Authz authz.Options
	// Proxy, if set, builds the pull-through cache (proxy.New over the
	// Env's store and storage, with a sealer of a random key) and hands it
	// to the registry and the API. An unset Policy or Logger is the Env's.
	Proxy *proxy.Options
	// Logger receives every part's logs; nil discards them.
	Logger *slog.Logger
	// Replicas, when above 1, serves /v2 through that many registries,
	// each with its own storage driver over the same directory and all on
	// the one database, in turn: consecutive requests (the PATCHes of one
	// upload, a push then its pull) land on different replicas, as behind
	// a round-robin load balancer. 0 takes BERTH_TEST_REPLICAS, so a whole
	// suite can be run through a replica set.
	Replicas int
}

// EnvReplicas names the variable that sets Options.Replicas by default.
const EnvReplicas = "BERTH_TEST_REPLICAS"

// Env is one test's Berth, serving at URL.
type Env struct {
	DB       *meta.DB
	Storage  *fs.Driver
	Tokens   *auth.Tokens      // nil in Open mode
	Authz    *authz.Authorizer // nil in Open mode
	Proxy    *proxy.Service    // nil unless Options.Proxy
	Registry *registry.Registry
	API      *api.API
	Server   *httptest.Server
	URL      string // http://127.0.0.1:port
	Host     string // 127.0.0.1:port

	t       testing.TB
	mu      sync.Mutex
	secrets map[string]string // account or access token → its secret
}

// Dialects are the dialects a test runs against: SQLite always, and
// PostgreSQL when BERTH_TEST_POSTGRES_DSN is set.
func Dialects() []string { return metatest.Dialects() }

// ForDialects runs f as a subtest per dialect, each with a new Env made
// with opts (whose Dialect it sets).
func ForDialects(t *testing.T, opts Options, f func(t *testing.T, e *Env)) {
	t.Helper()
	for _, d := range Dialects() {
		t.Run(d, func(t *testing.T) {
			o := opts
			o.Dialect = d
			f(t, New(t, o))
		})
	}
}

// New assembles an Env; everything it opens is closed when the test ends.
func New(t testing.TB, opts Options) *Env {
	t.Helper()
	if opts.Dialect == "" {
		opts.Dialect = "sqlite"
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	db := metatest.Open(t, opts.Dialect)
	root := t.TempDir()
	driver, err := fs.New(root, fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	e := &Env{DB: db, Storage: driver, t: t, secrets: map[string]string{}}
	ro, ao := opts.Registry, opts.API
	if ro.Policy.Allowed == nil {
		ro.Policy = oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	}
	if ro.Logger == nil {
		ro.Logger = log
	}
	if ao.Logger == nil {
		ao.Logger = log
	}
	var apiAuth api.Authenticator = api.Open{}
	if !opts.Open {
		key, err := auth.NewSigningKey()
		if err != nil {
			t.Fatal(err)
		}
		if e.Tokens, err = auth.NewTokens("berth", "berth", 5*time.Minute, []auth.SigningKey{key}); err != nil {
			t.Fatal(err)
		}
		zo := opts.Authz
		if zo.Logger == nil {
			zo.Logger = log
		}
		e.Authz = authz.New(wire.AuthzStores(db), e.Tokens, zo)
		if ro.Auth == nil {
			ro.Auth = e.Authz
		}
		apiAuth = e.Authz
	}
	if opts.APIAuth != nil {
		apiAuth = opts.APIAuth
	}
	if opts.Proxy != nil {
		e.Proxy = e.newProxy(*opts.Proxy, ro.Policy, log)
		if ro.Proxy == nil {
			ro.Proxy = e.Proxy
		}
		if ao.ProxyCache == nil {
			ao.ProxyCache = e.Proxy
		}
	}
	e.Registry = registry.New(wire.RegistryStores(db), driver, ro)
	regs := []http.Handler{e.Registry}
	for range replicas(t, opts.Replicas) - 1 {
		d, err := fs.New(root, fs.Options{})
		if err != nil {
			t.Fatal(err)
		}
		regs = append(regs, registry.New(wire.RegistryStores(db), d, ro))
	}
	var turn atomic.Uint64
	// The default time machine (a week): tags restorable as a server's.
	e.API = api.New(wire.APIStores(db, config.Default().GC.TimeMachine), apiAuth, ao)
	// As the server routes: the token endpoint, /api/v1/, and everything
	// else to the registry untouched (no mux cleans its paths).
	e.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case e.Authz != nil && r.URL.Path == authz.TokenPath:
			e.Authz.ServeToken(w, r)
		case strings.HasPrefix(r.URL.Path, "/api/v1/"):
			e.API.ServeHTTP(w, r)
		default:
			regs[(turn.Add(1)-1)%uint64(len(regs))].ServeHTTP(w, r)
		}
	}))
	t.Cleanup(e.Server.Close)
	e.URL = e.Server.URL
	e.Host = strings.TrimPrefix(e.URL, "http://")
	return e
}

// replicas is n, or else BERTH_TEST_REPLICAS, or else 1.
func replicas(t testing.TB, n int) int {
	if n > 0 {
		return n
	}
	v := os.Getenv(EnvReplicas)
	if v == "" {
		return 1
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number", EnvReplicas, v)
	}
	return n
}

func (e *Env) newProxy(po proxy.Options, policy oci.ArtifactPolicy, log *slog.Logger) *proxy.Service {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		e.t.Fatal(err)
	}
	sealer, err := auth.NewSealer(key)
	if err != nil {
		e.t.Fatal(err)
	}
	if po.Policy.Allowed == nil {
		po.Policy = policy
	}
	if po.Logger == nil {
		po.Logger = log
	}
	return proxy.New(wire.ProxyStores(e.DB), e.Storage, sealer, po)
}

// RandomSecret is a random password.
func RandomSecret() string {
	b := make([]byte, 12)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// User creates a user with a random password, which Secret returns.
func (e *Env) User(name string, superuser bool) meta.User {
	e.t.Helper()
	return e.UserWithPassword(name, RandomSecret(), superuser)
}

// UserWithPassword creates a user with the password (its e-mail address
// is name@example.com).
func (e *Env) UserWithPassword(name, password string, superuser bool) meta.User {
	e.t.Helper()
	hash, err := auth.HashPassword(password)
	if err != nil {
		e.t.Fatal(err)
	}
	u, err := e.DB.Users().CreateUser(context.Background(), meta.User{Username: name, Email: name + "@example.com", SecretHash: hash, Superuser: superuser})
	if err != nil {
		e.t.Fatal(err)
	}
	e.SetSecret(name, password)
	return u
}

// Admin returns the name of the superuser AdminName, creating it on the
// first call (an Env holds no account until a test asks for one).
func (e *Env) Admin() string {
	e.t.Helper()
	if e.Secret(AdminName) == "" {
		e.User(AdminName, true)
	}
	return AdminName
}

// Robot creates robot ns+short with a generated token, which Secret
// returns.
func (e *Env) Robot(ns, short string) meta.User {
	e.t.Helper()
	secret, err := auth.NewSecret(authz.SecretPrefix)
	if err != nil {
		e.t.Fatal(err)
	}
	u, err := e.DB.Users().CreateRobot(context.Background(), ns, short, auth.HashSecret(secret))
	if err != nil {
		e.t.Fatal(err)
	}
	e.SetSecret(u.Username, secret)
	return u
}

// Org creates an organization owned by the user owner (who joins its
// owners team).
func (e *Env) Org(name, owner string) meta.Namespace {
	e.t.Helper()
	ctx := context.Background()
	u, err := e.DB.Users().UserByName(ctx, owner)
	if err != nil {
		e.t.Fatal(err)
	}
	ns, err := e.DB.Organizations().CreateOrganization(ctx, name, u.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return ns
}

// AccessToken creates an API access token created by creator with the
// scopes, and returns its secret (which Secret also returns for name).
func (e *Env) AccessToken(name, creator string, scopes []auth.TokenScope) string {
	e.t.Helper()
	secret, err := auth.NewSecret(authz.SecretPrefix)
	if err != nil {
		e.t.Fatal(err)
	}
	js, err := json.Marshal(scopes)
	if err != nil {
		e.t.Fatal(err)
	}
	t := meta.AccessToken{Name: name, SecretHash: auth.HashSecret(secret), Scopes: js, CreatedBy: creator}
	if _, err := e.DB.Access().CreateAccessToken(context.Background(), t); err != nil {
		e.t.Fatal(err)
	}
	e.SetSecret(name, secret)
	return secret
}

// SetSecret remembers the secret of an account made elsewhere (through
// the API, say).
func (e *Env) SetSecret(name, secret string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.secrets[name] = secret
}

// Secret is the password or token of an account the Env created or was
// told of; "" if none.
func (e *Env) Secret(name string) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.secrets[name]
}

// Secrets are every secret the Env knows, by account.
func (e *Env) Secrets() map[string]string {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make(map[string]string, len(e.secrets))
	for k, v := range e.secrets {
		out[k] = v
	}
	return out
}

// Request is a request to the Env's server; with a user, it carries the
// user's Basic credentials (Secret), which must be known.
func (e *Env) Request(user, method, path string, body []byte) *http.Request {
	e.t.Helper()
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	req, err := http.NewRequest(method, e.URL+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if user != "" {
		secret := e.Secret(user)
		if secret == "" {
			e.t.Fatalf("testenv: no secret known for %s", user)
		}
		req.SetBasicAuth(user, secret)
	}
	return req
}

// Do sends a request as user ("" for anonymous) with the headers (name,
// value, ...) and returns the response with its body read.
func (e *Env) Do(user, method, path string, body []byte, headers ...string) (*http.Response, []byte) {
	e.t.Helper()
	req := e.Request(user, method, path, body)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	if err != nil {
		e.t.Fatal(err)
	}
	return res, b
}
