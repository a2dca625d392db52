package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/wire"
)

// lateNotifier is the notification service of an env, made once the env's
// store exists (the API takes its Notifier before).
type lateNotifier struct{ svc *notify.Service }

func (l *lateNotifier) Create(ctx context.Context, scope, target, actor string, in notify.Input) (meta.Notification, error) {
	return l.svc.Create(ctx, scope, target, actor, in)
}

func (l *lateNotifier) Test(ctx context.Context, n meta.Notification, repo string) error {
	return l.svc.Test(ctx, n, repo)
}

// notifyEnv is an orgEnv whose API manages notifications (with SMTP
// settings, so that the email method is available), with the superuser
// root.
func notifyEnv(t *testing.T, dialect string) *orgEnv {
	t.Helper()
	late := &lateNotifier{}
	e := newOrgEnvWith(t, testenv.Options{Dialect: dialect, API: api.Options{Notifier: late}})
	sealer, err := auth.NewSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	late.svc = notify.New(wire.NotifyStores(e.db), sealer, notify.Options{SMTPAddr: "127.0.0.1:1", SMTPFrom: "berth@example.com"})
	e.user("root", true)
	return e
}

// TestNotificationTestOneAtATime: asking for a test delivery 10 times
// queues one; the others are answered 429 with why and when to try
// again, and a test may be asked for again once the first has run.
func TestNotificationTestOneAtATime(t *testing.T) {
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) {
			e := notifyEnv(t, d)
			const base = "/api/v1/superuser/notification/"
			n := e.expect("root", "POST", base, `{"event":"repo_push","method":"webhook","config":{"url":"https://hooks.example.com/slow"}}`, http.StatusCreated).json(t)
			uuid, _ := n["uuid"].(string)
			ok, refused := 0, 0
			for range 10 {
				r := e.do("root", "POST", base+uuid+"/test", "")
				switch r.status {
				case http.StatusOK:
					ok++
				case http.StatusTooManyRequests:
					e.check(r, "POST", base+uuid+"/test", http.StatusTooManyRequests)
					if msg, _ := r.json(t)["error_message"].(string); !strings.Contains(msg, "already queued or running") || r.header.Get("Retry-After") == "" {
						t.Fatalf("429 without its reason or Retry-After: %v %s", r.header, r.body)
					}
					refused++
				default:
					t.Fatalf("test: %d %s", r.status, r.body)
				}
			}
			pending, err := e.db.Jobs().Jobs(context.Background(), meta.NotifyQueue, "pending", 100)
			if err != nil {
				t.Fatal(err)
			}
			if ok != 1 || refused != 9 || len(pending) != 1 {
				t.Fatalf("10 tests: %d queued, %d refused, %d pending jobs; want 1, 9, 1", ok, refused, len(pending))
			}
			// While it runs, still one at a time; once it has run, another
			// test may go.
			j, claimed, err := e.db.Jobs().ClaimJob(context.Background(), meta.NotifyQueue, "worker", time.Minute)
			if err != nil || !claimed {
				t.Fatalf("claim the test delivery: %v %v", claimed, err)
			}
			e.expect("root", "POST", base+uuid+"/test", "", http.StatusTooManyRequests)
			if err := e.db.Jobs().CompleteJob(context.Background(), j.ID, "worker"); err != nil {
				t.Fatal(err)
			}
			e.expect("root", "POST", base+uuid+"/test", "", http.StatusOK)
		})
	}
}

// TestNotificationTemplateWebhookOnly: a custom body template is a
// webhook's; an email (or any other method) with one is refused, so that
// nobody writes the registry's mail.
func TestNotificationTemplateWebhookOnly(t *testing.T) {
	e := notifyEnv(t, "sqlite")
	const base = "/api/v1/superuser/notification/"
	tmpl := `"template":"{\"subject\":\"Your password expires: sign in at https://evil.example\"}"`
	for _, method := range []string{`"email","config":{"email":"ops@example.com",` + tmpl + `}`, `"slack","config":{"url":"https://hooks.example.com/x",` + tmpl + `}`} {
		r := e.expect("root", "POST", base, `{"event":"repo_push","method":`+method+`}`, http.StatusBadRequest)
		if msg, _ := r.json(t)["error_message"].(string); !strings.Contains(msg, "config.template is for the webhook method only") {
			t.Errorf("%s: %s", method, r.body)
		}
	}
	e.expect("root", "POST", base, `{"event":"repo_push","method":"webhook","config":{"url":"https://hooks.example.com/x",`+tmpl+`}}`, http.StatusCreated)
	e.expect("root", "POST", base, `{"event":"repo_push","method":"email","config":{"email":"ops@example.com","template":""}}`, http.StatusCreated)
	if r := e.expect("root", "GET", base, "", http.StatusOK); strings.Count(string(r.body), `"uuid"`) != 2 {
		t.Fatalf("notifications stored: %s", r.body)
	}
}
