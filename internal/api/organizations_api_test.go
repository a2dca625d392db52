package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
)

func TestOrganizationCreate(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		r := e.expect("alice", "POST", "/api/v1/organization/", `{"name":"acme","email":"ops@acme.example"}`, http.StatusCreated)
		var s string
		if err := json.Unmarshal(r.body, &s); err != nil || s != "Created" {
			t.Fatalf("create answered %s, want \"Created\"", r.body)
		}
		if role := e.orgRole("acme", "alice"); role != "admin" {
			t.Fatalf("creator's role %q, want admin", role)
		}
		if !e.audited("acme", "org_create", `"acme"`) {
			t.Fatal("org_create not audited")
		}
		// Without the trailing slash too.
		e.expect("bob", "POST", "/api/v1/organization", `{"name":"bobco"}`, http.StatusCreated)

		const path = "/api/v1/organization/"
		for _, c := range []struct {
			name, body string
			status     int
		}{
			{"taken by an organization", `{"name":"acme"}`, 400},
			{"taken by a user", `{"name":"carol"}`, 400},
			{"uppercase", `{"name":"Acme"}`, 400},
			{"slash", `{"name":"a/b"}`, 400},
			{"plus", `{"name":"a+b"}`, 400},
			{"empty", `{"name":""}`, 400},
			{"leading separator", `{"name":"-acme"}`, 400},
			{"too long", `{"name":"` + strings.Repeat("a", 256) + `"}`, 400},
			{"bad email", `{"name":"newco","email":"not an address"}`, 400},
			{"unknown field", `{"name":"newco","plan":"gold"}`, 400},
			{"malformed JSON", `{"name":`, 400},
			{"trailing data", `{"name":"newco"} {}`, 400},
			{"no body", ``, 400},
		} {
			if r := e.do("carol", "POST", path, c.body); r.status != c.status {
				t.Fatalf("%s: status %d, want %d: %s", c.name, r.status, c.status, r.body)
			}
		}
		if _, err := e.db.Users().NamespaceByName(context.Background(), "newco"); err == nil {
			t.Fatal("a refused request created newco")
		}

		e.expect("", "POST", path, `{"name":"anonco"}`, http.StatusUnauthorized)
		e.setSecret("mallory", "wrong")
		e.expect("mallory", "POST", path, `{"name":"malco"}`, http.StatusUnauthorized)
		e.createRobot("alice", "/api/v1/user", "ci", "")
		e.expect("alice+ci", "POST", path, `{"name":"robotco"}`, http.StatusForbidden)
		e.scopedToken("acme-ci-token")
		e.expect("acme-ci-token", "POST", path, `{"name":"tokenco"}`, http.StatusForbidden)
	})
}

// scopedToken creates an access token with every action on acme/*.
func (e *orgEnv) scopedToken(name string) {
	e.t.Helper()
	secret, err := auth.NewSecret("berth_")
	if err != nil {
		e.t.Fatal(err)
	}
	scopes, _ := json.Marshal([]auth.TokenScope{{Repository: "acme/*", Actions: []string{auth.TokenContentRead, auth.TokenContentWrite, auth.TokenMetadataRead, auth.TokenMetadataWrite}}})
	if _, err := e.db.Access().CreateAccessToken(context.Background(), meta.AccessToken{Name: name, SecretHash: auth.HashSecret(secret), Scopes: scopes}); err != nil {
		e.t.Fatal(err)
	}
	e.setSecret(name, secret)
}

func TestOrganizationGet(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		e.createOrg("alice", "acme")
		e.putTeam("alice", "acme", "devs", "member")
		e.addMember("alice", "acme", "devs", "bob")

		m := e.expect("alice", "GET", "/api/v1/organization/acme", "", 200).json(t)
		if m["name"] != "acme" || m["is_admin"] != true || m["is_member"] != true {
			t.Fatalf("owner's view %v", m)
		}
		teams, _ := m["teams"].(map[string]any)
		owners, _ := teams["owners"].(map[string]any)
		devs, _ := teams["devs"].(map[string]any)
		if owners["role"] != "admin" || owners["member_count"] != 1.0 || devs["role"] != "member" || devs["member_count"] != 1.0 || devs["name"] != "devs" {
			t.Fatalf("teams %v", teams)
		}

		m = e.expect("bob", "GET", "/api/v1/organization/acme", "", 200).json(t)
		if m["is_admin"] != false || m["is_member"] != true || m["teams"] != nil {
			t.Fatalf("member's view %v (teams are for administrators)", m)
		}
		for _, who := range []string{"carol", ""} {
			m = e.expect(who, "GET", "/api/v1/organization/acme", "", 200).json(t)
			if m["name"] != "acme" || m["is_admin"] != false || m["is_member"] != false || m["teams"] != nil || m["email"] != "" {
				t.Fatalf("non-member %q's view %v", who, m)
			}
		}
		m = e.expect("root", "GET", "/api/v1/organization/acme", "", 200).json(t)
		if m["is_admin"] != true || m["teams"] == nil {
			t.Fatalf("superuser's view %v", m)
		}
		e.expect("alice", "GET", "/api/v1/organization/nope", "", 404)
		e.expect("alice", "GET", "/api/v1/organization/bob", "", 404) // a user's namespace

		// A registry token (even a pull-scoped one) must not act as its
		// user on the API.
		tok, _, err := e.tokens.Issue("alice", auth.KindUser, 0, nil, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		req, _ := http.NewRequest("GET", e.url+"/api/v1/organization/acme", nil)
		req.Header.Set("Authorization", "Bearer "+tok)
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var v map[string]any
		json.NewDecoder(res.Body).Decode(&v)
		res.Body.Close()
		if res.StatusCode != 401 || v["is_admin"] != nil {
			t.Fatalf("registry token on the API: %d %v", res.StatusCode, v)
		}
	})
}

