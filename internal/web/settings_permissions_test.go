package web_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// TestRemovePermissionOfAUserNamedSettings: the settings page's "Remove"
// of the permission of a user (or team) named "settings" removes it: its
// form posts past the "-" that ends the repository's name, so the
// "settings" after it is not read as the end of the name (404 before).
func TestRemovePermissionOfAUserNamedSettings(t *testing.T) {
	e := testenv.New(t, testenv.Options{})
	alice := e.User("alice", false)
	e.Org("acme", "alice")
	ctx := context.Background()
	if err := e.DB.Repositories().CreateRepository(ctx, "acme/app", "private", "", "test", 0); err != nil {
		t.Fatal(err)
	}
	ri, err := e.DB.Repositories().Repository(ctx, "acme/app")
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"settings", "bob"} {
		if err := e.DB.Access().SetPermission(ctx, ri.ID, e.User(name, false).ID, 0, "read"); err != nil {
			t.Fatal(err)
		}
	}
	team, err := e.DB.Organizations().PutTeam(ctx, "acme", meta.Team{Name: "settings", Role: "member"})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.DB.Access().SetPermission(ctx, ri.ID, 0, team.ID, "write"); err != nil {
		t.Fatal(err)
	}
	st := wire.WebStores(e.DB)
	st.Sessions = userSession{alice}
	ui := newUI(t, st, web.Options{Auth: e.Authz, API: e.API})
	status, body := get(t, ui, "/repository/acme/app/settings", true)
	if status != http.StatusOK {
		t.Fatalf("GET the settings page = %d\n%.2000s", status, body)
	}
	for _, kind := range []string{"user", "team"} {
		action := regexp.MustCompile(`action="([^"]*/permissions/` + kind + `/settings/delete)"`).FindStringSubmatch(body)
		if action == nil {
			t.Fatalf("the settings page has no form that removes %s settings\n%.4000s", kind, body)
		}
		req := httptest.NewRequest(http.MethodPost, action[1], strings.NewReader("csrf="+strings.Repeat("c", 43)))
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		req.AddCookie(&http.Cookie{Name: "berth_session", Value: strangerSession})
		rec := httptest.NewRecorder()
		ui.ServeHTTP(rec, req)
		if rec.Code != http.StatusSeeOther {
			t.Errorf("POST %s = %d, want 303\n%.2000s", action[1], rec.Code, rec.Body.String())
		}
		perms, err := e.DB.Access().RepoPermissions(ctx, ri.ID, "acme", kind, "")
		if err != nil {
			t.Fatal(err)
		}
		for _, p := range perms {
			if p.Name == "settings" {
				t.Errorf("the %s settings keeps its permission: %+v", kind, perms)
			}
		}
		if kind == "user" && (len(perms) != 1 || perms[0].Name != "bob") {
			t.Errorf("user permissions after the removal: %+v, want bob's alone", perms)
		}
	}
}
