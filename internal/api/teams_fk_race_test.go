package api_test

import (
	"context"
	"fmt"
	"net/http"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
)

// TestTeamWritesRaceDeletes: memberships added while their team is
// deleted, teams put while their organization is deleted and permissions
// set while their repository is deleted are made (and go with what they
// belong to) or answered 404 (403 for a team put once the organization's
// owners team is gone, as for any caller who administers nothing), never
// 500: the foreign key's refusal of a parent deleted between the
// handler's look-up and the insert was not mapped.
func TestTeamWritesRaceDeletes(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		ctx := context.Background()
		e.createOrg("alice", "acme")
		const writes = 50
		var members []string
		for i := range writes {
			name := fmt.Sprintf("racer%02d", i)
			if _, err := e.db.Users().CreateUser(ctx, meta.User{Username: name, SecretHash: "x"}); err != nil {
				t.Fatal(err)
			}
			members = append(members, name)
		}
		for round := range 4 {
			team := fmt.Sprintf("devs%d", round)
			e.putTeam("alice", "acme", team, "member")
			base := "/api/v1/organization/acme/team/" + team
			var paths []string
			for _, m := range members {
				paths = append(paths, base+"/members/"+m)
			}
			checkRace(t, "team members", e.raceWrites("PUT", sameBody(paths, ""), base), "PUT 200", "PUT 404")
			e.expect("alice", "GET", base+"/members", "", http.StatusNotFound)
		}
		for round := range 4 {
			repo := fmt.Sprintf("acme/app%d", round)
			e.expect("alice", "POST", "/api/v1/repository", `{"namespace":"acme","repository":"app`+fmt.Sprint(round)+`","visibility":"private"}`, http.StatusCreated)
			e.putTeam("alice", "acme", fmt.Sprintf("readers%d", round), "member")
			var paths []string
			for i, m := range members {
				p := "/api/v1/repository/" + repo + "/permissions/user/" + m
				if i%5 == 0 {
					p = "/api/v1/repository/" + repo + "/permissions/team/" + fmt.Sprintf("readers%d", round)
				}
				paths = append(paths, p)
			}
			checkRace(t, "permissions", e.raceWrites("PUT", sameBody(paths, `{"role":"read"}`), "/api/v1/repository/"+repo), "PUT 200", "PUT 404")
			e.expect("alice", "GET", "/api/v1/repository/"+repo+"/permissions/user/", "", http.StatusNotFound)
		}
		for round := range 4 {
			org := fmt.Sprintf("org%d", round)
			e.createOrg("alice", org)
			var paths []string
			for i := range writes {
				paths = append(paths, fmt.Sprintf("/api/v1/organization/%s/team/t%02d", org, i))
			}
			checkRace(t, "teams", e.raceWrites("PUT", sameBody(paths, `{"role":"member"}`), "/api/v1/organization/"+org), "PUT 200", "PUT 403", "PUT 404")
			e.expect("alice", "GET", "/api/v1/organization/"+org, "", http.StatusNotFound)
		}
	})
}
