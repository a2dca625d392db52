package api_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/testenv"
)

// countingAuth is the environment's authorizer (set once it is made),
// counting the permission decisions asked of it, and failing those about
// the repository fail.
type countingAuth struct {
	api.Authenticator
	n    atomic.Int64
	fail string
}

func (c *countingAuth) Decide(ctx context.Context, id auth.Identity, repo, action string) (bool, error) {
	c.n.Add(1)
	if repo == c.fail {
		return false, errors.New("the store is unavailable")
	}
	return c.Authenticator.Decide(ctx, id, repo, action)
}

// newCountingEnv is newUREnv over the graph, with the API's decisions
// counted.
func newCountingEnv(t *testing.T, dialect string) (*urEnv, *countingAuth) {
	t.Helper()
	g, c := &storeGraph{}, &countingAuth{}
	logs := &testenv.LogBuffer{}
	env := testenv.New(t, testenv.Options{Dialect: dialect, API: api.Options{Graph: g}, APIAuth: c,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	c.Authenticator, g.db = env.Authz, env.DB
	return &urEnv{t: t, env: env, db: env.DB, url: env.URL, log: logs}, c
}

// TestDependentsBoundsDecisions: an anonymous listing of the dependents
// of a public base built on by more private repositories than one answer
// reads (1,000) stops there, with one decision per repository read, and
// says that the list was cut. Before, one answer read up to 50,000
// dependents, asking a decision for each repository (and listing the
// tags of each one returned). (The bound is the API's; the store's
// listing is tested on every dialect in meta: one dialect is enough here.)
func TestDependentsBoundsDecisions(t *testing.T) {
	for _, dialect := range testenv.Dialects()[:1] {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e, c := newCountingEnv(t, dialect)
			root := e.user("root", true)
			for _, ns := range []string{"pub", "aaa", "zzz"} {
				e.org(ns, root)
			}
			base := e.repo("pub/base", "public")
			bd := e.image("pub/base", "1", 10)
			link := []meta.BaseLink{{RepositoryID: base.ID, Digest: bd, Method: "layers", Level: 1, Layers: 1}}
			// dependent stores an image in repo (made private if it is new),
			// recorded as built on the base.
			dependent := func(repo string) error {
				content := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"layers":[],"n":%q}`, oci.MediaTypeImageManifest, repo)
				m := meta.Manifest{Digest: digest.FromBytes(content), MediaType: oci.MediaTypeImageManifest, Size: int64(len(content)), Content: content}
				if err := e.db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: m, Generated: true}); err != nil {
					return err
				}
				return e.db.Graph().SetBases(ctx, repo, m.Digest, link)
			}
			const hidden = 1100
			for i := range hidden {
				if err := dependent(fmt.Sprintf("aaa/r-%04d", i)); err != nil {
					t.Fatal(err)
				}
			}
			e.repo("zzz/app", "public")
			if err := dependent("zzz/app"); err != nil {
				t.Fatal(err)
			}

			c.n.Store(0)
			got := e.want("", "GET", "/api/v1/repository/pub/base/manifest/"+bd.String()+"/dependents?transitive=true", nil, http.StatusOK).obj(t)
			if n := c.n.Load(); n > 1010 {
				t.Errorf("one anonymous answer asked %d permission decisions; want at most the 1,000 dependents read and a few more", n)
			}
			if deps, _ := got["dependents"].([]any); len(deps) != 0 || got["truncated"] != true {
				t.Errorf("anonymous dependents: %v, truncated %v; want none yet, and the list said to be cut", deps, got["truncated"])
			}
		})
	}
}

// TestDependentsDecisionFailureIsAnError: a permission decision that
// fails (the store) fails the answer, rather than leaving the dependent
// out as if the caller may not read it. Before, the answer was 200
// without it.
func TestDependentsDecisionFailureIsAnError(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e, c := newCountingEnv(t, dialect)
			root := e.user("root", true)
			e.org("pub", root)
			e.org("team", root)
			base := e.repo("pub/base", "public")
			bd := e.image("pub/base", "1", 10)
			e.repo("team/app", "public")
			ad := e.image("team/app", "1", 11)
			if err := e.db.Graph().SetBases(ctx, "team/app", ad, []meta.BaseLink{{RepositoryID: base.ID, Digest: bd, Method: "layers", Level: 1, Layers: 1}}); err != nil {
				t.Fatal(err)
			}
			// Each side's other repository's decision fails.
			for _, c2 := range []struct{ repo, path, fail string }{
				{"pub/base", "/manifest/" + bd.String() + "/dependents", "team/app"},
				{"team/app", "/manifest/" + ad.String() + "/bases", "pub/base"},
			} {
				c.fail = c2.fail
				e.want("", "GET", "/api/v1/repository/"+c2.repo+c2.path, nil, http.StatusInternalServerError)
			}
		})
	}
}

// TestAuditRecordsIPv6WithoutBrackets: the audit log names an IPv6
// client by its address, as login failures do ("2001:db8::1"), not with
// the brackets of host:port. Before, the API kept "[2001:db8::1]".
func TestAuditRecordsIPv6WithoutBrackets(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newUREnv(t, dialect, api.Options{})
			e.user("alice", false)
			req := httptest.NewRequest(http.MethodPost, "/api/v1/organization/", strings.NewReader(`{"name":"acme"}`))
			req.RemoteAddr = "[2001:db8::1]:1234"
			req.Header.Set("Content-Type", "application/json")
			req.SetBasicAuth("alice", e.env.Secret("alice"))
			w := httptest.NewRecorder()
			e.env.API.ServeHTTP(w, req)
			if w.Code != http.StatusCreated {
				t.Fatalf("create the organization = %d: %s", w.Code, w.Body)
			}
			entries, err := e.db.Access().AuditLog(context.Background(), "acme", 0, 10)
			if err != nil {
				t.Fatal(err)
			}
			for _, a := range entries {
				if a.Kind == "org_create" {
					if a.IP != "2001:db8::1" {
						t.Errorf("org_create's IP %q, want 2001:db8::1", a.IP)
					}
					return
				}
			}
			t.Fatalf("no org_create entry: %v", entries)
		})
	}
}