func TestOrganizationUpdate(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		e.createOrg("alice", "acme")
		e.addMember("alice", "acme", "owners", "bob")
		e.putTeam("alice", "acme", "devs", "creator")
		e.addMember("alice", "acme", "devs", "carol")

		m := e.expect("bob", "PUT", "/api/v1/organization/acme", `{}`, 200).json(t)
		if m["name"] != "acme" || m["is_admin"] != true {
			t.Fatalf("update answered %v", m)
		}
		if m := e.expect("alice", "PUT", "/api/v1/organization/acme", `{"email":"ops@acme.example"}`, 200).json(t); m["email"] != "ops@acme.example" {
			t.Fatalf("e-mail not kept: %v", m)
		}
		if m := e.expect("alice", "GET", "/api/v1/organization/acme", "", 200).json(t); m["email"] != "ops@acme.example" {
			t.Fatalf("e-mail not shown to an admin: %v", m)
		}
		e.expect("alice", "PUT", "/api/v1/organization/acme", `{"email":"nope"}`, 400)
		e.expect("alice", "PUT", "/api/v1/organization/acme", `{"tag_expiration_s":5}`, 400)
		e.expect("alice", "PUT", "/api/v1/organization/acme", `{`, 400)
		e.expect("carol", "PUT", "/api/v1/organization/acme", `{}`, 403) // creator is not admin
		e.expect("", "PUT", "/api/v1/organization/acme", `{}`, 401)
		e.expect("alice", "PUT", "/api/v1/organization/nope", `{}`, 404)
	})
}

func TestOrganizationDelete(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		ctx := context.Background()
		e.createOrg("alice", "acme")
		e.createRobot("alice", "/api/v1/organization/acme", "ci", "")
		e.addMember("alice", "acme", "owners", "acme+ci")
		if err := e.db.Repositories().CreateRepository(ctx, "acme/app", "private", "", "alice", 0); err != nil {
			t.Fatal(err)
		}
		e.expect("", "DELETE", "/api/v1/organization/acme", "", 401)
		e.expect("bob", "DELETE", "/api/v1/organization/acme", "", 403)
		e.expect("acme+ci", "DELETE", "/api/v1/organization/acme", "", 403) // a robot in owners does not administer
		r := e.expect("alice", "DELETE", "/api/v1/organization/acme", "", 400)
		if !strings.Contains(string(r.body), "repositories") {
			t.Fatalf("refusal does not say why: %s", r.body)
		}
		if err := e.db.Repositories().DeleteRepository(ctx, "acme/app", "alice"); err != nil {
			t.Fatal(err)
		}
		e.expect("alice", "DELETE", "/api/v1/organization/acme", "", 204)
		e.expect("alice", "GET", "/api/v1/organization/acme", "", 404)
		e.expect("alice", "DELETE", "/api/v1/organization/acme", "", 404)
		if _, err := e.db.Users().UserByName(ctx, "acme+ci"); err == nil {
			t.Fatal("the organization's robot survived it")
		}
		if _, err := e.login("acme+ci", e.env.Secret("acme+ci")); err == nil {
			t.Fatal("the deleted organization's robot still logs in")
		}
		if !e.audited("acme", "org_delete", "acme") {
			t.Fatal("org_delete not audited")
		}
		// The name is free again, and a user's namespace is no organization.
		e.createOrg("bob", "acme")
		e.expect("root", "DELETE", "/api/v1/organization/acme", "", 204)
		e.expect("root", "DELETE", "/api/v1/organization/carol", "", 404)
	})
}

