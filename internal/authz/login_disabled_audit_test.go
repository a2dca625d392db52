package authz_test

import (
	"context"
	"testing"

	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestDisabledUserLoginAuditedOnce: a disabled user's right password is
// refused (401) and audited as a login_failure at most once a minute per
// account, as a disabled robot's or a revoked token's secret is
// (docs/access.md): a client still sending it on every request does not
// write an audit row each time.
func TestDisabledUserLoginAuditedOnce(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, authz.Options{})
			off := false
			if _, err := e.db.Users().UpdateUser(ctx, "bob", meta.UserChange{Enabled: &off}); err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				if st := e.raw("GET", "/v2/", basicAuth("bob", bobPW)).status; st != 401 {
					t.Fatalf("disabled bob's right password (%d): %d, want 401", i, st)
				}
			}
			entries, err := e.db.Access().AuditLog(ctx, "", 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			failures := 0
			for _, en := range entries {
				if en.Kind == "login_failure" && en.Actor == "bob" {
					failures++
				}
			}
			if failures != 1 {
				t.Fatalf("%d login failures audited for disabled bob's right password sent twice, want 1", failures)
			}
		})
	}
}
