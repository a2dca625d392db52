package api_test

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"sort"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
)

// repoFixture: root (superuser); alice owns namespace alice and
// organization acme; bob has no standing; on acme/app carol reads, dave
// writes, erin administers; frank is in acme's creator team; robot acme+ci.
func repoFixture(t *testing.T, e *urEnv) {
	t.Helper()
	ctx := context.Background()
	e.user("root", true)
	alice := e.user("alice", false)
	frank := e.user("frank", false)
	for _, n := range []string{"bob", "carol", "dave", "erin"} {
		e.user(n, false)
	}
	e.org("acme", alice)
	team, err := e.db.Organizations().PutTeam(ctx, "acme", meta.Team{Name: "builders", Role: "creator"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.db.Organizations().AddTeamMember(ctx, team.ID, frank.ID); err != nil {
		t.Fatal(err)
	}
	e.robot("acme", "ci")
	e.repo("acme/app", "private")
	e.repo("acme/pub", "public")
	e.repo("alice/private", "private")
	e.grant("acme/app", "carol", "read")
	e.grant("acme/app", "dave", "write")
	e.grant("acme/app", "erin", "admin")
}

func TestRepositoryCreate(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		body := func(ns, repo, vis string) map[string]any {
			return map[string]any{"namespace": ns, "repository": repo, "visibility": vis, "description": "d"}
		}
		for _, tc := range []struct {
			name   string
			as     string
			body   any
			status int
		}{
			{"anonymous", "", body("alice", "new", "private"), http.StatusUnauthorized},
			{"bad JSON", "alice", `{"namespace":"alice",`, http.StatusBadRequest},
			{"empty body", "alice", ``, http.StatusBadRequest},
			{"trailing data", "alice", `{"namespace":"alice","repository":"x","visibility":"public"} {}`, http.StatusBadRequest},
			{"unknown field", "alice", `{"namespace":"alice","repository":"x","visibility":"public","owner":"bob"}`, http.StatusBadRequest},
			{"oversized", "alice", bigBody("description"), http.StatusRequestEntityTooLarge},
			{"uppercase name", "alice", body("alice", "App", "private"), http.StatusBadRequest},
			{"empty name", "alice", body("alice", "", "private"), http.StatusBadRequest},
			{"dot-dot name", "alice", body("alice", "../etc", "private"), http.StatusBadRequest},
			{"namespace with slash", "alice", body("alice/x", "app", "private"), http.StatusBadRequest},
			{"bad visibility", "alice", body("alice", "new", "secret"), http.StatusBadRequest},
			{"bad repo_kind", "alice", map[string]any{"namespace": "alice", "repository": "x", "visibility": "public", "repo_kind": "application"}, http.StatusBadRequest},
			{"in another's namespace", "bob", body("alice", "new", "private"), http.StatusForbidden},
			{"reader of the org", "carol", body("acme", "new", "private"), http.StatusForbidden},
			{"robot", "acme+ci", body("acme", "new", "private"), http.StatusForbidden},
			{"existing, as its admin", "alice", body("acme", "app", "private"), http.StatusBadRequest},
			{"existing, as a stranger", "bob", body("acme", "app", "private"), http.StatusForbidden},
			{"unknown namespace", "root", body("ghost", "app", "private"), http.StatusNotFound},
		} {
			t.Run(tc.name, func(t *testing.T) { e.want(tc.as, "POST", "/api/v1/repository", tc.body, tc.status) })
		}
		r := e.want("alice", "POST", "/api/v1/repository", body("acme", "app", "private"), http.StatusBadRequest)
		if !strings.Contains(string(r.body), "Repository already exists") {
			t.Fatalf("answer %s", r.body)
		}

		for _, tc := range []struct{ as, ns, repo, vis string }{
			{"alice", "alice", "new", "private"},
			{"alice", "acme", "team/nested/app", "public"}, // nested names
			{"frank", "acme", "frank-made", "private"},     // creator team
			{"root", "bob", "by-root", "public"},
		} {
			r := e.want(tc.as, "POST", "/api/v1/repository", body(tc.ns, tc.repo, tc.vis), http.StatusCreated)
			if m := r.obj(t); m["namespace"] != tc.ns || m["name"] != tc.repo || m["kind"] != "image" {
				t.Fatalf("answer %s", r.body)
			}
			ri, err := e.db.Repositories().Repository(context.Background(), tc.ns+"/"+tc.repo)
			if err != nil || !ri.Exists || ri.Visibility != tc.vis || ri.Description != "d" {
				t.Fatalf("stored %+v, %v", ri, err)
			}
			if len(e.events(meta.EventRepoCreated, tc.ns+"/"+tc.repo)) != 1 {
				t.Fatal("no repo_created event")
			}
		}
		// The creator administers what it made, as after a push: frank,
		// of a creator team, has no role on acme's other repositories.
		e.want("frank", "GET", "/api/v1/repository/acme/frank-made", nil, http.StatusOK)
		e.want("frank", "PUT", "/api/v1/repository/acme/frank-made", map[string]any{"description": "mine"}, http.StatusOK)
		e.want("frank", "GET", "/api/v1/repository/acme/app", nil, http.StatusForbidden)
		// Quay clients send repo_kind and use the trailing slash too.
		e.want("alice", "POST", "/api/v1/repository/", map[string]any{"namespace": "alice", "repository": "quay", "visibility": "public", "repo_kind": "image"}, http.StatusCreated)
		if !e.audited(meta.EventRepoCreated) {
			t.Fatal("no repo_created audit entry")
		}
	})
}

