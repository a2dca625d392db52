package api_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
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

// ReadableDependentsPage is the store's (api.Graph), for storeGraph.
func (g *storeGraph) ReadableDependentsPage(ctx context.Context, repo string, d digest.Digest, q meta.DependentsQuery) (meta.DependentsPage, error) {
	return g.db.Graph().ReadableDependentsPage(ctx, repo, d, q)
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
// reads (1,000) stops there, with one decision per repository read, says
// that the list was cut, and gives a next_page that goes on where it
// stopped: the caller pages through, each page as bounded, and finds the
// public dependent past the private ones; a tenant finds their own
// private dependent the same way. A next_page is good only for the base,
// digest and transitive flag it was given for, and a tampered one is
// refused. Before 172697b one answer read up to 50,000 dependents,
// asking a decision for each repository; after it, the answer stopped at
// 1,000 with truncated and no way on, so a tenant whose dependent sorts
// after 1,000 others' could not reach it through the API.
func TestDependentsBoundsDecisions(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e, c := newCountingEnv(t, dialect)
			root := e.user("root", true)
			e.user("zed", false)
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
			// zed's own dependent, private, after the 1,100 others'.
			e.repo("zzz/own", "private")
			e.grant("zzz/own", "zed", "read")
			if err := dependent("zzz/own"); err != nil {
				t.Fatal(err)
			}

			path := "/api/v1/repository/pub/base/manifest/" + bd.String() + "/dependents"
			// pages lists the dependents as one caller, page after page,
			// checking the decisions each page asks.
			pages := func(as, query string) (names []string, first map[string]any) {
				t.Helper()
				next := ""
				for page := 1; ; page++ {
					u := path + "?" + query
					if next != "" {
						u += "&next_page=" + url.QueryEscape(next)
					}
					c.n.Store(0)
					got := e.want(as, "GET", u, nil, http.StatusOK).obj(t)
					if n := c.n.Load(); n > 1010 {
						t.Errorf("page %d as %q asked %d permission decisions; want at most the 1,000 dependents read and a few more", page, as, n)
					}
					if page == 1 {
						first = got
					}
					deps, _ := got["dependents"].([]any)
					for _, d := range deps {
						names = append(names, d.(map[string]any)["repository"].(string))
					}
					np, _ := got["next_page"].(string)
					if (np != "") != (got["truncated"] == true) {
						t.Fatalf("page %d as %q: next_page %q but truncated %v; want next_page exactly when truncated", page, as, np, got["truncated"])
					}
					if np == "" {
						return names, first
					}
					if page == 3 {
						t.Fatalf("as %q: still a next_page after 3 pages of %d dependents", as, hidden+2)
					}
					next = np
				}
			}
			for _, query := range []string{"transitive=true", "transitive=false"} {
				names, first := pages("", query)
				if deps, _ := first["dependents"].([]any); len(deps) != 0 || first["truncated"] != true {
					t.Errorf("anonymous dependents (%s), first page: %v, truncated %v; want none yet, and the list said to be cut", query, deps, first["truncated"])
				}
				if strings.Join(names, " ") != "zzz/app" {
					t.Errorf("anonymous dependents (%s), every page: %v; want zzz/app", query, names)
				}
			}
			if names, _ := pages("zed", "transitive=true"); strings.Join(names, " ") != "zzz/app zzz/own" {
				t.Errorf("zed's dependents, every page: %v; want zzz/app and zzz/own", names)
			}

			// A next_page is only good where it was given.
			first := e.want("", "GET", path+"?transitive=true", nil, http.StatusOK).obj(t)
			np, _ := first["next_page"].(string)
			if np == "" {
				t.Fatalf("no next_page: %v", first["truncated"])
			}
			other := e.image("pub/base", "2", 11)
			e.repo("zzz/base", "public")
			od := e.image("zzz/base", "1", 12)
			for _, u := range []string{
				path + "?transitive=false&next_page=" + url.QueryEscape(np),
				path + "?next_page=" + url.QueryEscape(np),
				"/api/v1/repository/pub/base/manifest/" + other.String() + "/dependents?transitive=true&next_page=" + url.QueryEscape(np),
				"/api/v1/repository/zzz/base/manifest/" + od.String() + "/dependents?transitive=true&next_page=" + url.QueryEscape(np),
				path + "?transitive=true&next_page=" + url.QueryEscape(tamper(np)),
				path + "?transitive=true&next_page=" + url.QueryEscape(np[:len(np)/2]),
				path + "?transitive=true&next_page=not-a-token",
			} {
				e.want("", "GET", u, nil, http.StatusBadRequest)
			}
			e.want("", "GET", path+"?transitive=true&next_page="+url.QueryEscape(np), nil, http.StatusOK)
		})
	}
}

// tamper changes one character in the middle of a next_page.
func tamper(np string) string {
	b := []byte(np)
	i := len(b) / 2
	if b[i] == 'A' {
		b[i] = 'B'
	} else {
		b[i] = 'A'
	}
	return string(b)
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
