package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
)

// TestRepositoryCreateWithoutNamespace: Quay's namespace is optional, the
// caller's own namespace when absent; robots and tokens have none.
func TestRepositoryCreateWithoutNamespace(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		body := map[string]any{"repository": "app", "visibility": "private", "description": "x"}
		m := e.want("alice", "POST", "/api/v1/repository", body, http.StatusCreated).obj(t)
		if m["namespace"] != "alice" || m["name"] != "app" || m["kind"] != "image" {
			t.Fatalf("answer %v", m)
		}
		ri, err := e.db.Repositories().Repository(context.Background(), "alice/app")
		if err != nil || !ri.Exists || ri.Visibility != "private" || ri.Description != "x" {
			t.Fatalf("alice/app stored %+v, %v", ri, err)
		}
		// alice administers what she made in her namespace.
		e.want("alice", "GET", "/api/v1/repository/alice/app", nil, http.StatusOK)
		// An empty namespace is an absent one.
		e.want("bob", "POST", "/api/v1/repository/", map[string]any{"namespace": "", "repository": "tool", "visibility": "public"}, http.StatusCreated)
		if ri, err := e.db.Repositories().Repository(context.Background(), "bob/tool"); err != nil || !ri.Exists {
			t.Fatalf("bob/tool stored %+v, %v", ri, err)
		}
		e.want("alice", "POST", "/api/v1/repository", body, http.StatusBadRequest) // exists now

		// Robots and tokens have no namespace of their own.
		token := e.env.AccessToken("acme-token", "alice", []auth.TokenScope{{Repository: "*", Actions: []string{auth.TokenContentWrite}}})
		e.remember("", token)
		for _, as := range []string{"acme+ci", "bearer:" + token} {
			r := e.want(as, "POST", "/api/v1/repository", body, http.StatusBadRequest)
			if !strings.Contains(string(r.body), "namespace required") {
				t.Fatalf("as %s: %s", as, r.body)
			}
		}
		e.want("", "POST", "/api/v1/repository", body, http.StatusUnauthorized)
	})
}

// TestTagListClampsLimitAndPage: Quay brings limit into 1..100 and page to
// at least 1 instead of refusing them; what is no integer stays refused.
func TestTagListClampsLimitAndPage(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		ctx := context.Background()
		d := e.image("acme/app", "t000", 1)
		for i := 1; i <= 100; i++ {
			if err := e.db.Manifests().MoveTag(ctx, "acme/app", fmt.Sprintf("t%03d", i), d, "test"); err != nil {
				t.Fatal(err)
			}
		}
		list := func(query string) map[string]any {
			t.Helper()
			return e.want("carol", "GET", "/api/v1/repository/acme/app/tag/?onlyActiveTags=true&"+query, nil, http.StatusOK).obj(t)
		}
		for _, tc := range []struct {
			query string
			tags  int
			page  float64
			more  bool
		}{
			{"limit=500", 100, 1, true},
			{"limit=100", 100, 1, true},
			{"limit=500&page=2", 1, 2, false}, // 100 a page: the 101st tag
			{"limit=0", 1, 1, true},
			{"limit=-3", 1, 1, true},
			{"limit=99999999999999999999999", 100, 1, true},
			{"limit=10&page=0", 10, 1, true},
			{"limit=10&page=-7", 10, 1, true},
			{"limit=10&page=11", 1, 11, false},
			{"limit=10&page=99999999999999999999999", 0, 0, false},
		} {
			m := list(tc.query)
			tags, _ := m["tags"].([]any)
			if len(tags) != tc.tags || (tc.page != 0 && m["page"] != tc.page) || m["has_additional"] != tc.more {
				t.Errorf("%s: %d tags, page %v, has_additional %v; want %d, %v, %v", tc.query, len(tags), m["page"], m["has_additional"], tc.tags, tc.page, tc.more)
			}
		}
		// page=0 is page 1.
		if a, b := list("limit=7&page=0")["tags"], list("limit=7&page=1")["tags"]; fmt.Sprint(a) != fmt.Sprint(b) {
			t.Errorf("page=0 %v, page=1 %v", a, b)
		}
		for _, q := range []string{"limit=abc", "limit=1.5", "page=x", "page=2.0", "limit=ten&page=1"} {
			e.want("carol", "GET", "/api/v1/repository/acme/app/tag/?"+q, nil, http.StatusBadRequest)
		}
	})
}