// listNames lists repositories as a caller, following next_page.
func listNames(t *testing.T, e *urEnv, as, query string) []string {
	t.Helper()
	var names []string
	next := ""
	for range 100 {
		r := e.want(as, "GET", "/api/v1/repository?"+query+next, nil, http.StatusOK)
		var page struct {
			Repositories []struct {
				Namespace, Name string
				IsPublic        bool  `json:"is_public"`
				LastModified    int64 `json:"last_modified"`
				Kind, State     string
			}
			NextPage string `json:"next_page"`
		}
		if err := json.Unmarshal(r.body, &page); err != nil {
			t.Fatal(err)
		}
		for _, repo := range page.Repositories {
			if repo.Kind != "image" || repo.State != "NORMAL" {
				t.Fatalf("item %+v", repo)
			}
			names = append(names, repo.Namespace+"/"+repo.Name)
		}
		if page.NextPage == "" {
			return names
		}
		next = "&next_page=" + page.NextPage
	}
	t.Fatal("endless paging")
	return nil
}

func TestRepositoryList(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		e.user("acme2", false)
		e.repo("acme2/lookalike", "public") // shares the prefix "acme"
		if _, err := e.db.Organizations().CreateOrganization(context.Background(), "acme-x", 0); err != nil {
			t.Fatal(err)
		}
		e.repo("acme-x/other", "public")
		e.repo("acme/team/nested", "private")
		e.image("acme/pub", "latest", 5)

		join := func(s []string) string { return strings.Join(s, ",") }
		for _, tc := range []struct{ as, query, want string }{
			{"", "namespace=acme", "acme/pub"},
			{"bob", "namespace=acme", "acme/pub"},
			{"carol", "namespace=acme", "acme/app,acme/pub"},
			{"alice", "namespace=acme", "acme/app,acme/pub,acme/team/nested"},
			{"root", "namespace=acme", "acme/app,acme/pub,acme/team/nested"},
			{"acme+ci", "namespace=acme", "acme/pub"},
			{"", "public=true", "acme-x/other,acme/pub,acme2/lookalike"},
			{"carol", "public=true", "acme-x/other,acme/app,acme/pub,acme2/lookalike"},
			{"alice", "namespace=alice", "alice/private"},
			{"bob", "namespace=alice", ""},
			{"bob", "starred=true", ""},
		} {
			if got := join(listNames(t, e, tc.as, tc.query)); got != tc.want {
				t.Errorf("%q lists %s: %s, want %s", tc.as, tc.query, got, tc.want)
			}
		}
		e.want("alice", "GET", "/api/v1/repository", nil, http.StatusBadRequest)
		e.want("alice", "GET", "/api/v1/repository?namespace=Bad!", nil, http.StatusBadRequest)
		e.want("alice", "GET", "/api/v1/repository?namespace=acme&next_page=***", nil, http.StatusBadRequest)
		e.want("alice", "GET", "/api/v1/repository?namespace=acme&next_page=QkFE", nil, http.StatusBadRequest) // "BAD"
		// A cursor is sealed: one made up to start after a name of the
		// caller's choosing (to probe where private names fall) is refused,
		// as is the plain name the cursor used to be.
		e.want("bob", "GET", "/api/v1/repository?namespace=acme&next_page="+base64.RawURLEncoding.EncodeToString([]byte("acme/app")), nil, http.StatusBadRequest)

		// last_modified is the time of the latest tag change.
		r := e.want("", "GET", "/api/v1/repository?namespace=acme&last_modified=true", nil, http.StatusOK)
		var page struct {
			Repositories []map[string]any
		}
		json.Unmarshal(r.body, &page)
		if len(page.Repositories) != 1 || page.Repositories[0]["last_modified"] == nil || page.Repositories[0]["description"] != "about acme/pub" {
			t.Fatalf("answer %s", r.body)
		}

		// Paging over many repositories, most of them private to bob.
		ctx := context.Background()
		var want []string
		for i := range 230 {
			name := fmt.Sprintf("acme/r%03d", i)
			vis := "private"
			if i%7 == 0 {
				vis = "public"
			}
			if err := e.db.Repositories().CreateRepository(ctx, name, vis, "", "test", 0); err != nil {
				t.Fatal(err)
			}
			if vis == "public" || i%5 == 0 {
				want = append(want, name)
			}
			if i%5 == 0 {
				e.grant(name, "bob", "read")
			}
		}
		want = append(want, "acme/pub")
		sort.Strings(want)
		if got := listNames(t, e, "bob", "namespace=acme"); join(got) != join(want) {
			t.Fatalf("bob pages through %d repositories, want %d:\n%v\n%v", len(got), len(want), got, want)
		}
		if got := listNames(t, e, "root", "namespace=acme"); len(got) != 233 {
			t.Fatalf("root pages through %d repositories, want 233", len(got))
		}
	})
}

