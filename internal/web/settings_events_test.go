package web_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/notify"
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
	_, ui := acmeAppSettings(t, testenv.Options{})
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

// TestNotificationFormRefusesNonObjectConfig: the notification form's
// extra configuration must be a JSON object; "null", "[]" or "1" typed
// there is answered with the form and an error, and nothing is created
// (before, "null" panicked the request: the browser got an empty answer).
func TestNotificationFormRefusesNonObjectConfig(t *testing.T) {
	late := &lateNotifier{}
	e, ui := acmeAppSettings(t, testenv.Options{API: api.Options{Notifier: late}})
	sealer, err := auth.NewSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	late.svc = notify.New(wire.NotifyStores(e.DB), sealer, notify.Options{})
	for _, cfg := range []string{"null", "[]", "1", `"x"`} {
		status, body := postSession(t, ui, "/repository/acme/app/-/settings/notifications/create", url.Values{
			"event": {"repo_push"}, "method": {"webhook"}, "target": {"https://example.com/h"}, "config": {cfg}})
		if status != http.StatusBadRequest || !strings.Contains(body, "not a JSON object") {
			t.Errorf("config %s: %d, want 400 saying it is not a JSON object\n%.2000s", cfg, status, body)
		}
	}
	res, body := e.Do("alice", http.MethodGet, "/api/v1/repository/acme/app/notification/", nil)
	if res.StatusCode != http.StatusOK || strings.Contains(string(body), "example.com") {
		t.Errorf("notifications after the refused forms: %d %s, want none", res.StatusCode, body)
	}
	// An object is taken.
	if status, body := postSession(t, ui, "/repository/acme/app/-/settings/notifications/create", url.Values{
		"event": {"repo_push"}, "method": {"webhook"}, "target": {"https://example.com/h"}, "config": {`{"template":"{}"}`}}); status != http.StatusSeeOther {
		t.Errorf("config {...}: %d, want 303\n%.2000s", status, body)
	}
	if res, body := e.Do("alice", http.MethodGet, "/api/v1/repository/acme/app/notification/", nil); res.StatusCode != http.StatusOK || !strings.Contains(string(body), `"template":"{}"`) {
		t.Errorf("notifications after the form with an object: %d %s, want the new one", res.StatusCode, body)
	}
}

// lateNotifier is the notification service of an env, made once the
// env's store exists (the API takes its Notifier before).
type lateNotifier struct{ svc *notify.Service }

func (l *lateNotifier) Create(ctx context.Context, scope, target, actor string, in notify.Input) (meta.Notification, error) {
	return l.svc.Create(ctx, scope, target, actor, in)
}

func (l *lateNotifier) Test(ctx context.Context, n meta.Notification, repo string) error {
	return l.svc.Test(ctx, n, repo)
}

// acmeAppSettings is an env with alice, admin of organization acme and
// its private repository acme/app, and the UI as alice signed in.
func acmeAppSettings(t *testing.T, opts testenv.Options) (*testenv.Env, http.Handler) {
	t.Helper()
	e := testenv.New(t, opts)
	alice := e.User("alice", false)
	e.Org("acme", "alice")
	if err := e.DB.Repositories().CreateRepository(context.Background(), "acme/app", "private", "", "test", 0); err != nil {
		t.Fatal(err)
	}
	st := wire.WebStores(e.DB)
	st.Sessions = userSession{alice}
	return e, newUI(t, st, web.Options{Auth: e.Authz, API: e.API})
}
