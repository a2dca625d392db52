package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

func TestUserInitializeDisabled(t *testing.T) {
	e := newUREnv(t, "sqlite", api.Options{})
	e.want("", "POST", "/api/v1/user/initialize", map[string]any{"username": "admin", "password": "password1"}, http.StatusNotFound)
}

func TestUserInitialize(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			e := newUREnv(t, d, api.Options{FeatureUserInitialize: true})
			// Refusals while the database is empty: Quay's 400 {"message"}.
			for _, tc := range []struct {
				name string
				body any
			}{
				{"bad JSON", `{"username":`},
				{"empty body", ``},
				{"unknown field", `{"username":"admin","password":"password1","admin":true}`},
				{"uppercase username", map[string]any{"username": "Admin", "password": "password1"}},
				{"username with slash", map[string]any{"username": "a/b", "password": "password1"}},
				{"username with plus", map[string]any{"username": "a+b", "password": "password1"}},
				{"empty username", map[string]any{"username": "", "password": "password1"}},
				{"short password", map[string]any{"username": "admin", "password": "short"}},
				{"long password", map[string]any{"username": "admin", "password": strings.Repeat("p", 1025)}},
				{"bad email", map[string]any{"username": "admin", "password": "password1", "email": "not an address"}},
			} {
				t.Run(tc.name, func(t *testing.T) {
					r := e.want("", "POST", "/api/v1/user/initialize", tc.body, http.StatusBadRequest)
					if m := r.obj(t); m["message"] == "" || m["message"] == nil {
						t.Fatalf("want Quay's {message}: %s", r.body)
					}
				})
			}
			r := e.call("", "POST", "/api/v1/user/initialize", bigBody("username"))
			if r.status != http.StatusRequestEntityTooLarge || r.obj(t)["message"] == nil {
				t.Fatalf("oversized body: %d %s", r.status, r.body)
			}

			const password = "correct horse battery"
			r = e.want("", "POST", "/api/v1/user/initialize",
				map[string]any{"username": "admin", "password": password, "email": "admin@example.com", "access_token": true}, http.StatusOK)
			m := r.obj(t)
			if m["username"] != "admin" || m["email"] != "admin@example.com" {
				t.Fatalf("answer %s", r.body)
			}
			hash, _ := m["encrypted_password"].(string)
			if !auth.VerifyPassword(hash, password) {
				t.Fatalf("encrypted_password is not the password's hash: %s", r.body)
			}
			token, _ := m["access_token"].(string)
			if !strings.HasPrefix(token, "berth_") {
				t.Fatalf("access_token %q", token)
			}
			if strings.Contains(string(r.body), password) {
				t.Fatal("the answer contains the password")
			}
			e.remember("admin", password, hash)
			e.remember("", token, auth.HashSecret(token))

			u, err := e.db.Users().UserByName(context.Background(), "admin")
			if err != nil || !u.Superuser {
				t.Fatalf("first user %+v, %v: want a superuser", u, err)
			}
			// The password and the access token both work, as the user.
			for _, as := range []string{"admin", "bearer:" + token} {
				me := e.want(as, "GET", "/api/v1/user/", nil, http.StatusOK).obj(t)
				if me["username"] != "admin" || me["super_user"] != true {
					t.Fatalf("as %s: %v", as, me)
				}
			}
			// Once a user exists, never again.
			r = e.want("", "POST", "/api/v1/user/initialize", map[string]any{"username": "second", "password": "password2"}, http.StatusBadRequest)
			if !strings.Contains(r.obj(t)["message"].(string), "non-empty") {
				t.Fatalf("answer %s", r.body)
			}
			if !e.audited("user_initialize") {
				t.Fatal("no user_initialize audit entry")
			}
		})
	}
}

