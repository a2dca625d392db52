package authz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// queryCounter counts the statements the authorizer sends to the
// metadata store, by method. Every method of authz.Stores runs one
// statement, except StandingOf, which runs two for the identities of
// these tests (the organization role, then the repository permissions:
// none of them owns the namespace or administers the organization, which
// return earlier), and the login writes, which these tests never reach
// after the first request.
type queryCounter struct {
	mu    sync.Mutex
	calls map[string]int
}

func (c *queryCounter) add(method string, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls[method] += n
}

// take returns the count and the calls since the last take.
func (c *queryCounter) take() (int, string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	var names []string
	for m, k := range c.calls {
		n += k
		names = append(names, fmt.Sprintf("%s×%d", m, k))
	}
	sort.Strings(names)
	c.calls = map[string]int{}
	return n, strings.Join(names, " ")
}

type countedUsers struct {
	authz.UserStore
	c *queryCounter
}

func (s countedUsers) UserByName(ctx context.Context, name string) (meta.User, error) {
	s.c.add("UserByName", 1)
	return s.UserStore.UserByName(ctx, name)
}

func (s countedUsers) UserByID(ctx context.Context, id int64) (meta.User, error) {
	s.c.add("UserByID", 1)
	return s.UserStore.UserByID(ctx, id)
}

func (s countedUsers) NamespaceByName(ctx context.Context, name string) (meta.Namespace, error) {
	s.c.add("NamespaceByName", 1)
	return s.UserStore.NamespaceByName(ctx, name)
}

type countedRepos struct {
	authz.RepositoryStore
	c *queryCounter
}

func (s countedRepos) Repository(ctx context.Context, name string) (meta.RepoInfo, error) {
	s.c.add("Repository", 1)
	return s.RepositoryStore.Repository(ctx, name)
}

type countedAccess struct {
	authz.AccessStore
	c *queryCounter
}

func (s countedAccess) AccessTokenByName(ctx context.Context, name string) (meta.AccessToken, error) {
	s.c.add("AccessTokenByName", 1)
	return s.AccessStore.AccessTokenByName(ctx, name)
}

func (s countedAccess) AccessTokenBySecretHash(ctx context.Context, h string) (meta.AccessToken, error) {
	s.c.add("AccessTokenBySecretHash", 1)
	return s.AccessStore.AccessTokenBySecretHash(ctx, h)
}

func (s countedAccess) StandingOf(ctx context.Context, u meta.User, repo string) (meta.Standing, error) {
	s.c.add("StandingOf", 2)
	return s.AccessStore.StandingOf(ctx, u, repo)
}

func (s countedAccess) LoginThrottle(ctx context.Context, window time.Duration, limits ...meta.LoginLimit) (time.Duration, error) {
	s.c.add("LoginThrottle", 1)
	return s.AccessStore.LoginThrottle(ctx, window, limits...)
}

func (s countedAccess) ReserveLoginAttempt(ctx context.Context, window time.Duration, limits ...meta.LoginLimit) (bool, time.Duration, error) {
	s.c.add("ReserveLoginAttempt", 1)
	return s.AccessStore.ReserveLoginAttempt(ctx, window, limits...)
}

func (s countedAccess) ReleaseLoginAttempt(ctx context.Context, key string, all bool) error {
	s.c.add("ReleaseLoginAttempt", 1)
	return s.AccessStore.ReleaseLoginAttempt(ctx, key, all)
}

func (s countedAccess) AppendAudit(ctx context.Context, e meta.AuditEntry) error {
	s.c.add("AppendAudit", 1)
	return s.AccessStore.AppendAudit(ctx, e)
}