func TestRepositoryGet(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		d := e.image("acme/app", "v1", 100)
		e.index("acme/app", "multi", d)

		e.want("", "GET", "/api/v1/repository/acme/app", nil, http.StatusUnauthorized)
		e.want("bob", "GET", "/api/v1/repository/acme/app", nil, http.StatusForbidden)
		e.want("bob", "GET", "/api/v1/repository/acme/ghost", nil, http.StatusForbidden) // no existence leak
		e.want("alice", "GET", "/api/v1/repository/acme/ghost", nil, http.StatusNotFound)
		e.want("alice", "GET", "/api/v1/repository/acme/Bad", nil, http.StatusBadRequest)
		if m := e.want("", "GET", "/api/v1/repository/acme/pub", nil, http.StatusOK).obj(t); m["is_public"] != true || m["can_write"] != false {
			t.Fatalf("public repository: %v", m)
		}
		for _, tc := range []struct {
			as              string
			canWrite, admin bool
		}{{"carol", false, false}, {"dave", true, false}, {"erin", true, true}, {"alice", true, true}, {"root", true, true}} {
			m := e.want(tc.as, "GET", "/api/v1/repository/acme/app", nil, http.StatusOK).obj(t)
			if m["can_write"] != tc.canWrite || m["can_admin"] != tc.admin {
				t.Errorf("%s: can_write %v can_admin %v", tc.as, m["can_write"], m["can_admin"])
			}
			if m["namespace"] != "acme" || m["name"] != "app" || m["is_public"] != false || m["kind"] != "image" ||
				m["state"] != "NORMAL" || m["is_organization"] != true || m["description"] != "about acme/app" {
				t.Fatalf("view %v", m)
			}
			tags := m["tags"].(map[string]any)
			v1 := tags["v1"].(map[string]any)
			if len(tags) != 2 || v1["manifest_digest"] != d.String() || v1["size"] != float64(102) || tags["multi"].(map[string]any)["size"] != nil {
				t.Fatalf("tags %v", tags)
			}
		}
		if m := e.want("alice", "GET", "/api/v1/repository/acme/app?includeTags=false", nil, http.StatusOK).obj(t); m["tags"] != nil {
			t.Fatalf("includeTags=false: %v", m)
		}
	})
}