// TestCanWriteIsPushRight: can_write says whether the caller may push
// (Quay's write permission), so a token's content/write sets it and its
// metadata/write does not; the repository's state still applies.
func TestCanWriteIsPushRight(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		pusher := e.env.AccessToken("pusher", "alice", []auth.TokenScope{{Repository: "acme/*", Actions: []string{auth.TokenContentRead, auth.TokenContentWrite}}})
		metadata := e.env.AccessToken("metadata", "alice", []auth.TokenScope{{Repository: "acme/*", Actions: []string{auth.TokenMetadataRead, auth.TokenMetadataWrite}}})
		metaOnly := e.env.AccessToken("metadata-write", "alice", []auth.TokenScope{{Repository: "acme/pub", Actions: []string{auth.TokenMetadataWrite}}})
		e.remember("", pusher)
		e.remember("", metadata)
		e.remember("", metaOnly)
		canWrite := func(as, repo string) any {
			t.Helper()
			return e.want(as, "GET", "/api/v1/repository/"+repo+"?includeTags=false", nil, http.StatusOK).obj(t)["can_write"]
		}
		for _, tc := range []struct {
			as, repo string
			want     bool
		}{
			{"bearer:" + pusher, "acme/app", true},
			{"bearer:" + pusher, "acme/pub", true},
			{"bearer:" + metadata, "acme/app", false},
			{"bearer:" + metaOnly, "acme/pub", false}, // reads the public repository
			{"dave", "acme/app", true},
			{"carol", "acme/app", false},
			{"alice", "acme/app", true},
		} {
			if got := canWrite(tc.as, tc.repo); got != tc.want {
				t.Errorf("%.20s on %s: can_write %v, want %v", tc.as, tc.repo, got, tc.want)
			}
		}
		// A read-only repository takes no push, from anyone.
		e.want("alice", "PUT", "/api/v1/repository/acme/app/changestate", map[string]any{"state": "READ_ONLY"}, http.StatusOK)
		for _, as := range []string{"bearer:" + pusher, "dave", "alice"} {
			if got := canWrite(as, "acme/app"); got != false {
				t.Errorf("%.20s on read-only acme/app: can_write %v", as, got)
			}
		}
	})
}

// TestRobotCreateWithUnstructuredMetadata: Quay's robot body carries an
// optional unstructured_metadata object, which Berth accepts and ignores.
func TestRobotCreateWithUnstructuredMetadata(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		for i, body := range []string{
			`{"description":"x","unstructured_metadata":{}}`,
			`{"unstructured_metadata":{"team":"platform","n":[1,2]}}`,
			`{"description":"x","unstructured_metadata":null}`,
		} {
			short := fmt.Sprintf("bot%d", i)
			r := e.want("alice", "PUT", "/api/v1/organization/acme/robots/"+short, body, http.StatusCreated)
			m := r.obj(t)
			token, _ := m["token"].(string)
			if m["name"] != "acme+"+short || token == "" {
				t.Fatalf("%s: answer without its name or token: %v", body, m)
			}
			e.remember("", token)
			e.want("alice", "GET", "/api/v1/organization/acme/robots/"+short, nil, http.StatusOK)
		}
		e.want("alice", "PUT", "/api/v1/user/robots/mine", `{"description":"x","unstructured_metadata":{}}`, http.StatusCreated)
		// It is an object, or nothing.
		for _, bad := range []string{`{"unstructured_metadata":"x"}`, `{"unstructured_metadata":[1]}`, `{"unstructured_metadata":{},"owner":"bob"}`} {
			e.want("alice", "PUT", "/api/v1/organization/acme/robots/refused", bad, http.StatusBadRequest)
		}
	})
}

// TestHeadOnRepositoryEndpoints: the repository dispatcher answers HEAD
// as GET, without a body, as every other route does.
func TestHeadOnRepositoryEndpoints(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		repoFixture(t, e)
		e.image("acme/app", "v1", 1)
		for _, path := range []string{
			"/api/v1/repository/acme/app",
			"/api/v1/repository/acme/app/",
			"/api/v1/repository/acme/app/-",
			"/api/v1/repository/acme/app/tag/",
			"/api/v1/repository/acme/app/-/tag/",
			"/api/v1/repository/acme/app/permissions/user/",
			"/api/v1/repository/acme/app/permissions/user/dave",
			"/api/v1/repository/acme/app/logs",
			"/api/v1/repository/?namespace=acme",
			"/api/v1/repository/",               // 400 as GET: no namespace
			"/api/v1/repository?namespace=acme", // the mux route, for comparison
			"/api/v1/repository/acme/nosuch",
			"/api/v1/repository/acme/app/nosuchthing/",
			"/api/v1/repository/acme/app/tag/v1", // PUT and DELETE only: 405
		} {
			for _, as := range []string{"alice", "bob", ""} {
				get, head := e.call(as, "GET", path, nil), e.call(as, "HEAD", path, nil)
				if head.status != get.status || len(head.body) != 0 || head.header.Get("Content-Type") != get.header.Get("Content-Type") {
					t.Errorf("HEAD %s as %q: %d with %d bytes (%q); GET: %d (%q)", path, as, head.status, len(head.body),
						head.header.Get("Content-Type"), get.status, get.header.Get("Content-Type"))
				}
			}
		}
		if r := e.call("alice", "HEAD", "/api/v1/repository/acme/app", nil); r.status != http.StatusOK {
			t.Fatalf("HEAD acme/app: %d", r.status)
		}
		if r := e.call("alice", "HEAD", "/api/v1/repository/?namespace=acme", nil); r.status != http.StatusOK {
			t.Fatalf("HEAD /api/v1/repository/?namespace=acme: %d", r.status)
		}
		r := e.call("alice", "HEAD", "/api/v1/repository/acme/app/tag/v1", nil)
		if r.status != http.StatusMethodNotAllowed || r.header.Get("Allow") != "PUT, DELETE" {
			t.Fatalf("HEAD of a tag: %d, Allow %q", r.status, r.header.Get("Allow"))
		}
		// HEAD changes nothing.
		if ri, err := e.db.Repositories().Repository(context.Background(), "acme/app"); err != nil || !ri.Exists {
			t.Fatalf("acme/app after HEADs: %+v, %v", ri, err)
		}
	})
}
