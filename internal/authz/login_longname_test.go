package authz

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// keyRecorder notes every throttle key a login counts under.
type keyRecorder struct {
	*countingStore
	mu   sync.Mutex
	keys []string
	errs []error
}

func (s *keyRecorder) ReserveLoginAttempt(ctx context.Context, window time.Duration, limits ...meta.LoginLimit) (bool, time.Duration, error) {
	ok, wait, err := s.countingStore.ReserveLoginAttempt(ctx, window, limits...)
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, l := range limits {
		s.keys = append(s.keys, l.Key)
	}
	if err != nil {
		s.errs = append(s.errs, err)
	}
	return ok, wait, err
}

// TestLongUsernamesAreThrottledAndNotStored: sign-ins with names no
// account can have (100 KB, a new one each time, as from the web form or
// as Basic credentials) count against the client address like any other
// failure, so the 51st from one address is throttled, on PostgreSQL too
// (whose key index refuses long rows), and neither the throttle keys nor
// the audit log's actors keep the whole name.
func TestLongUsernamesAreThrottledAndNotStored(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			e := newLoginEnv(t, d, Options{})
			rec := &keyRecorder{countingStore: e.store}
			e.az.store.Access = rec
			raw := make([]byte, 50<<10)
			for i := range 60 {
				if _, err := rand.Read(raw); err != nil {
					t.Fatal(err)
				}
				name := hex.EncodeToString(raw) // 100 KB
				_, err := e.az.Login(ctx, from("10.0.0.7", "", ""), name, "some-password")
				var re *RetryError
				switch {
				case i < 50 && !errors.Is(err, ErrBadCredentials):
					t.Fatalf("attempt %d with a 100 KB name: %v, want %v", i+1, err, ErrBadCredentials)
				case i >= 50 && !(errors.Is(err, ErrThrottled) && errors.As(err, &re) && re.RetryAfter() >= time.Second):
					t.Fatalf("attempt %d with a 100 KB name, past the address's limit of 50: %v, want %v", i+1, err, ErrThrottled)
				}
			}
			// A name of up to 256 bytes (here a robot's, one SHA-256 a
			// check) keeps its account-and-address counter, under its hash.
			long := "acme+" + strings.Repeat("r", 200)
			for i := range 11 {
				_, err := e.az.Login(ctx, from("10.0.0.9", "", ""), long, "wrong")
				if i < 10 && !errors.Is(err, ErrBadCredentials) || i == 10 && !errors.Is(err, ErrThrottled) {
					t.Fatalf("wrong secret %d for a 205-byte robot name: %v", i+1, err)
				}
			}
			if len(rec.errs) > 0 {
				t.Fatalf("%d failed logins could not be counted: %v", len(rec.errs), rec.errs[0])
			}
			for _, k := range rec.keys {
				if len(k) > 512 {
					t.Fatalf("a throttle key of %d bytes was stored", len(k))
				}
			}
			entries, err := e.store.AuditLog(ctx, "", 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, en := range entries {
				if en.Kind != "login_failure" {
					continue
				}
				n++
				if len(en.Actor) > 512 {
					t.Fatalf("an audit entry's actor has %d bytes", len(en.Actor))
				}
			}
			if n != 60 {
				t.Fatalf("%d login failures audited, want 60 (50 long names, 10 robot secrets)", n)
			}
			// A name that can exist still has its own account-and-address
			// counter: alice is throttled from another address after 10
			// wrong passwords, and only there.
			for i := range 11 {
				_, err := e.az.Login(ctx, from("10.0.0.8", "", ""), "alice", "wrong")
				if i < 10 && !errors.Is(err, ErrBadCredentials) || i == 10 && !errors.Is(err, ErrThrottled) {
					t.Fatalf("wrong password %d for alice: %v", i+1, err)
				}
			}
		})
	}
}
