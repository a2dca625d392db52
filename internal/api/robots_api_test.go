package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
)

// robotLifecycle drives create, list, get, regenerate and delete of robot
// short under base as user, proving the token logs in until replaced.
func robotLifecycle(t *testing.T, e *orgEnv, user, base, ns string) {
	const short = "ci"
	name := ns + "+" + short
	path := base + "/robots/" + short

	m := e.createRobot(user, base, short, `{"description":"pushes from CI"}`)
	if m["name"] != name || m["description"] != "pushes from CI" || m["created"] == "" {
		t.Fatalf("create answered %v", m)
	}
	first := m["token"].(string)
	id, err := e.login(name, first)
	if err != nil || id.Kind != auth.KindRobot || id.Name != name {
		t.Fatalf("robot login: %+v, %v", id, err)
	}
	if !e.audited(ns, "robot_create", name) {
		t.Fatal("robot_create not audited")
	}
	e.expect(user, "PUT", path, "", http.StatusBadRequest) // exists

	var list struct {
		Robots []map[string]any `json:"robots"`
	}
	r := e.expect(user, "GET", base+"/robots", "", 200)
	if err := json.Unmarshal(r.body, &list); err != nil || len(list.Robots) != 1 || list.Robots[0]["name"] != name {
		t.Fatalf("list answered %s", r.body)
	}
	if _, ok := list.Robots[0]["token"]; ok {
		t.Fatalf("list shows a token: %s", r.body)
	}
	g := e.expect(user, "GET", path, "", 200).json(t)
	if g["name"] != name || g["created"] != m["created"] {
		t.Fatalf("get answered %v", g)
	}

	rr := e.send(user, "POST", path+"/regenerate", "", true)
	e.check(rr, "POST", path+"/regenerate", 200)
	if rr.header.Get("Cache-Control") != "no-store" {
		t.Fatal("a token answer may be cached")
	}
	re := rr.json(t)
	second, _ := re["token"].(string)
	if re["name"] != name || !strings.HasPrefix(second, authz.SecretPrefix) || second == first {
		t.Fatalf("regenerate answered %v", re)
	}
	e.setSecret(name, second)
	if _, err := e.login(name, first); !errors.Is(err, authz.ErrBadCredentials) {
		t.Fatalf("the old token still logs in: %v", err)
	}
	if _, err := e.login(name, second); err != nil {
		t.Fatalf("the new token does not log in: %v", err)
	}
	if !e.audited(ns, "robot_regenerate", name) {
		t.Fatal("robot_regenerate not audited")
	}
	// The robot authenticates on the API too, but manages no robots.
	e.expect(name, "GET", base+"/robots", "", http.StatusForbidden)

	e.expect(user, "DELETE", path, "", 204)
	e.expect(user, "DELETE", path, "", 404)
	e.expect(user, "GET", path, "", 404)
	e.expect(user, "POST", path+"/regenerate", "", 404)
	if _, err := e.login(name, second); err == nil {
		t.Fatal("a deleted robot logs in")
	}
	if !e.audited(ns, "robot_delete", name) {
		t.Fatal("robot_delete not audited")
	}
}