// TestUserInitializeRace: of concurrent initializations exactly one wins.
func TestUserInitializeRace(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			e := newUREnv(t, d, api.Options{FeatureUserInitialize: true})
			const n = 8
			statuses := make([]int, n)
			var wg sync.WaitGroup
			for i := range n {
				wg.Add(1)
				go func() {
					defer wg.Done()
					r := e.call("", "POST", "/api/v1/user/initialize", map[string]any{"username": fmt.Sprintf("admin%d", i), "password": "password-" + fmt.Sprint(i)})
					statuses[i] = r.status
				}()
			}
			wg.Wait()
			ok := 0
			for _, s := range statuses {
				switch s {
				case http.StatusOK:
					ok++
				case http.StatusBadRequest:
				default:
					t.Fatalf("status %d", s)
				}
			}
			count, err := e.db.Users().CountUsers(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if ok != 1 || count != 1 {
				t.Fatalf("%d initializations succeeded and %d users exist; want exactly 1 (statuses %v)", ok, count, statuses)
			}
		})
	}
}

func TestCurrentUser(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		alice := e.user("alice", false)
		e.user("root", true)
		e.org("acme", alice)
		e.org("zeta", alice)
		e.robot("acme", "ci")

		e.want("", "GET", "/api/v1/user/", nil, http.StatusUnauthorized)
		e.want("basic:alice:wrong-password", "GET", "/api/v1/user/", nil, http.StatusUnauthorized)

		m := e.want("alice", "GET", "/api/v1/user/", nil, http.StatusOK).obj(t)
		orgs, _ := json.Marshal(m["organizations"])
		if m["username"] != "alice" || m["email"] != "alice@example.com" || m["super_user"] != false || m["anonymous"] != false ||
			string(orgs) != `[{"name":"acme"},{"name":"zeta"}]` {
			t.Fatalf("alice: %v", m)
		}
		if m := e.want("root", "GET", "/api/v1/user", nil, http.StatusOK).obj(t); m["super_user"] != true {
			t.Fatalf("root: %v", m)
		}
		if m := e.want("acme+ci", "GET", "/api/v1/user/", nil, http.StatusOK).obj(t); m["username"] != "acme+ci" || m["is_robot"] != true {
			t.Fatalf("robot: %v", m)
		}
	})
}