// TestQueriesPerPushRequest counts the statements the authorizer sends
// for each request of a push into an organization's repository, and fails
// when a request after the first (which may check a password) costs more
// than the figure of its case: the caller, its account and its standing
// on the repository are resolved once per request. Basic credentials cost
// the account (or the access token) and the login counters, then the
// repository and the caller's standing on it (two statements); a push that
// creates the repository asks for its namespace too. A registry token
// costs its subject's account (checked again on every request, so that a
// disabled or deleted account's tokens stop at once), and the repository
// on writes; a write to a repository made after the token was issued (the
// push that creates it, for the token's life) is decided again, as
// Basic credentials' are: the token's decision was about no repository.
func TestQueriesPerPushRequest(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			key, _ := auth.NewSigningKey()
			tokens, err := auth.NewTokens("berth", "berth", 5*time.Minute, []auth.SigningKey{key})
			if err != nil {
				t.Fatal(err)
			}
			c := &queryCounter{calls: map[string]int{}}
			st := wire.AuthzStores(db)
			st = authz.Stores{Users: countedUsers{st.Users, c}, Repositories: countedRepos{st.Repositories, c}, Access: countedAccess{st.Access, c}}
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			az := authz.New(st, tokens, authz.Options{CreatePrivateRepoOnPush: true, Logger: log})
			driver, _ := fs.New(t.TempDir(), fs.Options{})
			reg := registry.New(wire.RegistryStores(db), driver, registry.Options{Auth: az, Logger: log,
				Policy: oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts()}})
			mux := http.NewServeMux()
			mux.HandleFunc(authz.TokenPath, az.ServeToken)
			mux.Handle("/v2/", reg)
			srv := httptest.NewServer(mux)
			t.Cleanup(srv.Close)

			// alice and the robot acme+ci may write acme/app; alice is in
			// acme's creators team, and an access token may write acme/*.
			h, _ := auth.HashPassword(alicePW)
			root, err := db.Users().CreateUser(ctx, meta.User{Username: "root", SecretHash: h, Superuser: true})
			if err != nil {
				t.Fatal(err)
			}
			alice, err := db.Users().CreateUser(ctx, meta.User{Username: "alice", SecretHash: h})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Organizations().CreateOrganization(ctx, "acme", root.ID); err != nil {
				t.Fatal(err)
			}
			team, err := db.Organizations().PutTeam(ctx, "acme", meta.Team{Name: "creators", Role: "creator"})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Organizations().AddTeamMember(ctx, team.ID, alice.ID); err != nil {
				t.Fatal(err)
			}
			secret, _ := auth.NewSecret(authz.SecretPrefix)
			robot, err := db.Users().CreateRobot(ctx, "acme", "ci", auth.HashSecret(secret))
			if err != nil {
				t.Fatal(err)
			}
			tokSecret, _ := auth.NewSecret(authz.SecretPrefix)
			scopes, _ := json.Marshal([]auth.TokenScope{{Repository: "acme/*", Actions: []string{auth.TokenContentRead, auth.TokenContentWrite}}})
			if _, err := db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: "ci-token", SecretHash: auth.HashSecret(tokSecret), Scopes: scopes}); err != nil {
				t.Fatal(err)
			}
			if err := db.Repositories().EnsureRepository(ctx, "acme/app", meta.Writer{Actor: "root"}); err != nil {
				t.Fatal(err)
			}
			ri, _ := db.Repositories().Repository(ctx, "acme/app")
			for _, id := range []int64{alice.ID, robot.ID} {
				if err := db.Access().SetPermission(ctx, ri.ID, id, 0, "write"); err != nil {
					t.Fatal(err)
				}
			}
			basic := func(user, pw string) func() string {
				return func() string {
					r, _ := http.NewRequest("GET", "/", nil)
					r.SetBasicAuth(user, pw)
					return r.Header.Get("Authorization")
				}
			}
			registryToken := func(user, pw, repo string) func() string {
				return func() string {
					req, _ := http.NewRequest("GET", srv.URL+authz.TokenPath+"?service=berth&scope=repository:"+repo+":pull,push", nil)
					req.SetBasicAuth(user, pw)
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					defer resp.Body.Close()
					var body struct{ Token string }
					if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || body.Token == "" {
						t.Fatalf("token of %s for %s: %d %v", user, repo, resp.StatusCode, err)
					}
					return "Bearer " + body.Token
				}
			}
			for _, tc := range []struct {
				name, repo    string
				authorization func() string
				max           int
			}{
				{"user, Basic credentials", "acme/app", basic("alice", alicePW), 5},
				{"robot, Basic credentials", "acme/app", basic("acme+ci", secret), 5},
				{"access token, Basic credentials", "acme/app", basic("ci-token", tokSecret), 4},
				{"user, registry token", "acme/app", registryToken("alice", alicePW, "acme/app"), 2},
				{"robot, registry token", "acme/app", registryToken("acme+ci", secret, "acme/app"), 2},
				{"user creating the repository, Basic credentials", "acme/new", basic("alice", alicePW), 6},
				{"user creating the repository, registry token", "acme/newer", registryToken("alice", alicePW, "acme/newer"), 5},
			} {
				authorization := tc.authorization()
				c.take()
				counts := pushCounting(t, srv.URL, tc.repo, tc.name, authorization, c)
				var lines []string
				for i, rc := range counts {
					lines = append(lines, fmt.Sprintf("%-24s %2d  %s", rc.request, rc.n, rc.calls))
					if i > 0 && rc.n > tc.max {
						t.Errorf("%s: %s sent %d statements (%s), want at most %d", tc.name, rc.request, rc.n, rc.calls, tc.max)
					}
				}
				t.Logf("%s, statements per request:\n%s", tc.name, strings.Join(lines, "\n"))
			}
		})
	}
}

type requestCount struct {
	request string
	n       int
	calls   string
}

// pushCounting pushes a one-layer image as clients do, one request at a
// time with the same Authorization header, and returns the statements the
// authorizer sent for each request.
func pushCounting(t *testing.T, base, repo, tag, authorization string, c *queryCounter) []requestCount {
	t.Helper()
	config := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	layer := []byte(tag) // a distinct layer for each push
	cd, ld := digest.FromBytes(config), digest.FromBytes(layer)
	manifest := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}]}`, cd, len(config), ld, len(layer))
	steps := []struct {
		method, label, path string
		body                []byte
		want                int
	}{
		{"GET", "base", "/v2/", nil, 200},
		{"HEAD", "layer", "/v2/" + repo + "/blobs/" + ld.String(), nil, 404},
		{"POST", "layer", "/v2/" + repo + "/blobs/uploads/?digest=" + ld.String(), layer, 201},
		{"HEAD", "config", "/v2/" + repo + "/blobs/" + cd.String(), nil, 0},
		{"POST", "config", "/v2/" + repo + "/blobs/uploads/?digest=" + cd.String(), config, 201},
		{"HEAD", "manifest", "/v2/" + repo + "/manifests/v1", nil, 0},
		{"PUT", "manifest", "/v2/" + repo + "/manifests/v1", []byte(manifest), 201},
	}
	var out []requestCount
	for _, s := range steps {
		req, _ := http.NewRequest(s.method, base+s.path, bytes.NewReader(s.body))
		req.Header.Set("Authorization", authorization)
		if s.method == "PUT" {
			req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if s.want != 0 && resp.StatusCode != s.want || resp.StatusCode >= 400 && resp.StatusCode != 404 {
			t.Fatalf("%s %s %s: %d %s", tag, s.method, s.path, resp.StatusCode, b)
		}
		n, calls := c.take()
		out = append(out, requestCount{s.method + " " + s.label, n, calls})
	}
	return out
}
