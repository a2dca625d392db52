package meta_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestDeletedNamesLeaveNothingBehind: what names an organization or a
// repository, rather than referring to its row, goes with it, or it
// would pass to whoever creates the name next: an organization's
// notifications (and any left of its repositories) and the access
// tokens' scopes within it (a token left with none is revoked; another
// keeps its other scopes), a repository's notifications, a user's
// namespace as an organization's. Another
// organization whose name shares the prefix keeps its own.
func TestDeletedNamesLeaveNothingBehind(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db) // acme and acme_x, no repositories
			token := func(name, scopes string) {
				t.Helper()
				if _, err := db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: name, SecretHash: "h-" + name, Scopes: json.RawMessage(scopes)}); err != nil {
					t.Fatal(err)
				}
			}
			token("mixed", `[{"repository":"acme/*","actions":["content/read"]},{"repository":"acme_x/app","actions":["content/read"]}]`)
			token("only", `[{"repository":"acme/team/app","actions":["content/write"]}]`)
			token("other", `[{"repository":"acme_x/*","actions":["content/read"]}]`)
			hook := func(scope, target string) {
				t.Helper()
				if _, err := db.Notifications().CreateNotification(ctx, meta.Notification{UUID: scope + ":" + target, Scope: scope, Target: target, Event: "repo_push", Method: "webhook",
					Config: json.RawMessage(`{"url":"https://example.com"}`)}); err != nil {
					t.Fatal(err)
				}
			}
			hook(meta.ScopeOrganization, "acme")
			hook(meta.ScopeRepository, "acme/left-behind")
			hook(meta.ScopeOrganization, "acme_x")
			hook(meta.ScopeRepository, "acme_x/app")
			if err := db.Organizations().DeleteOrganization(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
			if tk, err := db.Access().AccessTokenByName(ctx, "mixed"); err != nil || !tk.RevokedAt.IsZero() || string(tk.Scopes) != `[{"repository":"acme_x/app","actions":["content/read"]}]` {
				t.Errorf("mixed: %s revoked %v (%v), want only its acme_x scope", tk.Scopes, tk.RevokedAt, err)
			}
			if tk, err := db.Access().AccessTokenByName(ctx, "only"); err != nil || tk.RevokedAt.IsZero() {
				t.Errorf("only: revoked %v (%v), want revoked", tk.RevokedAt, err)
			}
			if tk, err := db.Access().AccessTokenByName(ctx, "other"); err != nil || !tk.RevokedAt.IsZero() || string(tk.Scopes) != `[{"repository":"acme_x/*","actions":["content/read"]}]` {
				t.Errorf("other: %s revoked %v (%v), want it untouched", tk.Scopes, tk.RevokedAt, err)
			}
			all, err := db.Notifications().AllNotifications(ctx)
			if err != nil {
				t.Fatal(err)
			}
			var left []string
			for _, n := range all {
				left = append(left, n.Scope+":"+n.Target)
			}
			if len(left) != 2 || left[0] != "organization:acme_x" || left[1] != "repository:acme_x/app" {
				t.Errorf("notifications left %v, want acme_x's two", left)
			}

			// A repository's notifications go with it.
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme_x/app", Manifest: manifestOf("app"), Tag: "v1"}); err != nil {
				t.Fatal(err)
			}
			if err := db.Repositories().DeleteRepository(ctx, "acme_x/app", "owner"); err != nil {
				t.Fatal(err)
			}
			if ns, _ := db.Notifications().Notifications(ctx, meta.ScopeRepository, "acme_x/app"); len(ns) != 0 {
				t.Errorf("the deleted repository's notifications stay: %v", ns)
			}
			if ns, _ := db.Notifications().Notifications(ctx, meta.ScopeOrganization, "acme_x"); len(ns) != 1 {
				t.Errorf("the organization's notification: %v", ns)
			}

			// A user's namespace goes the same way with the user.
			if _, err := db.Users().CreateUser(ctx, meta.User{Username: "alice", SecretHash: "x"}); err != nil {
				t.Fatal(err)
			}
			token("for-alice", `[{"repository":"alice/*","actions":["content/read"]}]`)
			hook(meta.ScopeRepository, "alice/app")
			if err := db.Users().DeleteUser(ctx, "alice"); err != nil {
				t.Fatal(err)
			}
			if tk, err := db.Access().AccessTokenByName(ctx, "for-alice"); err != nil || tk.RevokedAt.IsZero() {
				t.Errorf("a token scoped to the deleted user's namespace: revoked %v (%v)", tk.RevokedAt, err)
			}
			if ns, _ := db.Notifications().Notifications(ctx, meta.ScopeRepository, "alice/app"); len(ns) != 0 {
				t.Errorf("the deleted user's repository notifications stay: %v", ns)
			}
		})
	}
}