func TestOrganizationMembers(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		ctx := context.Background()
		e.createOrg("alice", "acme")
		e.putTeam("alice", "acme", "devs", "member")
		e.putTeam("alice", "acme", "ops", "creator")
		e.addMember("alice", "acme", "devs", "bob")
		e.addMember("alice", "acme", "ops", "bob")
		e.createRobot("alice", "/api/v1/organization/acme", "ci", "")
		e.addMember("alice", "acme", "devs", "acme+ci")
		if err := e.db.Repositories().CreateRepository(ctx, "acme/app", "private", "", "alice", 0); err != nil {
			t.Fatal(err)
		}
		repo, _ := e.db.Repositories().Repository(ctx, "acme/app")
		bob, _ := e.db.Users().UserByName(ctx, "bob")
		if err := e.db.Access().SetPermission(ctx, repo.ID, bob.ID, 0, "write"); err != nil {
			t.Fatal(err)
		}

		var got struct {
			Members []struct {
				Name         string                  `json:"name"`
				Kind         string                  `json:"kind"`
				Teams        []struct{ Name string } `json:"teams"`
				Repositories []string                `json:"repositories"`
			} `json:"members"`
		}
		r := e.expect("alice", "GET", "/api/v1/organization/acme/members", "", 200)
		if err := json.Unmarshal(r.body, &got); err != nil {
			t.Fatal(err)
		}
		summary := map[string]string{}
		for _, m := range got.Members {
			var teams []string
			for _, t := range m.Teams {
				teams = append(teams, t.Name)
			}
			summary[m.Name] = m.Kind + " " + strings.Join(teams, ",") + " " + strings.Join(m.Repositories, ",")
		}
		want := map[string]string{"alice": "user owners ", "bob": "user devs,ops acme/app", "acme+ci": "robot devs "}
		if !reflect.DeepEqual(summary, want) {
			t.Fatalf("members %v, want %v", summary, want)
		}
		m := e.expect("root", "GET", "/api/v1/organization/acme/members/bob", "", 200).json(t)
		if m["name"] != "bob" || m["kind"] != "user" {
			t.Fatalf("member bob %v", m)
		}
		e.expect("alice", "GET", "/api/v1/organization/acme/members/carol", "", 404)
		e.expect("bob", "GET", "/api/v1/organization/acme/members", "", 403)
		e.expect("", "GET", "/api/v1/organization/acme/members", "", 401)
		e.expect("alice", "GET", "/api/v1/organization/nope/members", "", 404)

		// Removing a member takes it out of every team and revokes its
		// direct permissions on the organization's repositories.
		e.expect("bob", "DELETE", "/api/v1/organization/acme/members/acme+ci", "", 403)
		e.expect("alice", "DELETE", "/api/v1/organization/acme/members/bob", "", 204)
		if role := e.orgRole("acme", "bob"); role != "" {
			t.Fatalf("bob still has role %q", role)
		}
		if perms, _ := e.db.Access().RepoPermissions(ctx, repo.ID, "acme", "user", "bob"); len(perms) != 0 {
			t.Fatalf("bob's permissions survived: %v", perms)
		}
		if !e.audited("acme", "team_member_remove", `"bob"`) {
			t.Fatal("removal not audited")
		}
		e.expect("alice", "DELETE", "/api/v1/organization/acme/members/bob", "", 404)
		e.expect("alice", "DELETE", "/api/v1/organization/acme/members/nobody", "", 404)
		e.expect("alice", "DELETE", "/api/v1/organization/acme/members/acme+ci", "", 204)
		// The last owner stays.
		r = e.expect("alice", "DELETE", "/api/v1/organization/acme/members/alice", "", 400)
		if !strings.Contains(string(r.body), "last owner") {
			t.Fatalf("refusal does not say why: %s", r.body)
		}
		e.expect("root", "DELETE", "/api/v1/organization/acme/members/alice", "", 400)
	})
}

// TestSuperuserOrganizations: superusers list every organization with its
// owners; everyone else is refused.
func TestSuperuserOrganizations(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		const path = "/api/v1/superuser/organizations/"
		if r := e.expect("root", "GET", path, "", http.StatusOK); string(r.body) != `{"organizations":[]}`+"\n" && string(r.body) != `{"organizations":[]}` {
			t.Fatalf("no organization yet: %s", r.body)
		}
		e.expect("bob", "POST", "/api/v1/organization/", `{"name":"zeta","email":"ops@zeta.example"}`, http.StatusCreated)
		e.expect("alice", "POST", "/api/v1/organization/", `{"name":"acme"}`, http.StatusCreated)
		r := e.expect("root", "GET", path, "", http.StatusOK)
		var got struct {
			Organizations []struct {
				Name, Email string
				Owners      []string
			}
		}
		if err := json.Unmarshal(r.body, &got); err != nil {
			t.Fatal(err)
		}
		if len(got.Organizations) != 2 || got.Organizations[0].Name != "acme" || got.Organizations[1].Name != "zeta" ||
			got.Organizations[1].Email != "ops@zeta.example" || strings.Join(got.Organizations[0].Owners, ",") != "alice" {
			t.Fatalf("list: %s", r.body)
		}
		e.expect("alice", "GET", path, "", http.StatusForbidden)
		e.expect("", "GET", path, "", http.StatusUnauthorized)
	})
}
