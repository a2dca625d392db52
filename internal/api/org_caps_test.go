package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
)

// TestTeamAndRobotCaps: an organization holds at most 500 teams (its
// owners team included) and a namespace 500 robots; one more is refused
// with 400 naming the cap, and a team that exists may still be changed.
func TestTeamAndRobotCaps(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		ctx := context.Background()
		e.createOrg("alice", "acme")
		orgs, users := e.db.Organizations(), e.db.Users()
		for i := 1; i < 500; i++ { // the owners team is the 500th
			if _, err := orgs.PutTeam(ctx, "acme", meta.Team{Name: fmt.Sprintf("t%03d", i), Role: "member"}); err != nil {
				t.Fatal(err)
			}
		}
		for i := range 500 {
			if _, err := users.CreateRobot(ctx, "acme", fmt.Sprintf("r%03d", i), "x"); err != nil {
				t.Fatal(err)
			}
		}
		r := e.expect("alice", "PUT", "/api/v1/organization/acme/team/onemore", `{"role":"member"}`, http.StatusBadRequest)
		if msg, _ := r.json(t)["error_message"].(string); !strings.Contains(msg, "500 teams") {
			t.Fatalf("501st team: %s, want a message naming the cap of 500 teams", r.body)
		}
		e.putTeam("alice", "acme", "t001", "creator") // a change, not a new team
		r = e.expect("alice", "PUT", "/api/v1/organization/acme/robots/onemore", "", http.StatusBadRequest)
		if msg, _ := r.json(t)["error_message"].(string); !strings.Contains(msg, "500 robots") {
			t.Fatalf("501st robot: %s, want a message naming the cap of 500 robots", r.body)
		}
		if _, err := users.UserByName(ctx, "acme+onemore"); err == nil {
			t.Fatal("the refused robot was created")
		}
		if _, err := orgs.TeamByName(ctx, "acme", "onemore"); err == nil {
			t.Fatal("the refused team was created")
		}
	})
}