func TestRepositoryUpdateDelete(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		const path = "/api/v1/repository/acme/app"
		e.want("", "PUT", path, map[string]any{"description": "x"}, http.StatusUnauthorized)
		e.want("dave", "PUT", path, map[string]any{"description": "x"}, http.StatusForbidden)
		e.want("erin", "PUT", path, `{"description":`, http.StatusBadRequest)
		e.want("erin", "PUT", path, `{"description":"x","visibility":"public"}`, http.StatusBadRequest)
		e.want("erin", "PUT", path, `{}`, http.StatusBadRequest)
		e.want("erin", "PUT", path, `{"description":42}`, http.StatusBadRequest)
		e.want("erin", "PUT", path, bigBody("description"), http.StatusRequestEntityTooLarge)
		e.want("alice", "PUT", "/api/v1/repository/acme/ghost", map[string]any{"description": "x"}, http.StatusNotFound)
		if m := e.want("erin", "PUT", path, map[string]any{"description": "new words"}, http.StatusOK).obj(t); m["success"] != true {
			t.Fatalf("answer %v", m)
		}
		if ri, _ := e.db.Repositories().Repository(context.Background(), "acme/app"); ri.Description != "new words" {
			t.Fatalf("description %q", ri.Description)
		}

		e.want("", "DELETE", path, nil, http.StatusUnauthorized)
		e.want("dave", "DELETE", path, nil, http.StatusForbidden)
		e.want("alice", "DELETE", "/api/v1/repository/acme/ghost", nil, http.StatusNotFound)
		e.want("erin", "DELETE", path, nil, http.StatusNoContent)
		e.want("alice", "GET", path, nil, http.StatusNotFound)
		if len(e.events(meta.EventRepoDeleted, "acme/app")) != 1 {
			t.Fatal("no repo_deleted event")
		}
		if !e.audited(meta.EventRepoDeleted) || !e.audited("set_repo_description") {
			t.Fatal("missing audit entries")
		}
		e.want("erin", "POST", path, nil, http.StatusMethodNotAllowed)
	})
}

func TestRepositoryVisibilityAndState(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		d := e.image("acme/app", "v1", 1)
		const vis, state = "/api/v1/repository/acme/app/changevisibility", "/api/v1/repository/acme/app/changestate"
		e.want("", "POST", vis, map[string]any{"visibility": "public"}, http.StatusUnauthorized)
		e.want("dave", "POST", vis, map[string]any{"visibility": "public"}, http.StatusForbidden)
		e.want("erin", "POST", vis, map[string]any{"visibility": "open"}, http.StatusBadRequest)
		e.want("erin", "POST", vis, `{"visibility":"public","x":1}`, http.StatusBadRequest)
		e.want("erin", "POST", vis, `nope`, http.StatusBadRequest)
		e.want("erin", "PUT", vis, map[string]any{"visibility": "public"}, http.StatusMethodNotAllowed)
		e.want("alice", "POST", "/api/v1/repository/acme/ghost/changevisibility", map[string]any{"visibility": "public"}, http.StatusNotFound)
		if m := e.want("erin", "POST", vis, map[string]any{"visibility": "public"}, http.StatusOK).obj(t); m["success"] != true {
			t.Fatalf("answer %v", m)
		}
		e.want("", "GET", "/api/v1/repository/acme/app", nil, http.StatusOK)
		e.want("erin", "POST", vis, map[string]any{"visibility": "private"}, http.StatusOK)
		e.want("", "GET", "/api/v1/repository/acme/app", nil, http.StatusUnauthorized)

		e.want("dave", "PUT", state, map[string]any{"state": "READ_ONLY"}, http.StatusForbidden)
		e.want("erin", "PUT", state, map[string]any{"state": "FROZEN"}, http.StatusBadRequest)
		e.want("erin", "PUT", state, map[string]any{"state": "read_only"}, http.StatusBadRequest)
		e.want("erin", "PUT", state, map[string]any{"state": "READ_ONLY"}, http.StatusOK)
		// A read-only repository takes no tag changes, not even from its admins.
		e.want("erin", "PUT", "/api/v1/repository/acme/app/tag/v2", map[string]any{"manifest_digest": d.String()}, http.StatusForbidden)
		e.want("root", "DELETE", "/api/v1/repository/acme/app/tag/v1", nil, http.StatusForbidden)
		if m := e.want("erin", "GET", "/api/v1/repository/acme/app", nil, http.StatusOK).obj(t); m["state"] != "READ_ONLY" || m["can_write"] != false {
			t.Fatalf("view %v", m)
		}
		e.want("erin", "PUT", state, map[string]any{"state": "MIRROR"}, http.StatusOK)
		e.want("dave", "PUT", "/api/v1/repository/acme/app/tag/v2", map[string]any{"manifest_digest": d.String()}, http.StatusForbidden)
		e.want("erin", "PUT", state, map[string]any{"state": "NORMAL"}, http.StatusOK)
		e.want("dave", "PUT", "/api/v1/repository/acme/app/tag/v2", map[string]any{"manifest_digest": d.String()}, http.StatusCreated)
		if !e.audited("change_repo_visibility") || !e.audited("change_repo_state") {
			t.Fatal("missing audit entries")
		}
	})
}
