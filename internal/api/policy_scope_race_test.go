package api_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"testing"
)

// TestPolicyCreatesRaceScopeDelete: policies created while their
// repository, or their organization, is deleted are created (and go with
// it) or answered 404 (403 for an organization gone, as for any other;
// 400 past the cap of policies per scope), never 500: the foreign key's
// refusal of a scope deleted between the look-up and the insert was not
// mapped.
func TestPolicyCreatesRaceScopeDelete(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		e.createOrg("alice", "acme")
		const creates = 50
		race := func(scope, policies, del string) {
			t.Helper()
			writes := make([]raceWrite, creates)
			for i := range writes {
				writes[i] = raceWrite{policies + "immutabilitypolicy/", fmt.Sprintf(`{"tagPattern":"^v%d-"}`, i)}
				if i%2 == 1 {
					writes[i] = raceWrite{policies + "autoprunepolicy/", fmt.Sprintf(`{"method":"number_of_tags","value":%d}`, i+1)}
				}
			}
			checkRace(t, scope, e.raceWrites("POST", writes, del), "POST 201", "POST 400", "POST 403", "POST 404")
		}
		for round := range 5 {
			repo := fmt.Sprintf("app%d", round)
			e.expect("alice", "POST", "/api/v1/repository", `{"namespace":"acme","repository":"`+repo+`","visibility":"private"}`, http.StatusCreated)
			race("acme/"+repo, "/api/v1/repository/acme/"+repo+"/", "/api/v1/repository/acme/"+repo)
			e.expect("alice", "GET", "/api/v1/repository/acme/"+repo+"/immutabilitypolicy/", "", http.StatusNotFound)
		}
		for round := range 5 {
			org := fmt.Sprintf("org%d", round)
			e.createOrg("alice", org)
			race(org, "/api/v1/organization/"+org+"/", "/api/v1/organization/"+org)
		}
	})
}

// TestImmutabilityPolicyRefusals: as Quay, a pattern of white space only,
// one over 256 characters, or one an immutability policy of the same
// scope already has, is refused with 400 on create and on update, and
// nothing changes.
func TestImmutabilityPolicyRefusals(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		e.createOrg("alice", "acme")
		base := "/api/v1/organization/acme/immutabilitypolicy/"
		e.expect("alice", "POST", base, `{"tagPattern":"^v"}`, http.StatusCreated)
		e.expect("alice", "POST", base, `{"tagPattern":" ^v "}`, http.StatusBadRequest)
		e.expect("alice", "POST", base, `{"tagPattern":"   "}`, http.StatusBadRequest)
		e.expect("alice", "POST", base, `{"tagPattern":"`+strings.Repeat("a", 257)+`"}`, http.StatusBadRequest)
		var created struct {
			UUID string `json:"uuid"`
		}
		if err := json.Unmarshal(e.expect("alice", "POST", base, `{"tagPattern":"^rel-"}`, http.StatusCreated).body, &created); err != nil {
			t.Fatal(err)
		}
		e.expect("alice", "PUT", base+created.UUID, `{"tagPattern":"^v"}`, http.StatusBadRequest)
		var list struct {
			Policies []struct {
				TagPattern string `json:"tagPattern"`
			} `json:"policies"`
		}
		if err := json.Unmarshal(e.expect("alice", "GET", base, "", http.StatusOK).body, &list); err != nil {
			t.Fatal(err)
		}
		if len(list.Policies) != 2 {
			t.Fatalf("policies after the refusals: %+v, want ^v and ^rel- only", list.Policies)
		}
		for _, p := range list.Policies {
			if p.TagPattern != "^v" && p.TagPattern != "^rel-" {
				t.Errorf("policy %q stored", p.TagPattern)
			}
		}
	})
}
