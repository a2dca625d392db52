package web_test

import (
	"context"
	"net/http"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// TestRepositoryFormOffersOnlyEventsItHears: the repository settings'
// notification form offers the events a repository notification can hear
// (repo_push among them) and not repo_created or repo_deleted, which the
// API refuses at repository scope (before, the form offered them and
// choosing one answered the API's 400).
func TestRepositoryFormOffersOnlyEventsItHears(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	alice := e.User("alice", false)
	e.Org("acme", "alice")
	if err := e.DB.Repositories().CreateRepository(context.Background(), "acme/app", "private", "", "test", 0); err != nil {
		t.Fatal(err)
	}
	st := wire.WebStores(e.DB)
	st.Sessions = userSession{alice}
	ui := newUI(t, st, web.Options{Auth: e.Authz, API: e.API})
	status, body := get(t, ui, "/repository/acme/app/settings", true)
	if status != http.StatusOK {
		t.Fatalf("GET the settings page = %d\n%.2000s", status, body)
	}
	if !strings.Contains(body, "<option>repo_push</option>") {
		t.Fatalf("the form does not offer repo_push\n%.4000s", body)
	}
	for _, e := range []string{"repo_created", "repo_deleted"} {
		if strings.Contains(body, "<option>"+e+"</option>") {
			t.Errorf("the repository's form offers %s, which a repository notification cannot hear", e)
		}
	}
}
