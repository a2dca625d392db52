package authz_test

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/authz"
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