func TestSuperuserUsers(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		e.user("root", true)
		e.user("other-root", true)
		alice := e.user("alice", false)
		e.org("acme", alice)

		const path = "/api/v1/superuser/users/"
		body := map[string]any{"username": "newbie", "email": "newbie@example.com"}
		e.want("", "POST", path, body, http.StatusUnauthorized)
		e.want("alice", "POST", path, body, http.StatusForbidden)
		for _, tc := range []struct {
			name   string
			body   any
			status int
		}{
			{"bad JSON", `{`, http.StatusBadRequest},
			{"unknown field", `{"username":"x1","superuser":true}`, http.StatusBadRequest},
			{"bad username", map[string]any{"username": "Not_Valid!"}, http.StatusBadRequest},
			{"robot-like username", map[string]any{"username": "acme+x"}, http.StatusBadRequest},
			{"bad email", map[string]any{"username": "x2", "email": "@"}, http.StatusBadRequest},
			{"taken by a user", map[string]any{"username": "alice"}, http.StatusBadRequest},
			{"taken by an organization", map[string]any{"username": "acme"}, http.StatusBadRequest},
			{"oversized", bigBody("username"), http.StatusRequestEntityTooLarge},
		} {
			t.Run(tc.name, func(t *testing.T) { e.want("root", "POST", path, tc.body, tc.status) })
		}

		r := e.want("root", "POST", path, body, http.StatusCreated)
		m := r.obj(t)
		pw, _ := m["password"].(string)
		if m["username"] != "newbie" || m["email"] != "newbie@example.com" || len(pw) < 16 {
			t.Fatalf("answer %s", r.body)
		}
		u, err := e.db.Users().UserByName(context.Background(), "newbie")
		if err != nil || u.Superuser {
			t.Fatalf("created %+v, %v", u, err)
		}
		e.remember("newbie", pw, u.SecretHash)
		if m := e.want("newbie", "GET", "/api/v1/user/", nil, http.StatusOK).obj(t); m["username"] != "newbie" {
			t.Fatalf("the generated password does not log in: %v", m)
		}

		// List, read and change users (Quay's superuser panel).
		e.want("", "GET", path, nil, http.StatusUnauthorized)
		e.want("alice", "GET", path, nil, http.StatusForbidden)
		e.want("alice", "GET", path+"newbie", nil, http.StatusForbidden)
		e.want("alice", "PUT", path+"newbie", map[string]any{"enabled": false}, http.StatusForbidden)
		e.robot("acme", "ci")
		listed := func(q string) ([]string, any) {
			m := e.want("root", "GET", path+q, nil, http.StatusOK).obj(t)
			var names []string
			for _, u := range m["users"].([]any) {
				names = append(names, u.(map[string]any)["username"].(string))
			}
			return names, m["next_page"]
		}
		if names, next := listed(""); strings.Join(names, ",") != "alice,newbie,other-root,root" || next != nil {
			t.Fatalf("users %v (next %v): want every user and no robot or organization", names, next)
		}
		names, next := listed("?limit=3")
		if strings.Join(names, ",") != "alice,newbie,other-root" || next != "other-root" {
			t.Fatalf("first page %v, next %v", names, next)
		}
		if names, next := listed("?limit=3&next_page=other-root"); strings.Join(names, ",") != "root" || next != nil {
			t.Fatalf("second page %v, next %v", names, next)
		}
		for _, q := range []string{"?limit=0", "?limit=1001", "?limit=x", "?disabled=maybe"} {
			e.want("root", "GET", path+q, nil, http.StatusBadRequest)
		}
		view := e.want("root", "GET", path+"newbie", nil, http.StatusOK).obj(t)
		if view["kind"] != "user" || view["name"] != "newbie" || view["email"] != "newbie@example.com" || view["enabled"] != true ||
			view["super_user"] != false || view["created"] == "" {
			t.Fatalf("newbie %v", view)
		}
		for _, name := range []string{"nobody", "acme", "acme+ci"} {
			e.want("root", "GET", path+name, nil, http.StatusNotFound)
			e.want("root", "PUT", path+name, map[string]any{"enabled": false}, http.StatusNotFound)
		}
		for _, tc := range []struct {
			name, user string
			body       any
		}{
			{"another superuser", "other-root", map[string]any{"enabled": false}},
			{"oneself", "root", map[string]any{"password": "a new password"}},
			{"nothing", "newbie", map[string]any{}},
			{"superuser flag", "newbie", `{"superuser":true}`},
			{"short password", "newbie", map[string]any{"password": "short"}},
			{"bad email", "newbie", map[string]any{"email": "not an address"}},
			{"enabled of the wrong type", "newbie", `{"enabled":"no"}`},
		} {
			t.Run("refused: "+tc.name, func(t *testing.T) { e.want("root", "PUT", path+tc.user, tc.body, http.StatusBadRequest) })
		}
		oldPassword := pw
		e.want("root", "PUT", path+"newbie", map[string]any{"enabled": false, "email": "n@example.com"}, http.StatusOK)
		e.want("newbie", "GET", "/api/v1/user/", nil, http.StatusUnauthorized)
		if names, _ := listed("?disabled=false"); strings.Join(names, ",") != "alice,other-root,root" {
			t.Fatalf("enabled users %v", names)
		}
		if v := e.want("root", "GET", path+"newbie", nil, http.StatusOK).obj(t); v["enabled"] != false || v["email"] != "n@example.com" {
			t.Fatalf("after disabling: %v", v)
		}
		const newPassword = "a new password for newbie"
		e.remember("", newPassword)
		v := e.want("root", "PUT", path+"newbie", map[string]any{"enabled": true, "password": newPassword}, http.StatusOK).obj(t)
		if v["enabled"] != true {
			t.Fatalf("after enabling: %v", v)
		}
		e.want("basic:newbie:"+oldPassword, "GET", "/api/v1/user/", nil, http.StatusUnauthorized)
		if m := e.want("basic:newbie:"+newPassword, "GET", "/api/v1/user/", nil, http.StatusOK).obj(t); m["username"] != "newbie" {
			t.Fatalf("the new password: %v", m)
		}
		if !e.audited("user_change") {
			t.Fatal("no user_change audit entry")
		}
		e.remember("newbie", newPassword)

		// Delete: the user's repositories go first.
		e.repo("newbie/app", "private")
		e.want("alice", "DELETE", path+"newbie", nil, http.StatusForbidden)
		e.want("", "DELETE", path+"newbie", nil, http.StatusUnauthorized)
		e.want("root", "DELETE", path+"nobody", nil, http.StatusNotFound)
		e.want("root", "DELETE", path+"acme+ci", nil, http.StatusNotFound)
		e.want("root", "DELETE", path+"other-root", nil, http.StatusBadRequest)
		e.want("root", "DELETE", path+"newbie", nil, http.StatusNoContent)
		if _, err := e.db.Users().UserByName(context.Background(), "newbie"); err == nil {
			t.Fatal("user still exists")
		}
		if ri, _ := e.db.Repositories().Repository(context.Background(), "newbie/app"); ri.Exists {
			t.Fatal("the deleted user's repository survived")
		}
		if len(e.events(meta.EventRepoDeleted, "newbie/app")) != 1 {
			t.Fatal("no repo_deleted event")
		}
		e.want("newbie", "GET", "/api/v1/user/", nil, http.StatusUnauthorized)
		if !e.audited("user_create") || !e.audited("user_delete") {
			t.Fatal("missing audit entries")
		}

		// The only owner of an organization is not deleted, nor are their
		// repositories; with a second owner, they are.
		ctx := context.Background()
		e.repo("alice/app", "private")
		if r := e.want("root", "DELETE", path+"alice", nil, http.StatusBadRequest); !strings.Contains(string(r.body), "acme") {
			t.Errorf("refusal %s does not name the organization", r.body)
		}
		if ri, _ := e.db.Repositories().Repository(ctx, "alice/app"); !ri.Exists {
			t.Fatal("a refused deletion deleted the user's repository")
		}
		if _, err := e.db.Users().UserByName(ctx, "alice"); err != nil {
			t.Fatalf("alice after a refused deletion: %v", err)
		}
		carol := e.user("carol", false)
		owners, err := e.db.Organizations().TeamByName(ctx, "acme", meta.OwnersTeam)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.db.Organizations().AddTeamMember(ctx, owners.ID, carol.ID); err != nil {
			t.Fatal(err)
		}
		e.want("root", "DELETE", path+"alice", nil, http.StatusNoContent)
		if members, err := e.db.Organizations().OrgMembers(ctx, "acme"); err != nil || len(members) != 1 || members[0].User.Username != "carol" {
			t.Errorf("acme's members after alice's deletion: %+v %v", members, err)
		}
	})
}

