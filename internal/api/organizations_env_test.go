package api_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
)

// orgEnv is a real API server over a real store and authorizer (the
// shared test environment), with users alice, bob, carol and the
// superuser root.
type orgEnv struct {
	t      *testing.T
	env    *testenv.Env
	db     *meta.DB
	az     *authz.Authorizer
	tokens *auth.Tokens
	url    string
}

func newOrgEnv(t *testing.T, dialect string) *orgEnv {
	t.Helper()
	e := newOrgEnvWith(t, testenv.Options{Dialect: dialect})
	e.user("alice", false)
	e.user("bob", false)
	e.user("carol", false)
	e.user("root", true)
	return e
}

// newOrgEnvWith is an orgEnv made with opts, with no users yet.
func newOrgEnvWith(t *testing.T, opts testenv.Options) *orgEnv {
	t.Helper()
	env := testenv.New(t, opts)
	return &orgEnv{t: t, env: env, db: env.DB, az: env.Authz, tokens: env.Tokens, url: env.URL}
}

// forDialects runs a test against every dialect metatest offers.
func forDialects(t *testing.T, f func(t *testing.T, e *orgEnv)) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) { f(t, newOrgEnv(t, d)) })
	}
}

func (e *orgEnv) user(name string, super bool) meta.User {
	e.t.Helper()
	return e.env.User(name, super)
}

func (e *orgEnv) setSecret(name, secret string) { e.env.SetSecret(name, secret) }

// knownTokens are the generated secrets the env has seen.
func (e *orgEnv) knownTokens() []string {
	var out []string
	for _, s := range e.env.Secrets() {
		if strings.HasPrefix(s, authz.SecretPrefix) {
			out = append(out, s)
		}
	}
	return out
}

// resp is an answer of the API.
type resp struct {
	status int
	header http.Header
	body   []byte
}

func (r resp) json(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer %d is not a JSON object: %v: %s", r.status, err, r.body)
	}
	return m
}

// send makes a request as user (Basic auth with its known secret; ""
// for anonymous), refusing any answer that shows a secret hash or a
// token the env knows, unless tokenOK.
func (e *orgEnv) send(user, method, path, body string, tokenOK bool) resp {
	e.t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	if user != "" {
		pw := e.env.Secret(user)
		if pw == "" {
			e.t.Fatalf("no secret known for %s", user)
		}
		req.SetBasicAuth(user, pw)
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
	s := string(b)
	for _, bad := range []string{"sha256:", "$argon2id$", "secret_hash", "SecretHash"} {
		if strings.Contains(s, bad) {
			e.t.Fatalf("%s %s answered with %q: %s", method, path, bad, s)
		}
	}
	if !tokenOK {
		if strings.Contains(s, `"token"`) || strings.Contains(s, authz.SecretPrefix) {
			e.t.Fatalf("%s %s answered with a token: %s", method, path, s)
		}
		for _, tok := range e.knownTokens() {
			if strings.Contains(s, tok) {
				e.t.Fatalf("%s %s answered with a known token: %s", method, path, s)
			}
		}
	}
	return resp{status: res.StatusCode, header: res.Header, body: b}
}

func (e *orgEnv) do(user, method, path, body string) resp {
	e.t.Helper()
	return e.send(user, method, path, body, false)
}

// expect makes a request and checks its status; error answers must be in
// Quay's shape.
func (e *orgEnv) expect(user, method, path, body string, status int) resp {
	e.t.Helper()
	r := e.do(user, method, path, body)
	e.check(r, method, path, status)
	return r
}

func (e *orgEnv) check(r resp, method, path string, status int) {
	e.t.Helper()
	if r.status != status {
		e.t.Fatalf("%s %s: status %d, want %d: %s", method, path, r.status, status, r.body)
	}
	if status >= 400 {
		var qe struct {
			Status  int    `json:"status"`
			Type    string `json:"error_type"`
			Message string `json:"error_message"`
			Detail  string `json:"detail"`
		}
		if err := json.Unmarshal(r.body, &qe); err != nil || qe.Status != status || qe.Message == "" || qe.Detail == "" {
			e.t.Fatalf("%s %s: error answer not in Quay's shape: %s", method, path, r.body)
		}
	}
}

// createOrg creates an organization owned by user.
func (e *orgEnv) createOrg(user, name string) {
	e.t.Helper()
	e.expect(user, "POST", "/api/v1/organization/", `{"name":"`+name+`"}`, http.StatusCreated)
}

// putTeam creates or updates a team as user.
func (e *orgEnv) putTeam(user, org, team, role string) {
	e.t.Helper()
	e.expect(user, "PUT", "/api/v1/organization/"+org+"/team/"+team, `{"role":"`+role+`"}`, http.StatusOK)
}

// addMember adds member to a team as user.
func (e *orgEnv) addMember(user, org, team, member string) {
	e.t.Helper()
	e.expect(user, "PUT", "/api/v1/organization/"+org+"/team/"+team+"/members/"+member, "", http.StatusOK)
}

// createRobot creates a robot through the API (base is "/api/v1/user" or
// "/api/v1/organization/ORG") and remembers its token.
func (e *orgEnv) createRobot(user, base, short, body string) map[string]any {
	e.t.Helper()
	r := e.send(user, "PUT", base+"/robots/"+short, body, true)
	e.check(r, "PUT", base+"/robots/"+short, http.StatusCreated)
	m := r.json(e.t)
	name, _ := m["name"].(string)
	tok, _ := m["token"].(string)
	if name == "" || !strings.HasPrefix(tok, authz.SecretPrefix) {
		e.t.Fatalf("create robot answered %s", r.body)
	}
	e.setSecret(name, tok)
	return m
}

// login checks a username and secret through the authorizer, as the
// registry and the API do.
func (e *orgEnv) login(username, secret string) (auth.Identity, error) {
	req := httptest.NewRequest("GET", "/v2/", nil)
	return e.az.Login(context.Background(), req, username, secret)
}

// audited reports whether the audit log of namespace has an entry of kind
// whose metadata contains want.
func (e *orgEnv) audited(namespace, kind, want string) bool {
	e.t.Helper()
	entries, err := e.db.Access().AuditLog(context.Background(), namespace, 0, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, a := range entries {
		if a.Kind == kind && strings.Contains(string(a.Metadata), want) {
			return true
		}
	}
	return false
}

func (e *orgEnv) orgRole(org, user string) string {
	e.t.Helper()
	u, err := e.db.Users().UserByName(context.Background(), user)
	if err != nil {
		e.t.Fatal(err)
	}
	role, err := e.db.Organizations().OrgRole(context.Background(), org, u.ID)
	if err != nil {
		e.t.Fatal(err)
	}
	return role
}
