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

func TestLoginThrottling(t *testing.T) {
	// The window must outlast three password hashes, which on a loaded
	// machine under -race take seconds: when they took the whole window
	// (the fourth login then comes after it), the test runs again with a
	// window twice as long.
	var e *env
	for window := 4 * time.Second; ; window *= 2 {
		e = newEnv(t, "sqlite", authz.Options{PairLimit: 3, AddressLimit: 100, Window: window})
		start := time.Now()
		for i := 0; i < 3; i++ {
			if s, _ := e.token("alice", "wrong", "repository:alice/app:pull"); s != 401 {
				t.Fatalf("attempt %d: %d", i, s)
			}
		}
		// Now even the right password is refused from this address for a while...
		if s, _ := e.token("alice", alicePW, "repository:alice/app:pull"); s != 429 {
			if took := time.Since(start); took >= window && window < time.Minute {
				t.Logf("the failed logins took %v, the whole %v window: again with a longer one", took, window)
				continue
			}
			t.Fatalf("throttled login: %d", s)
		}
		// ...but another account from the same address is not.
		if s, _ := e.token("bob", bobPW, "repository:bob/app:pull"); s != 200 {
			t.Fatalf("bob during alice's throttle: %d", s)
		}
		// And the legitimate user gets back in after the window.
		time.Sleep(window + 100*time.Millisecond)
		if s, _ := e.token("alice", alicePW, "repository:alice/app:pull"); s != 200 {
			t.Fatalf("after the window: %d", s)
		}
		break
	}
	entries, _ := e.db.Access().AuditLog(context.Background(), "", 0, 100)
	failures := 0
	for _, en := range entries {
		if en.Kind == "login_failure" && en.Actor == "alice" {
			failures++
		}
	}
	if failures != 3 {
		t.Fatalf("%d login failures audited, want 3", failures)
	}
}

// TestBearerSecretsAreThrottled: an access token's secret sent as a
// bearer token (API clients) is throttled and audited as the same secret
// sent as Basic credentials is: a revoked or wrong one is a login_failure
// in the audit log and counts against the client address, and from a
// throttled address even the right one is answered 429.
func TestBearerSecretsAreThrottled(t *testing.T) {
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
			failures := func() int {
				t.Helper()
				entries, err := e.db.Access().AuditLog(ctx, "", 0, 100)
				if err != nil {
					t.Fatal(err)
				}
				n := 0
				for _, en := range entries {
					if en.Kind == "login_failure" {
						n++
					}
				}
				return n
			}
			if st := e.raw("GET", "/v2/", "Bearer "+good).status; st != 200 {
				t.Fatalf("the right secret as a bearer token: %d", st)
			}
			// A revoked secret is no guess: refused and audited (once a
			// minute), not counted, so that one client still polling with
			// it does not throttle its address's other clients.
			for i := range 5 {
				if st := e.raw("GET", "/v2/", "Bearer "+revoked).status; st != 401 {
					t.Fatalf("a revoked secret as a bearer token (%d): %d, want 401", i, st)
				}
			}
			if n := failures(); n != 1 {
				t.Fatalf("%d login failures audited for a revoked bearer secret sent 5 times, want 1", n)
			}
			if st := e.raw("GET", "/v2/", "Bearer "+good).status; st != 200 {
				t.Fatalf("the right secret after a revoked one was sent past the address's limit: %d, want 200", st)
			}
			for i := range 3 {
				if st := e.raw("GET", "/v2/", "Bearer "+authz.SecretPrefix+"wrong").status; st != 401 {
					t.Fatalf("wrong bearer secret %d: %d, want 401", i, st)
				}
			}
			if n := failures(); n != 4 {
				t.Fatalf("%d login failures audited, want 4", n)
			}
			// The address's counter is full: the right secret, as a
			// bearer token or as Basic credentials, is refused for now.
			a := e.raw("GET", "/v2/", "Bearer "+good)
			if a.status != 429 || a.header.Get("Retry-After") == "" {
				t.Fatalf("the right bearer secret from a throttled address: %d (Retry-After %q), want 429", a.status, a.header.Get("Retry-After"))
			}
			if st := e.raw("GET", "/v2/", basicAuth("good-token", good)).status; st != 429 {
				t.Fatalf("the right secret as Basic credentials from a throttled address: %d, want 429", st)
			}
		})
	}
}
