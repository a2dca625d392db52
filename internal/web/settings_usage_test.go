package web_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"testing"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// countingUsage counts the RepositoryUsage calls that reach the store.
type countingUsage struct {
	api.UsageStore
	repo atomic.Int64
}

func (c *countingUsage) RepositoryUsage(ctx context.Context, repo string) (int64, error) {
	c.repo.Add(1)
	return c.UsageStore.RepositoryUsage(ctx, repo)
}

// TestSettingsPageRefusesBeforeAddingUpUsage: the settings page of a
// public repository answers 403 to an anonymous visitor and to a signed-in
// reader without adding up the repository's usage (the description the
// page reads for its admins holds quota_report); a private repository is
// still "not found" to them, and its admin still sees the page.
func TestSettingsPageRefusesBeforeAddingUpUsage(t *testing.T) {
	testenv.ForDialects(t, testenv.Options{}, func(t *testing.T, e *testenv.Env) {
		ctx := context.Background()
		alice := e.User("alice", false)
		bob := e.User("bob", false)
		e.Org("acme", "alice")
		for _, r := range []struct{ name, visibility string }{{"acme/app", "public"}, {"acme/secret", "private"}} {
			if err := e.DB.Repositories().CreateRepository(ctx, r.name, r.visibility, "", "test", 0); err != nil {
				t.Fatal(err)
			}
		}
		st := wire.APIStores(e.DB, config.Default().GC.TimeMachine)
		usage := &countingUsage{UsageStore: st.Usage}
		st.Usage = usage
		a := api.New(st, e.Authz, api.Options{})
		for _, c := range []struct {
			who, repo string
			signedIn  bool
			want      int
		}{
			{"anonymous", "acme/app", false, http.StatusForbidden},
			{"bob", "acme/app", true, http.StatusForbidden},
			{"anonymous", "acme/secret", false, http.StatusNotFound},
			{"bob", "acme/secret", true, http.StatusNotFound},
			{"anonymous", "acme/nothing", false, http.StatusNotFound},
		} {
			ws := wire.WebStores(e.DB)
			ws.Sessions = userSession{bob}
			ui := newUI(t, ws, web.Options{Auth: e.Authz, API: a})
			status, body := get(t, ui, "/repository/"+c.repo+"/settings", c.signedIn)
			if status != c.want {
				t.Errorf("%s: GET the settings of %s = %d, want %d\n%.1000s", c.who, c.repo, status, c.want, body)
			}
			if n := usage.repo.Load(); n != 0 {
				t.Fatalf("%s: the settings page of %s added up repository usage %d times before refusing", c.who, c.repo, n)
			}
		}
		ws := wire.WebStores(e.DB)
		ws.Sessions = userSession{alice}
		ui := newUI(t, ws, web.Options{Auth: e.Authz, API: a})
		if status, body := get(t, ui, "/repository/acme/app/settings", true); status != http.StatusOK {
			t.Fatalf("the admin: GET the settings = %d\n%.1000s", status, body)
		}
	})
}