func TestUserRobots(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		robotLifecycle(t, e, "alice", "/api/v1/user", "alice")

		// Each user sees its own robots only.
		e.createRobot("alice", "/api/v1/user", "deploy", "")
		if m := e.expect("bob", "GET", "/api/v1/user/robots", "", 200).json(t); len(m["robots"].([]any)) != 0 {
			t.Fatalf("bob sees %v", m)
		}
		e.expect("bob", "GET", "/api/v1/user/robots/deploy", "", 404)
		e.expect("bob", "DELETE", "/api/v1/user/robots/deploy", "", 404)
		e.expect("bob", "POST", "/api/v1/user/robots/deploy/regenerate", "", 404)
		if _, err := e.db.Users().UserByName(context.Background(), "alice+deploy"); err != nil {
			t.Fatalf("bob's calls touched alice's robot: %v", err)
		}

		for _, c := range []struct {
			name, short, body string
		}{
			{"uppercase", "CI", ""},
			{"plus", "a+b", ""},
			{"leading separator", "_ci", ""},
			{"too long", strings.Repeat("x", 250), ""},
			{"unknown field", "ok1", `{"description":"x","token":"mine"}`},
			{"malformed JSON", "ok2", `{"description":`},
			{"wrong type", "ok3", `{"description":5}`},
			{"description too long", "ok4", `{"description":"` + strings.Repeat("d", 256) + `"}`},
		} {
			if r := e.do("alice", "PUT", "/api/v1/user/robots/"+c.short, c.body); r.status != http.StatusBadRequest {
				t.Fatalf("%s: status %d, want 400: %s", c.name, r.status, r.body)
			}
		}
		robots, _ := e.db.Users().Robots(context.Background(), "alice")
		if len(robots) != 1 {
			t.Fatalf("refused requests created robots: %v", robots)
		}

		e.expect("", "GET", "/api/v1/user/robots", "", 401)
		e.expect("", "PUT", "/api/v1/user/robots/x", "", 401)
		e.scopedToken("acme-ci-token")
		e.expect("acme-ci-token", "PUT", "/api/v1/user/robots/x", "", 403)
		e.expect("acme-ci-token", "GET", "/api/v1/user/robots", "", 403)
	})
}

func TestOrganizationRobots(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		ctx := context.Background()
		e.createOrg("alice", "acme")
		e.putTeam("alice", "acme", "devs", "creator")
		e.addMember("alice", "acme", "devs", "bob")
		robotLifecycle(t, e, "alice", "/api/v1/organization/acme", "acme")

		const base = "/api/v1/organization/acme/robots"
		e.createRobot("root", "/api/v1/organization/acme", "mirror", "")
		for _, c := range []struct{ method, path string }{
			{"GET", base}, {"GET", base + "/mirror"}, {"PUT", base + "/other"},
			{"DELETE", base + "/mirror"}, {"POST", base + "/mirror/regenerate"},
		} {
			e.expect("bob", c.method, c.path, "", http.StatusForbidden)   // a member, not an admin
			e.expect("carol", c.method, c.path, "", http.StatusForbidden) // an outsider
			e.expect("", c.method, c.path, "", http.StatusUnauthorized)
			e.expect("acme+mirror", c.method, c.path, "", http.StatusForbidden)
		}
		e.expect("alice", "GET", "/api/v1/organization/nope/robots", "", 404)
		e.expect("alice", "PUT", "/api/v1/organization/nope/robots/ci", "", 404)
		e.expect("root", "GET", "/api/v1/organization/bob/robots", "", 404) // a user's namespace

		// A robot a mirror writes as cannot be deleted.
		if err := e.db.Repositories().CreateRepository(ctx, "acme/app", "private", "", "alice", 0); err != nil {
			t.Fatal(err)
		}
		robot := "acme+mirror"
		if err := e.db.Repositories().UpdateRepository(ctx, "acme/app", nil, nil, &robot, nil); err != nil {
			t.Fatal(err)
		}
		r := e.expect("alice", "DELETE", base+"/mirror", "", 400)
		if !strings.Contains(string(r.body), "acme/app") {
			t.Fatalf("refusal does not say which mirror: %s", r.body)
		}
		empty := ""
		if err := e.db.Repositories().UpdateRepository(ctx, "acme/app", nil, nil, &empty, nil); err != nil {
			t.Fatal(err)
		}
		e.expect("alice", "DELETE", base+"/mirror", "", 204)

		// A user's robot and an organization's are told apart.
		e.createRobot("alice", "/api/v1/user", "ci", "")
		e.expect("alice", "GET", base+"/ci", "", 404)
		e.expect("alice", "GET", "/api/v1/user/robots/ci", "", 200)
	})
}
