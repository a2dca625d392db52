package server_test

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
)

// TestTrustedProxyClientsAreThrottledApart: behind a load balancer named
// in http.trustedProxies, login throttling counts the client address the
// balancer appends to X-Forwarded-For: 50 failed logins from one client
// throttle that client, not everyone else behind the balancer, and a
// client cannot pick its address by sending the header itself. Without
// the setting every client shares the balancer's address, and one client
// locked everyone out for the window.
func TestTrustedProxyClientsAreThrottledApart(t *testing.T) {
	for _, trusted := range []bool{true, false} {
		t.Run(fmt.Sprintf("trusted=%v", trusted), func(t *testing.T) {
			_, hs, db := startServer(t, func(c *config.Config) {
				if trusted {
					c.HTTP.TrustedProxies = []string{"127.0.0.0/8", "::1"}
				}
			})
			hash, _ := auth.HashPassword("owner-password")
			if _, err := db.Users().CreateUser(t.Context(), meta.User{Username: "owner", SecretHash: hash}); err != nil {
				t.Fatal(err)
			}
			login := func(forwardedFor, user, password string) int {
				t.Helper()
				req, _ := http.NewRequest("GET", hs.URL+"/v2/auth?service=berth", nil)
				req.SetBasicAuth(user, password)
				if forwardedFor != "" {
					req.Header.Set("X-Forwarded-For", forwardedFor)
				}
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				resp.Body.Close()
				return resp.StatusCode
			}
			// The attacker: 50 made-up names (the per-address limit).
			for i := range 50 {
				if st := login("203.0.113.7", fmt.Sprintf("nobody%d", i), "x"); st != 401 {
					t.Fatalf("failed login %d: %d", i, st)
				}
			}
			if st := login("203.0.113.7", "owner", "owner-password"); st != 429 {
				t.Fatalf("the attacker's address after 50 failures: %d, want 429", st)
			}
			// Pretending to be another client by sending the header: the
			// balancer appends the address it saw, which is the one counted.
			if st := login("198.51.100.1, 203.0.113.7", "owner", "owner-password"); trusted && st != 429 {
				t.Fatalf("the attacker naming another address itself: %d, want 429", st)
			}
			st := login("198.51.100.1", "owner", "owner-password")
			switch {
			case trusted && st != 200:
				t.Fatalf("another client behind the balancer: %d, want 200", st)
			case !trusted && st != 429:
				t.Fatalf("without trusted proxies every client shares the balancer's address: %d, want 429", st)
			}
		})
	}
}
