package api_test

import (
	"encoding/json"
	"net/http"
	"testing"
)

// logKinds returns the kinds and performers of an audit log page as
// "kind by performer".
func (e *orgEnv) logKinds(user, path string) []string {
	e.t.Helper()
	r := e.expect(user, "GET", path, "", http.StatusOK)
	var page struct {
		Logs []struct {
			Kind      string `json:"kind"`
			Performer *struct {
				Name string `json:"name"`
			} `json:"performer"`
		} `json:"logs"`
	}
	if err := json.Unmarshal(r.body, &page); err != nil {
		e.t.Fatalf("GET %s: %v: %s", path, err, r.body)
	}
	var out []string
	for _, l := range page.Logs {
		by := ""
		if l.Performer != nil {
			by = l.Performer.Name
		}
		out = append(out, l.Kind+" by "+by)
	}
	return out
}

func has(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// TestReusedOrganizationNameHidesOldAuditLog: whoever creates an
// organization under the name of a deleted one (or of a deleted user)
// reads only its own log; the superuser still reads everything.
func TestReusedOrganizationNameHidesOldAuditLog(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		e.createOrg("alice", "acme")
		e.createRobot("alice", "/api/v1/organization/acme", "ci", "")
		e.expect("alice", "DELETE", "/api/v1/organization/acme", "", http.StatusNoContent)

		e.createOrg("bob", "acme")
		got := e.logKinds("bob", "/api/v1/organization/acme/logs")
		if !has(got, "org_create by bob") {
			t.Fatalf("the new organization's log lacks its creation: %v", got)
		}
		for _, old := range []string{"robot_create by alice", "org_create by alice", "org_delete by alice"} {
			if has(got, old) {
				t.Fatalf("the new owner of acme reads the deleted organization's %q: %v", old, got)
			}
		}
		all := e.logKinds("root", "/api/v1/superuser/logs")
		if !has(all, "robot_create by alice") || !has(all, "org_create by bob") {
			t.Fatalf("the superuser's log lost entries: %v", all)
		}

		// A user's name, deleted and taken by an organization, likewise.
		e.user("dave", false)
		e.createRobot("dave", "/api/v1/user", "bot", "")
		e.expect("root", "DELETE", "/api/v1/superuser/users/dave", "", http.StatusNoContent)
		e.createOrg("bob", "dave")
		if got := e.logKinds("bob", "/api/v1/organization/dave/logs"); has(got, "robot_create by dave") || !has(got, "org_create by bob") {
			t.Fatalf("organization dave's log, after user dave: %v", got)
		}
	})
}

// TestRecreatedRepositoryHidesOldAuditLog: the admin of a repository
// created under the name of a deleted one reads only its log.
func TestRecreatedRepositoryHidesOldAuditLog(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		e.createOrg("alice", "acme")
		e.putTeam("alice", "acme", "builders", "creator")
		e.addMember("alice", "acme", "builders", "bob")
		e.expect("alice", "POST", "/api/v1/repository", `{"namespace":"acme","repository":"app","visibility":"private"}`, http.StatusCreated)
		e.expect("alice", "PUT", "/api/v1/repository/acme/app/permissions/user/carol", `{"role":"read"}`, http.StatusOK)
		e.expect("alice", "DELETE", "/api/v1/repository/acme/app", "", http.StatusNoContent)

		e.expect("bob", "POST", "/api/v1/repository", `{"namespace":"acme","repository":"app","visibility":"private"}`, http.StatusCreated)
		got := e.logKinds("bob", "/api/v1/repository/acme/app/logs")
		if !has(got, "repo_created by bob") {
			t.Fatalf("the new repository's log lacks its creation: %v", got)
		}
		for _, old := range []string{"repo_created by alice", "permission_change by alice", "repo_deleted by alice"} {
			if has(got, old) {
				t.Fatalf("the recreated repository's admin reads the deleted one's %q: %v", old, got)
			}
		}
		if all := e.logKinds("root", "/api/v1/superuser/logs"); !has(all, "permission_change by alice") {
			t.Fatalf("the superuser's log lost entries: %v", all)
		}
	})
}
