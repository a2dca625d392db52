package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// TestRepositoryLifecycleEventsAtOrganizationScope: a repository's own
// notification exists only while the repository does, so one for
// repo_created or repo_deleted could never fire: it is refused (400) with
// a message pointing to the organization's notifications, which take it.
// (Quay has neither event, so no behaviour of its to match.)
func TestRepositoryLifecycleEventsAtOrganizationScope(t *testing.T) {
	e := notifyEnv(t, "sqlite")
	e.createOrg("root", "acme")
	if err := e.db.Repositories().CreateRepository(context.Background(), "acme/app", "private", "", "root", 0); err != nil {
		t.Fatal(err)
	}
	const repoBase, orgBase = "/api/v1/repository/acme/app/notification/", "/api/v1/organization/acme/notification/"
	for _, event := range []string{"repo_created", "repo_deleted"} {
		body := `{"event":"` + event + `","method":"webhook","config":{"url":"https://hooks.example.com/x"}}`
		r := e.expect("root", "POST", repoBase, body, http.StatusBadRequest)
		if msg, _ := r.json(t)["error_message"].(string); !strings.Contains(msg, event) || !strings.Contains(msg, "organization scope") || !strings.Contains(msg, orgBase) {
			t.Errorf("%s at repository scope: %s", event, r.body)
		}
		e.expect("root", "POST", orgBase, body, http.StatusCreated)
	}
	e.expect("root", "POST", repoBase, `{"event":"repo_push","method":"webhook","config":{"url":"https://hooks.example.com/x"}}`, http.StatusCreated)
	if r := e.expect("root", "GET", repoBase, "", http.StatusOK); strings.Count(string(r.body), `"uuid"`) != 1 {
		t.Fatalf("the repository's notifications: %s", r.body)
	}
}
