package authz_test

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestStaleTokenAsBasicIsNotCounted: the right secret of a revoked access
// token sent as Basic credentials under the token's name (a kubelet's
// stale pull secret, `docker login -u <token>`) is refused (401) and
// audited at most once a minute, but not counted as a failed guess: it
// must not throttle the other clients of its address.
func TestStaleTokenAsBasicIsNotCounted(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, authz.Options{AddressLimit: 3, PairLimit: 100, Window: time.Hour})
			mk := func(name string) string {
				t.Helper()
				scopes, _ := json.Marshal([]auth.TokenScope{{Repository: "alice/*", Actions: []string{auth.TokenContentRead}}})
				secret, _ := auth.NewSecret(authz.SecretPrefix)
				if _, err := e.db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: name, SecretHash: auth.HashSecret(secret), Scopes: scopes}); err != nil {
					t.Fatal(err)
				}
				return secret
			}
			revoked, good := mk("revoked-token"), mk("good-token")
			if err := e.db.Access().RevokeAccessToken(ctx, "revoked-token"); err != nil {
				t.Fatal(err)
			}
			for i := range 5 {
				if st := e.raw("GET", "/v2/", basicAuth("revoked-token", revoked)).status; st != 401 {
					t.Fatalf("a revoked token's secret as Basic credentials (%d): %d, want 401", i, st)
				}
			}
			entries, err := e.db.Access().AuditLog(ctx, "", 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			failures := 0
			for _, en := range entries {
				if en.Kind == "login_failure" {
					failures++
				}
			}
			if failures != 1 {
				t.Fatalf("%d login failures audited for a revoked token sent 5 times, want 1", failures)
			}
			if st := e.raw("GET", "/v2/", basicAuth("good-token", good)).status; st != 200 {
				t.Fatalf("a good token after a revoked one was sent past the address's limit: %d, want 200", st)
			}
		})
	}
}
