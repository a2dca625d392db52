package meta_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestWebSessionOfAStaleSignIn: a sign-in that checked the password
// before a reset or a disable, and stores its session after the change
// ended the user's sessions, gets none: the session is stored only while
// the user is enabled and still has the secret hash the sign-in verified.
func TestWebSessionOfAStaleSignIn(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			users, sessions := db.Users(), db.WebSessions()
			ann, err := users.CreateUser(ctx, meta.User{Username: "ann", SecretHash: "old hash"})
			if err != nil {
				t.Fatal(err)
			}
			create := func(id, hash string) error {
				t.Helper()
				return sessions.CreateWebSession(ctx, meta.WebSession{IDHash: id, UserID: ann.ID, CSRF: "c",
					ExpiresAt: time.Now().Add(time.Hour), SecretFingerprint: meta.SecretFingerprint(hash)})
			}
			signedIn := func(id string) bool {
				t.Helper()
				s, err := sessions.WebSession(ctx, id, time.Now())
				if err != nil && !errors.Is(err, meta.ErrSessionNotFound) {
					t.Fatal(err)
				}
				return err == nil && s.Enabled
			}
			if err := create("before", "old hash"); err != nil || !signedIn("before") {
				t.Fatalf("a session with the current password: %v (signed in: %v)", err, signedIn("before"))
			}
			hash := "new hash"
			if _, err := users.UpdateUser(ctx, "ann", meta.UserChange{SecretHash: &hash}); err != nil {
				t.Fatal(err)
			}
			// The sign-in that checked the old password stores its session
			// after the reset.
			if err := create("late", "old hash"); !errors.Is(err, meta.ErrStaleSignIn) || signedIn("late") {
				t.Fatalf("a session of the old password after a reset: %v (signed in: %v), want %v", err, signedIn("late"), meta.ErrStaleSignIn)
			}
			if err := create("new", "new hash"); err != nil || !signedIn("new") {
				t.Fatalf("a session with the new password: %v", err)
			}
			off, on := false, true
			if _, err := users.UpdateUser(ctx, "ann", meta.UserChange{Enabled: &off}); err != nil {
				t.Fatal(err)
			}
			if err := create("while disabled", "new hash"); !errors.Is(err, meta.ErrStaleSignIn) {
				t.Fatalf("a session stored after the user was disabled: %v, want %v", err, meta.ErrStaleSignIn)
			}
			if _, err := users.UpdateUser(ctx, "ann", meta.UserChange{Enabled: &on}); err != nil {
				t.Fatal(err)
			}
			if signedIn("while disabled") {
				t.Fatal("a session stored while the user was disabled signs in once it is enabled again")
			}
			if err := sessions.CreateWebSession(ctx, meta.WebSession{IDHash: "gone", UserID: ann.ID + 1000, CSRF: "c",
				ExpiresAt: time.Now().Add(time.Hour), SecretFingerprint: meta.SecretFingerprint("new hash")}); !errors.Is(err, meta.ErrStaleSignIn) {
				t.Fatalf("a session of a user that does not exist: %v, want %v", err, meta.ErrStaleSignIn)
			}
		})
	}
}