func TestAuditLogs(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		e.user("root", true)
		alice := e.user("alice", false)
		bob := e.user("bob", false)
		e.org("acme", alice)
		team, err := e.db.Organizations().PutTeam(context.Background(), "acme", meta.Team{Name: "devs", Role: "member"})
		if err != nil {
			t.Fatal(err)
		}
		if err := e.db.Organizations().AddTeamMember(context.Background(), team.ID, bob.ID); err != nil {
			t.Fatal(err)
		}
		ctx := context.Background()
		for i := range 60 {
			e.db.Access().AppendAudit(ctx, meta.AuditEntry{Kind: "test_entry", Actor: "alice", IP: "192.0.2.1", Namespace: "acme",
				Metadata: json.RawMessage(fmt.Sprintf(`{"i":%d}`, i))})
		}
		e.db.Access().AppendAudit(ctx, meta.AuditEntry{Kind: "elsewhere", Actor: "acme+ci", Namespace: "other"})

		// Superuser log: everything.
		e.want("", "GET", "/api/v1/superuser/logs", nil, http.StatusUnauthorized)
		e.want("alice", "GET", "/api/v1/superuser/logs", nil, http.StatusForbidden)
		page := e.want("root", "GET", "/api/v1/superuser/logs", nil, http.StatusOK).obj(t)
		logs := page["logs"].([]any)
		first := logs[0].(map[string]any)
		if len(logs) != 50 || page["next_page"] == nil || first["kind"] != "elsewhere" {
			t.Fatalf("superuser logs: %d entries, next %v, first %v", len(logs), page["next_page"], first)
		}
		if p := first["performer"].(map[string]any); p["name"] != "acme+ci" || p["is_robot"] != true {
			t.Fatalf("performer %v", p)
		}

		// Organization log: its admins only, paged.
		const org = "/api/v1/organization/acme/logs"
		e.want("", "GET", org, nil, http.StatusUnauthorized)
		e.want("bob", "GET", org, nil, http.StatusForbidden)
		e.want("alice", "GET", "/api/v1/organization/nope/logs", nil, http.StatusNotFound)
		e.want("alice", "GET", "/api/v1/organization/alice/logs", nil, http.StatusNotFound) // a user, not an organization
		e.want("alice", "GET", "/api/v1/organization/Bad!/logs", nil, http.StatusBadRequest)
		e.want("alice", "GET", org+"?next_page=abc", nil, http.StatusBadRequest)
		e.want("alice", "GET", org+"?next_page=-1", nil, http.StatusBadRequest)
		seen := map[float64]bool{}
		next := ""
		for pages := 0; ; pages++ {
			p := e.want("alice", "GET", org+next, nil, http.StatusOK).obj(t)
			for _, l := range p["logs"].([]any) {
				entry := l.(map[string]any)
				if entry["kind"] != "test_entry" || entry["ip"] != "192.0.2.1" || !strings.HasSuffix(entry["datetime"].(string), " -0000") {
					t.Fatalf("entry %v", entry)
				}
				seen[entry["metadata"].(map[string]any)["i"].(float64)] = true
			}
			np, _ := p["next_page"].(string)
			if np == "" {
				if pages != 1 {
					t.Fatalf("%d pages, want 2", pages+1)
				}
				break
			}
			next = "?next_page=" + np
		}
		if len(seen) != 60 {
			t.Fatalf("saw %d distinct entries over the pages, want 60", len(seen))
		}
		e.want("root", "GET", org, nil, http.StatusOK)
	})
}