// TestNotificationsPerScopeAreCapped: a scope takes at most
// MaxNotificationsPerScope notifications (each delivery may hold a shared
// worker for its timeout); another scope is not affected.
func TestNotificationsPerScopeAreCapped(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			add := func(target string, i int) error {
				_, err := db.Notifications().CreateNotification(ctx, meta.Notification{UUID: fmt.Sprintf("%s-%d", target, i), Scope: meta.ScopeRepository,
					Target: target, Event: "repo_push", Method: "webhook", Config: json.RawMessage(`{"url":"https://example.com"}`)})
				return err
			}
			for i := range meta.MaxNotificationsPerScope {
				if err := add("acme/app", i); err != nil {
					t.Fatal(err)
				}
			}
			if err := add("acme/app", meta.MaxNotificationsPerScope); !errors.Is(err, meta.ErrTooManyNotifications) {
				t.Fatalf("one more: %v, want ErrTooManyNotifications", err)
			}
			if err := add("acme/other", 0); err != nil {
				t.Fatalf("another scope: %v", err)
			}
		})
	}
}

// TestUserNameOfAnAccessToken: a user cannot be created under the name of
// an unrevoked access token (clients log in with the token's name, and a
// user of that name would take its sign-ins), as a token cannot be
// created under a user's name; a revoked token's name is free.
func TestUserNameOfAnAccessToken(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			for _, name := range []string{"deploy", "old"} {
				if _, err := db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: name, SecretHash: "h-" + name, Scopes: json.RawMessage(`[]`), CreatedBy: "root"}); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Access().RevokeAccessToken(ctx, "old"); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Users().CreateUser(ctx, meta.User{Username: "deploy", SecretHash: "x"}); !errors.Is(err, meta.ErrExists) {
				t.Errorf("user named as a token: %v, want ErrExists", err)
			}
			if _, err := db.Users().CreateFirstUser(ctx, meta.User{Username: "deploy", SecretHash: "x"}, nil); !errors.Is(err, meta.ErrExists) {
				t.Errorf("first user named as a token: %v, want ErrExists", err)
			}
			if _, err := db.Users().UserByName(ctx, "deploy"); !errors.Is(err, meta.ErrUserNotFound) {
				t.Errorf("user deploy: %v, want none", err)
			}
			if _, err := db.Users().CreateUser(ctx, meta.User{Username: "old", SecretHash: "x"}); err != nil {
				t.Errorf("user named as a revoked token: %v", err)
			}
		})
	}
}

// TestOwnersDeletedAtOnce: of two owners of an organization deleted at
// the same moment, one is refused (ErrLastOwner): the organization keeps
// an owner. Before, on PostgreSQL, each deletion still saw the other
// owner and both went through.
func TestOwnersDeletedAtOnce(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			for round := range 10 {
				a, b, org := fmt.Sprint("a", round), fmt.Sprint("b", round), fmt.Sprint("org", round)
				ua, err := db.Users().CreateUser(ctx, meta.User{Username: a, SecretHash: "x"})
				if err != nil {
					t.Fatal(err)
				}
				ub, err := db.Users().CreateUser(ctx, meta.User{Username: b, SecretHash: "x"})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := db.Organizations().CreateOrganization(ctx, org, ua.ID); err != nil {
					t.Fatal(err)
				}
				owners, err := db.Organizations().TeamByName(ctx, org, meta.OwnersTeam)
				if err != nil {
					t.Fatal(err)
				}
				if err := db.Organizations().AddTeamMember(ctx, owners.ID, ub.ID); err != nil {
					t.Fatal(err)
				}
				errs := make(chan error, 2)
				for _, name := range []string{a, b} {
					go func() { errs <- db.Users().DeleteUser(ctx, name) }()
				}
				refused := 0
				for range 2 {
					if err := <-errs; errors.Is(err, meta.ErrLastOwner) {
						refused++
					} else if err != nil {
						t.Fatal(err)
					}
				}
				members, err := db.Organizations().OrgMembers(ctx, org)
				if err != nil {
					t.Fatal(err)
				}
				if refused != 1 || len(members) != 1 {
					t.Fatalf("round %d: %d deletions refused, %d members left; want 1 and 1", round, refused, len(members))
				}
			}
		})
	}
}
