package meta_test

import (
	"context"
	"errors"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestNoPhantomNamespaces: a repository is only ever created in a
// namespace that exists, or that the creating write makes an organization
// (owned by the pusher, or by nobody in auth mode "none"); otherwise the
// write is refused with a *NamespaceMissingError naming the namespace and
// the setting, and leaves nothing behind.
func TestNoPhantomNamespaces(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			alice, err := db.Users().CreateUser(ctx, meta.User{Username: "alice", SecretHash: "x"})
			if err != nil {
				t.Fatal(err)
			}

			// A plan that may not create the namespace: refused, nothing left.
			err = db.Repositories().EnsureRepository(ctx, "ghost/app", meta.Writer{Actor: "root", Create: &meta.RepoCreate{Visibility: "private"}})
			var missing *meta.NamespaceMissingError
			if !errors.As(err, &missing) || missing.Namespace != "ghost" || !errors.Is(err, meta.ErrNamespaceNotFound) {
				t.Fatalf("push into a missing namespace: %v, want a NamespaceMissingError for ghost", err)
			}
			if want := "namespace ghost does not exist (create it, or enable CREATE_NAMESPACE_ON_PUSH)"; err.Error() != want {
				t.Fatalf("message %q, want %q", err, want)
			}
			if ri, _ := db.Repositories().Repository(ctx, "ghost/app"); ri.Exists {
				t.Fatal("a refused push created the repository")
			}
			if _, err := db.Users().NamespaceByName(ctx, "ghost"); !errors.Is(err, meta.ErrNamespaceNotFound) {
				t.Fatalf("a refused push left a namespace: %v", err)
			}
			evs, _ := db.Outbox().EventsAfter(ctx, 0, 100)
			for _, ev := range evs {
				if ev.Repository == "ghost/app" {
					t.Fatalf("a refused push left event %s", ev.Kind)
				}
			}

			// An existing namespace (a user's) needs no permission to create it.
			if err := db.Repositories().EnsureRepository(ctx, "alice/app", meta.Writer{Create: &meta.RepoCreate{}}); err != nil {
				t.Fatalf("push into alice's namespace: %v", err)
			}

			// CREATE_NAMESPACE_ON_PUSH: an organization owned by the pusher.
			if err := db.Repositories().EnsureRepository(ctx, "neworg/team/app", meta.Writer{Actor: "alice", Create: &meta.RepoCreate{OrgOwnerID: alice.ID, AdminUserID: alice.ID}}); err != nil {
				t.Fatal(err)
			}
			if ns, err := db.Users().NamespaceByName(ctx, "neworg"); err != nil || ns.Kind != meta.NamespaceOrg {
				t.Fatalf("namespace neworg: %+v %v, want an organization", ns, err)
			}
			if role, _ := db.Organizations().OrgRole(ctx, "neworg", alice.ID); role != "admin" {
				t.Fatalf("the pusher's role in the organization it created: %q, want admin (owner)", role)
			}
			// The organization is real: creating it again is refused.
			if _, err := db.Organizations().CreateOrganization(ctx, "neworg", alice.ID); !errors.Is(err, meta.ErrExists) {
				t.Fatalf("a second organization neworg: %v, want ErrExists", err)
			}

			// Auth mode "none" (and writers that decide nothing): an
			// organization without owners.
			for _, w := range []meta.Writer{{Create: &meta.RepoCreate{OwnerlessOrg: true}}, {}} {
				repo := "open" + map[bool]string{true: "plan", false: "nil"}[w.Create != nil] + "/app"
				if err := db.Repositories().EnsureRepository(ctx, repo, w); err != nil {
					t.Fatalf("%s: %v", repo, err)
				}
				ns, err := db.Users().NamespaceByName(ctx, repo[:len(repo)-4])
				if err != nil || ns.Kind != meta.NamespaceOrg {
					t.Fatalf("namespace of %s: %+v %v, want an organization", repo, ns, err)
				}
				members, err := db.Organizations().OrgMembers(ctx, ns.Name)
				if err != nil || len(members) != 0 {
					t.Fatalf("members of %s: %v %v, want none", ns.Name, members, err)
				}
			}
		})
	}
}
