package api_test

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
)

// raceWrites sends writes (method and path, with body) at once with one
// DELETE of del, all as alice, and reports each answer as "METHOD status".
func (e *orgEnv) raceWrites(method string, paths []string, body, del string) map[string]int {
	e.t.Helper()
	statuses := make(chan string, len(paths)+1)
	var wg sync.WaitGroup
	start := make(chan struct{})
	send := func(method, path, body string) {
		defer wg.Done()
		<-start
		req, err := http.NewRequest(method, e.url+path, strings.NewReader(body))
		if err != nil {
			statuses <- err.Error()
			return
		}
		if body != "" {
			req.Header.Set("Content-Type", "application/json")
		}
		req.SetBasicAuth("alice", e.env.Secret("alice"))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			statuses <- err.Error()
			return
		}
		res.Body.Close()
		statuses <- fmt.Sprintf("%s %d", method, res.StatusCode)
	}
	for _, p := range paths {
		wg.Add(1)
		go send(method, p, body)
	}
	wg.Add(1)
	go send("DELETE", del, "")
	close(start)
	wg.Wait()
	close(statuses)
	seen := map[string]int{}
	for s := range statuses {
		seen[s]++
	}
	return seen
}

// checkRace fails the test for an answer not in ok, or a delete that did
// not answer 204.
func checkRace(t *testing.T, what string, seen map[string]int, ok ...string) {
	t.Helper()
	for s, n := range seen {
		if s != "DELETE 204" && !strings.Contains(" "+strings.Join(ok, " | ")+" ", " "+s+" ") {
			t.Errorf("%s: %d writes racing the delete answered %q (all: %v)", what, n, s, seen)
		}
	}
	if seen["DELETE 204"] != 1 {
		t.Errorf("%s: the delete answered %v", what, seen)
	}
}

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
			checkRace(t, "team members", e.raceWrites("PUT", paths, "", base), "PUT 200", "PUT 404")
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
			checkRace(t, "permissions", e.raceWrites("PUT", paths, `{"role":"read"}`, "/api/v1/repository/"+repo), "PUT 200", "PUT 404")
			e.expect("alice", "GET", "/api/v1/repository/"+repo+"/permissions/user/", "", http.StatusNotFound)
		}
		for round := range 4 {
			org := fmt.Sprintf("org%d", round)
			e.createOrg("alice", org)
			var paths []string
			for i := range writes {
				paths = append(paths, fmt.Sprintf("/api/v1/organization/%s/team/t%02d", org, i))
			}
			checkRace(t, "teams", e.raceWrites("PUT", paths, `{"role":"member"}`, "/api/v1/organization/"+org), "PUT 200", "PUT 403", "PUT 404")
			e.expect("alice", "GET", "/api/v1/organization/"+org, "", http.StatusNotFound)
		}
	})
}
