package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"sync"
	"testing"
)

func TestTeamPutDelete(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		e.createOrg("alice", "acme")
		const devs = "/api/v1/organization/acme/team/devs"
		m := e.expect("alice", "PUT", devs, `{"role":"creator","description":"The developers"}`, 200).json(t)
		want := map[string]any{"name": "devs", "role": "creator", "description": "The developers", "can_view": true, "is_synced": false, "new_team": true}
		for k, v := range want {
			if m[k] != v {
				t.Fatalf("PUT team answered %v; %s should be %v", m, k, v)
			}
		}
		if !e.audited("acme", "team_change", `"devs"`) {
			t.Fatal("team_change not audited")
		}
		// An update keeps what it does not name; Quay's UI sends the name.
		m = e.expect("alice", "PUT", devs, `{"name":"devs","role":"member"}`, 200).json(t)
		if m["role"] != "member" || m["description"] != "The developers" || m["new_team"] != false {
			t.Fatalf("update answered %v", m)
		}
		m = e.expect("alice", "PUT", "/api/v1/organization/acme/team/qa", `{}`, 200).json(t)
		if m["role"] != "member" || m["description"] != "" {
			t.Fatalf("a new team without a role answered %v", m)
		}
		// The owners team keeps its role, but its description may change.
		e.expect("alice", "PUT", "/api/v1/organization/acme/team/owners", `{"role":"member"}`, 400)
		e.expect("alice", "PUT", "/api/v1/organization/acme/team/owners", `{"description":"Admins"}`, 200)
		e.expect("alice", "PUT", "/api/v1/organization/acme/team/owners", `{"role":"admin"}`, 200)

		for _, c := range []struct {
			name, path, body string
			status           int
		}{
			{"unknown role", devs, `{"role":"owner"}`, 400},
			{"bad team name", "/api/v1/organization/acme/team/Dev%21", `{"role":"member"}`, 400},
			{"team name with plus", "/api/v1/organization/acme/team/a+b", `{"role":"member"}`, 400},
			{"name differs from path", devs, `{"name":"ops","role":"member"}`, 400},
			{"unknown field", devs, `{"role":"member","members":[]}`, 400},
			{"malformed JSON", devs, `{"role":`, 400},
			{"wrong type", devs, `{"role":3}`, 400},
			{"no body", devs, ``, 400},
			{"description too long", devs, `{"description":"` + strings.Repeat("x", 5000) + `"}`, 400},
			{"unknown organization", "/api/v1/organization/nope/team/devs", `{"role":"member"}`, 404},
		} {
			if r := e.do("alice", "PUT", c.path, c.body); r.status != c.status {
				t.Fatalf("%s: status %d, want %d: %s", c.name, r.status, c.status, r.body)
			}
		}
		e.expect("", "PUT", devs, `{"role":"admin"}`, 401)
		e.expect("bob", "PUT", devs, `{"role":"admin"}`, 403)
		e.addMember("alice", "acme", "devs", "bob")
		e.expect("bob", "PUT", devs, `{"role":"admin"}`, 403) // a member is not an admin
		e.expect("root", "PUT", devs, `{"role":"admin"}`, 200)
		// Now devs is an admin team: bob administers.
		e.expect("bob", "PUT", "/api/v1/organization/acme/team/ops", `{"role":"member"}`, 200)

		e.expect("alice", "DELETE", "/api/v1/organization/acme/team/owners", "", 400)
		e.expect("carol", "DELETE", "/api/v1/organization/acme/team/qa", "", 403)
		e.expect("", "DELETE", "/api/v1/organization/acme/team/qa", "", 401)
		e.expect("alice", "DELETE", "/api/v1/organization/acme/team/qa", "", 204)
		e.expect("alice", "DELETE", "/api/v1/organization/acme/team/qa", "", 404)
		if !e.audited("acme", "team_change", `"deleted":true`) {
			t.Fatal("team deletion not audited")
		}
	})
}