func TestAccessTokens(t *testing.T) {
	urDialects(t, func(t *testing.T, e *urEnv) {
		e.user("root", true)
		alice := e.user("alice", false)
		e.user("bob", false)
		e.org("acme", alice)
		e.robot("acme", "ci")
		e.repo("acme/app", "private")
		e.repo("bob/app", "private")

		create := func(as string, body any, status int) map[string]any {
			t.Helper()
			r := e.want(as, "POST", "/api/v1/tokens", body, status)
			if status != http.StatusCreated {
				return nil
			}
			m := r.obj(t)
			secret, _ := m["secret"].(string)
			if !strings.HasPrefix(secret, "berth_") {
				t.Fatalf("secret %q", secret)
			}
			e.remember("", secret, auth.HashSecret(secret))
			return m
		}
		scopes := func(repo string, actions ...string) []map[string]any {
			return []map[string]any{{"repository": repo, "actions": actions}}
		}

		for _, tc := range []struct {
			name   string
			as     string
			body   any
			status int
		}{
			{"anonymous", "", map[string]any{"name": "t1", "scopes": scopes("acme/*", "content/read")}, http.StatusUnauthorized},
			{"bad JSON", "alice", `{"name":`, http.StatusBadRequest},
			{"unknown field", "alice", `{"name":"t1","scopes":[{"repository":"acme/app","actions":["content/read"],"x":1}]}`, http.StatusBadRequest},
			{"oversized", "alice", bigBody("name"), http.StatusRequestEntityTooLarge},
			{"bad name", "alice", map[string]any{"name": "T 1", "scopes": scopes("acme/*", "content/read")}, http.StatusBadRequest},
			{"no scopes", "alice", map[string]any{"name": "t1", "scopes": []any{}}, http.StatusBadRequest},
			{"bad action", "alice", map[string]any{"name": "t1", "scopes": scopes("acme/*", "content/steal")}, http.StatusBadRequest},
			{"no actions", "alice", map[string]any{"name": "t1", "scopes": scopes("acme/*")}, http.StatusBadRequest},
			{"bad repository", "alice", map[string]any{"name": "t1", "scopes": scopes("ACME/*", "content/read")}, http.StatusBadRequest},
			{"negative expiry", "alice", map[string]any{"name": "t1", "scopes": scopes("acme/*", "content/read"), "expires_in": -1}, http.StatusBadRequest},
			{"another's namespace", "alice", map[string]any{"name": "t1", "scopes": scopes("bob/*", "content/read")}, http.StatusForbidden},
			{"one scope outside", "alice", map[string]any{"name": "t1", "scopes": append(scopes("acme/*", "content/read"), scopes("bob/app", "content/read")...)}, http.StatusForbidden},
			{"everything, not superuser", "alice", map[string]any{"name": "t1", "scopes": scopes("*", "content/read")}, http.StatusForbidden},
			{"robot", "acme+ci", map[string]any{"name": "t1", "scopes": scopes("acme/*", "content/read")}, http.StatusForbidden},
			{"name of a user", "root", map[string]any{"name": "bob", "scopes": scopes("*", "content/read")}, http.StatusBadRequest},
		} {
			t.Run(tc.name, func(t *testing.T) { create(tc.as, tc.body, tc.status) })
		}

		all := create("root", map[string]any{"name": "everything", "scopes": scopes("*", "content/read")}, http.StatusCreated)
		ci := create("alice", map[string]any{"name": "acme-ci", "scopes": scopes("acme/*", "content/read", "metadata/read"), "expires_in": 3600}, http.StatusCreated)
		if ci["expires_at"] == nil || ci["created_by"] != "alice" || all["expires_at"] != nil {
			t.Fatalf("created %v / %v", ci, all)
		}
		create("alice", map[string]any{"name": "acme-ci", "scopes": scopes("acme/*", "content/read")}, http.StatusBadRequest) // taken
		create("bob", map[string]any{"name": "bob-own", "scopes": scopes("bob/app", "content/read")}, http.StatusCreated)

		// The secret acts with its scopes only, as bearer or Basic.
		secret := ci["secret"].(string)
		for _, as := range []string{"bearer:" + secret, "basic:acme-ci:" + secret} {
			e.want(as, "GET", "/api/v1/repository/acme/app", nil, http.StatusOK)
			e.want(as, "GET", "/api/v1/repository/bob/app", nil, http.StatusForbidden)
			e.want(as, "DELETE", "/api/v1/repository/acme/app", nil, http.StatusForbidden)
			e.want(as, "POST", "/api/v1/tokens", map[string]any{"name": "t9", "scopes": scopes("acme/app", "content/read")}, http.StatusForbidden)
		}

		// Listing: no secrets; superusers see all, others their own.
		list := func(as string) []string {
			r := e.want(as, "GET", "/api/v1/tokens", nil, http.StatusOK)
			if strings.Contains(string(r.body), "secret") || strings.Contains(string(r.body), "sha256:") {
				t.Fatalf("listing shows a secret or hash: %s", r.body)
			}
			var out struct {
				Tokens []struct {
					Name    string `json:"name"`
					Revoked bool   `json:"revoked"`
				} `json:"tokens"`
			}
			json.Unmarshal(r.body, &out)
			var names []string
			for _, t := range out.Tokens {
				names = append(names, fmt.Sprintf("%s:%t", t.Name, t.Revoked))
			}
			return names
		}
		if got := strings.Join(list("root"), ","); got != "acme-ci:false,bob-own:false,everything:false" {
			t.Fatalf("root lists %s", got)
		}
		if got := strings.Join(list("alice"), ","); got != "acme-ci:false" {
			t.Fatalf("alice lists %s", got)
		}
		e.want("", "GET", "/api/v1/tokens", nil, http.StatusUnauthorized)

		// Revoking: the issuer or a superuser; others' tokens are not found.
		e.want("", "DELETE", "/api/v1/tokens/acme-ci", nil, http.StatusUnauthorized)
		e.want("bob", "DELETE", "/api/v1/tokens/acme-ci", nil, http.StatusNotFound)
		e.want("alice", "DELETE", "/api/v1/tokens/nope", nil, http.StatusNotFound)
		e.want("alice", "DELETE", "/api/v1/tokens/acme-ci", nil, http.StatusNoContent)
		e.want("alice", "DELETE", "/api/v1/tokens/acme-ci", nil, http.StatusNoContent) // idempotent
		e.want("bearer:"+secret, "GET", "/api/v1/repository/acme/app", nil, http.StatusUnauthorized)
		e.want("root", "DELETE", "/api/v1/tokens/bob-own", nil, http.StatusNoContent)
		if got := strings.Join(list("root"), ","); got != "acme-ci:true,bob-own:true,everything:false" {
			t.Fatalf("root lists %s", got)
		}
		if !e.audited("token_create") || !e.audited("token_revoke") {
			t.Fatal("missing token audit entries")
		}
		// The audit log names tokens, never their secrets (checked by call).
		e.want("root", "GET", "/api/v1/superuser/logs", nil, http.StatusOK)
	})
}
