package meta_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestUpdateUser: a superuser's changes to a user land together; a new
// password or disabling ends the user's web sessions, an e-mail change
// does not; robots are not users here; ListUsers pages by name and can
// leave the disabled out.
func TestUpdateUser(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			users, sessions := db.Users(), db.WebSessions()
			var ann meta.User
			for _, name := range []string{"cat", "ann", "bob"} {
				u, err := users.CreateUser(ctx, meta.User{Username: name, SecretHash: "old hash"})
				if err != nil {
					t.Fatal(err)
				}
				if name == "ann" {
					ann = u
				}
			}
			if _, err := users.CreateRobot(ctx, "ann", "ci", "token hash"); err != nil {
				t.Fatal(err)
			}
			session := func(id string) {
				t.Helper()
				if err := sessions.CreateWebSession(ctx, meta.WebSession{IDHash: id, UserID: ann.ID, CSRF: "c", ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
					t.Fatal(err)
				}
			}
			signedIn := func(id string) bool {
				t.Helper()
				_, err := sessions.WebSession(ctx, id, time.Now())
				if err != nil && !errors.Is(err, meta.ErrSessionNotFound) {
					t.Fatal(err)
				}
				return err == nil
			}
			session("s1")
			email, off, on, hash := "ann@example.com", false, true, "new hash"
			u, err := users.UpdateUser(ctx, "ann", meta.UserChange{Email: &email})
			if err != nil || u.Email != email || !u.Enabled || u.SecretHash != "old hash" || !signedIn("s1") {
				t.Fatalf("e-mail change: %+v %v (signed in: %v)", u, err, signedIn("s1"))
			}
			u, err = users.UpdateUser(ctx, "ann", meta.UserChange{Enabled: &off})
			if err != nil || u.Enabled || u.Email != email || signedIn("s1") {
				t.Fatalf("disabled: %+v %v (a session survived: %v)", u, err, signedIn("s1"))
			}
			session("s2")
			u, err = users.UpdateUser(ctx, "ann", meta.UserChange{Enabled: &on, SecretHash: &hash})
			if err != nil || !u.Enabled || u.SecretHash != hash || signedIn("s2") {
				t.Fatalf("enabled with a new password: %+v %v (a session survived: %v)", u, err, signedIn("s2"))
			}
			if got, _ := users.UserByName(ctx, "ann"); got.SecretHash != hash || !got.Enabled || got.Email != email {
				t.Fatalf("stored: %+v", got)
			}
			for _, name := range []string{"ann+ci", "nobody"} {
				if _, err := users.UpdateUser(ctx, name, meta.UserChange{Enabled: &off}); !errors.Is(err, meta.ErrUserNotFound) {
					t.Errorf("%s: %v, want ErrUserNotFound", name, err)
				}
			}

			names := func(q meta.UserQuery) string {
				t.Helper()
				list, err := users.ListUsers(ctx, q)
				if err != nil {
					t.Fatal(err)
				}
				s := ""
				for _, u := range list {
					s += u.Username + " "
				}
				return s
			}
			if _, err := users.UpdateUser(ctx, "bob", meta.UserChange{Enabled: &off}); err != nil {
				t.Fatal(err)
			}
			for _, tc := range []struct {
				q    meta.UserQuery
				want string
			}{
				{meta.UserQuery{}, "ann bob cat "},
				{meta.UserQuery{Limit: 2}, "ann bob "},
				{meta.UserQuery{After: "ann", Limit: 2}, "bob cat "},
				{meta.UserQuery{EnabledOnly: true}, "ann cat "},
			} {
				if got := names(tc.q); got != tc.want {
					t.Errorf("%+v: %q, want %q", tc.q, got, tc.want)
				}
			}
		})
	}
}