func TestTeamMembers(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		e.createOrg("alice", "acme")
		e.createOrg("carol", "other")
		e.putTeam("alice", "acme", "devs", "member")
		e.createRobot("alice", "/api/v1/organization/acme", "ci", "")
		e.createRobot("carol", "/api/v1/organization/other", "ci", "")
		e.createRobot("alice", "/api/v1/user", "bot", "")
		const devs = "/api/v1/organization/acme/team/devs/members"

		m := e.expect("alice", "PUT", devs+"/bob", "", 200).json(t)
		if m["name"] != "bob" || m["kind"] != "user" || m["is_robot"] != false {
			t.Fatalf("add bob answered %v", m)
		}
		m = e.expect("alice", "PUT", devs+"/acme+ci", "", 200).json(t)
		if m["name"] != "acme+ci" || m["is_robot"] != true {
			t.Fatalf("add robot answered %v", m)
		}
		e.expect("alice", "PUT", devs+"/acme+ci", "", 200) // idempotent
		if !e.audited("acme", "team_member_add", `"acme+ci"`) {
			t.Fatal("team_member_add not audited")
		}
		r := e.expect("alice", "PUT", devs+"/other+ci", "", 400)
		if !strings.Contains(string(r.body), "namespace other") {
			t.Fatalf("refusal does not say why: %s", r.body)
		}
		e.expect("alice", "PUT", devs+"/alice+bot", "", 400) // a user's robot
		e.expect("alice", "PUT", devs+"/nobody", "", 400)
		e.expect("alice", "PUT", "/api/v1/organization/acme/team/nope/members/bob", "", 404)
		e.expect("bob", "PUT", devs+"/carol", "", 403)
		e.expect("carol", "PUT", devs+"/carol", "", 403)
		e.expect("", "PUT", devs+"/carol", "", 401)
		e.expect("acme+ci", "PUT", devs+"/carol", "", 403)

		var list struct {
			Name    string `json:"name"`
			CanEdit bool   `json:"can_edit"`
			Members []struct {
				Name    string `json:"name"`
				Kind    string `json:"kind"`
				IsRobot bool   `json:"is_robot"`
			} `json:"members"`
		}
		r = e.expect("bob", "GET", devs, "", 200)
		if err := json.Unmarshal(r.body, &list); err != nil {
			t.Fatal(err)
		}
		if list.Name != "devs" || list.CanEdit || len(list.Members) != 2 || list.Members[0].Name != "acme+ci" || !list.Members[0].IsRobot ||
			list.Members[1].Name != "bob" || list.Members[1].IsRobot || list.Members[1].Kind != "user" {
			t.Fatalf("members as bob: %s", r.body)
		}
		if m := e.expect("alice", "GET", devs, "", 200).json(t); m["can_edit"] != true {
			t.Fatalf("members as alice: %v", m)
		}
		e.expect("acme+ci", "GET", devs, "", 200) // a robot member of the organization may look
		e.expect("carol", "GET", devs, "", 403)
		e.expect("", "GET", devs, "", 401)
		e.expect("bob", "GET", "/api/v1/organization/acme/team/nope/members", "", 404)
		e.expect("carol", "GET", "/api/v1/organization/acme/team/nope/members", "", 403) // no probing for teams

		e.expect("bob", "DELETE", devs+"/acme+ci", "", 403)
		e.expect("alice", "DELETE", devs+"/acme+ci", "", 204)
		e.expect("alice", "DELETE", devs+"/acme+ci", "", 404)
		e.expect("alice", "DELETE", devs+"/nobody", "", 404)
		e.expect("alice", "DELETE", "/api/v1/organization/acme/team/nope/members/bob", "", 404)
		if !e.audited("acme", "team_member_remove", `"acme+ci"`) {
			t.Fatal("team_member_remove not audited")
		}

		// The last owner stays; a robot does not count as one.
		const owners = "/api/v1/organization/acme/team/owners/members"
		e.addMember("alice", "acme", "owners", "acme+ci")
		e.expect("alice", "DELETE", owners+"/alice", "", 400)
		e.addMember("alice", "acme", "owners", "carol")
		e.expect("alice", "DELETE", owners+"/alice", "", 204)
		e.expect("alice", "PUT", devs+"/alice", "", 403) // no longer an admin
		e.expect("carol", "DELETE", owners+"/carol", "", 400)
		e.expect("carol", "DELETE", owners+"/acme+ci", "", 204)
	})
}

// TestLastOwnerRace removes two owners at once: exactly one removal may
// win, and the organization keeps an owner.
func TestLastOwnerRace(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		for round := range 5 {
			org := "race" + string(rune('a'+round))
			e.createOrg("alice", org)
			e.addMember("alice", org, "owners", "bob")
			var wg sync.WaitGroup
			statuses := make([]int, 2)
			for i, who := range []string{"alice", "bob"} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					statuses[i] = e.do("root", "DELETE", "/api/v1/organization/"+org+"/team/owners/members/"+who, "").status
				}()
			}
			wg.Wait()
			ok := 0
			for _, s := range statuses {
				if s == http.StatusNoContent {
					ok++
				} else if s != http.StatusBadRequest {
					t.Fatalf("round %d: status %d", round, s)
				}
			}
			if ok != 1 {
				t.Fatalf("round %d: %d removals succeeded (%v), want 1", round, ok, statuses)
			}
		}
	})
}
