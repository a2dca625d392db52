package notify_test

import (
	"context"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/wire"
)

// TestEmailRecipientsAreChecked: an e-mail notification takes an address
// or a list of at most MaxEmailRecipients that parse; before, any string
// holding an "@" was taken (a list of thousands, mailed on every event
// and every test delivery, or one that fails only at delivery).
func TestEmailRecipientsAreChecked(t *testing.T) {
	ctx := context.Background()
	_, svc := newService(t, notify.Options{SMTPAddr: "127.0.0.1:1", SMTPFrom: "berth@example.com"})
	create := func(to string) error {
		_, err := svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: "email", Config: map[string]any{"email": to}})
		return err
	}
	for _, ok := range []string{"ops@example.com", "Ops <ops@example.com>, dev@example.com"} {
		if err := create(ok); err != nil {
			t.Errorf("%q: %v", ok, err)
		}
	}
	many := strings.TrimSuffix(strings.Repeat("a@example.com,", notify.MaxEmailRecipients+1), ",")
	for _, bad := range []string{"", "x@", "not an address", many} {
		if err := create(bad); err == nil {
			t.Errorf("%q was accepted", bad[:min(len(bad), 40)])
		}
	}
}

// newService is a notification service over a fresh store (SQLite), its
// secrets sealed with a zero key.
func newService(t *testing.T, opts notify.Options) (*meta.DB, *notify.Service) {
	t.Helper()
	db := metatest.Open(t, metatest.Dialects()[0])
	sealer, err := auth.NewSealer(make([]byte, 32))
	if err != nil {
		t.Fatal(err)
	}
	return db, notify.New(wire.NotifyStores(db), sealer, opts)
}
