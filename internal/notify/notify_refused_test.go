package notify_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/netip"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/wire"
)

// TestWebhookRefusedBySSRFGuard: a webhook or Slack target on an internal
// address is refused when the notification is created, with a message
// that names notifications.allowedHosts, its keywords and the entry that
// would allow this target; nothing is stored. With that entry, the same
// notification is created.
func TestWebhookRefusedBySSRFGuard(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			sealer, _ := auth.NewSealer(make([]byte, 32))
			const keywords = `to notifications.allowedHosts (keywords "loopback" and "private", or CIDRs, IPs and host names)`
			for _, tc := range []struct {
				method, url, want string
				allow             []string
			}{
				{"webhook", "http://127.0.0.1:8080/hook", `config.url: refusing to connect to 127.0.0.1: a loopback address (SSRF guard); to allow it, add "loopback" ` + keywords, []string{"loopback"}},
				{"slack", "https://10.20.30.40/services/T/B/x", `config.url: refusing to connect to 10.20.30.40: a private address (SSRF guard); to allow it, add "private" ` + keywords, []string{"private"}},
				{"webhook", "http://169.254.169.254/latest/", `config.url: refusing to connect to 169.254.169.254: a link-local address (SSRF guard); to allow it, add "169.254.169.254" ` + keywords, []string{"169.254.169.254"}},
			} {
				for _, allow := range [][]string{nil, tc.allow} {
					guard, err := events.NewGuard(allow)
					if err != nil {
						t.Fatal(err)
					}
					svc := notify.New(wire.NotifyStores(db), sealer, notify.Options{Guard: guard})
					_, err = svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: tc.method,
						Config: map[string]any{"url": tc.url}})
					if allow != nil {
						if err != nil {
							t.Fatalf("%s with allowedHosts %v: %v", tc.url, allow, err)
						}
						continue
					}
					var inv *notify.InvalidError
					if !errors.As(err, &inv) || inv.Msg != tc.want {
						t.Fatalf("%s %s:\n got %v\nwant %s", tc.method, tc.url, err, tc.want)
					}
					if strings.Contains(err.Error(), "/hook") || strings.Contains(err.Error(), "/services/") {
						t.Fatalf("the refusal repeats the URL's path: %v", err)
					}
				}
			}
		})
	}
}

// staticResolver answers every name with one address.
type staticResolver string

func (r staticResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return []netip.Addr{netip.MustParseAddr(string(r))}, nil
}

// TestRefusalHidesInternalAddress: a webhook whose host name resolves to
// an internal address is refused without telling its creator what the
// name resolves to (a map of the registry's networks); the operator's log
// says it.
func TestRefusalHidesInternalAddress(t *testing.T) {
	ctx := context.Background()
	db := metatest.Open(t, metatest.Dialects()[0])
	sealer, _ := auth.NewSealer(make([]byte, 32))
	guard, err := events.NewGuard(nil, events.WithResolver(staticResolver("10.20.30.40")))
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	svc := notify.New(wire.NotifyStores(db), sealer, notify.Options{Guard: guard, Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	for _, in := range []notify.Input{
		{Event: "repo_push", Method: "webhook", Config: map[string]any{"url": "https://billing-db.corp/hook"}},
		{Event: "repo_push", Method: "gitlab_trigger", Config: map[string]any{"project": "1", "token": "glptt-x", "base_url": "https://billing-db.corp"}},
	} {
		logs.Reset()
		_, err := svc.Create(ctx, meta.ScopeRegistry, "", "root", in)
		var inv *notify.InvalidError
		if !errors.As(err, &inv) || !strings.Contains(inv.Msg, `add "billing-db.corp" to notifications.allowedHosts`) {
			t.Fatalf("%s: %v", in.Method, err)
		}
		if strings.Contains(inv.Msg, "10.20.30.40") || strings.Contains(inv.Msg, "private address") {
			t.Errorf("%s: the refusal maps the internal network: %s", in.Method, inv.Msg)
		}
		if !strings.Contains(logs.String(), "10.20.30.40") {
			t.Errorf("%s: the operator's log lacks the address: %s", in.Method, logs.String())
		}
	}
}
