package api_test

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/testenv"
)

// TestMirrorGetBodyPutBack: the body a mirror's GET returns, PUT back as
// is (Quay-style), is accepted, its read-only fields (Berth's
// next_sync_date and last_error among them) ignored; and Quay's UI's
// skopeo_timeout_interval is accepted and ignored on POST and PUT.
func TestMirrorGetBodyPutBack(t *testing.T) {
	e := newOrgEnvWith(t, testenv.Options{API: api.Options{Mirrors: fakeMirrors{}}})
	e.user("alice", false)
	e.createOrg("alice", "acme")
	e.createRobot("alice", "/api/v1/organization/acme", "mirror", "")
	e.expect("alice", "POST", "/api/v1/repository", `{"namespace":"acme","repository":"app","visibility":"private"}`, http.StatusCreated)
	const path = "/api/v1/repository/acme/app/mirror"
	e.expect("alice", "POST", path, `{"external_reference":"registry.example:5000/library/alpine","sync_interval":3600,"skopeo_timeout_interval":300,
		"root_rule":{"rule_kind":"tag_glob_csv","rule_value":["latest"]},"robot_username":"acme+mirror"}`, http.StatusCreated)
	got := e.expect("alice", "GET", path, "", http.StatusOK).json(t)
	for _, f := range []string{"next_sync_date", "last_error", "sync_status", "sync_expiration_date", "sync_retries_remaining"} {
		if _, ok := got[f]; !ok {
			t.Fatalf("GET shows no %s: %v", f, got)
		}
	}
	got["sync_interval"] = 7200
	got["skopeo_timeout_interval"] = 600
	after := e.expect("alice", "PUT", path, mustJSON(got), http.StatusCreated).json(t)
	if after["sync_interval"] != 7200.0 || after["external_reference"] != "registry.example:5000/library/alpine" || after["robot_username"] != "acme+mirror" {
		t.Fatalf("after the GET's body was PUT back: %v", after)
	}
	if r := e.expect("alice", "PUT", path, `{"sync_interval":3600,"no_such_field":1}`, http.StatusBadRequest); !strings.Contains(string(r.body), "no_such_field") {
		t.Fatalf("an unknown field is refused without naming it: %s", r.body)
	}
}

// TestAutoPrunePolicyPutWithUUID: Quay's UI PUTs a whole policy, uuid
// included. The policy's own uuid is accepted (and a POST's ignored: the
// new policy gets its own); a uuid naming another policy is refused and
// changes nothing.
func TestAutoPrunePolicyPutWithUUID(t *testing.T) {
	e := newOrgEnvWith(t, testenv.Options{})
	e.user("alice", false)
	e.createOrg("alice", "acme")
	const base = "/api/v1/organization/acme/autoprunepolicy/"
	id := e.expect("alice", "POST", base, `{"method":"number_of_tags","value":10}`, http.StatusCreated).json(t)["uuid"].(string)
	other := e.expect("alice", "POST", base, `{"uuid":"`+id+`","method":"creation_date","value":"7d"}`, http.StatusCreated).json(t)["uuid"].(string)
	if other == id {
		t.Fatalf("a POST with a policy's uuid got that uuid")
	}
	p := e.expect("alice", "GET", base+id, "", http.StatusOK).json(t)
	p["value"] = 20
	e.expect("alice", "PUT", base+id, mustJSON(p), http.StatusNoContent)
	e.expect("alice", "PUT", base+id, `{"uuid":"`+other+`","method":"number_of_tags","value":30}`, http.StatusBadRequest)
	var after struct {
		UUID  string `json:"uuid"`
		Value any    `json:"value"`
	}
	if err := json.Unmarshal(e.expect("alice", "GET", base+id, "", http.StatusOK).body, &after); err != nil || after.UUID != id || after.Value != 20.0 {
		t.Fatalf("after the PUTs the policy is %+v (%v), want value 20", after, err)
	}
	// An immutability policy's GET, PUT back, too.
	const imm = "/api/v1/organization/acme/immutabilitypolicy/"
	iid := e.expect("alice", "POST", imm, `{"tagPattern":"^v","tagPatternMatches":true}`, http.StatusCreated).json(t)["uuid"].(string)
	e.expect("alice", "PUT", imm+iid, string(e.expect("alice", "GET", imm+iid, "", http.StatusOK).body), http.StatusNoContent)
}
