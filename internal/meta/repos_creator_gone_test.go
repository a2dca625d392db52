package meta_test

import (
	"context"
	"errors"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestCreatorDeletedDuringPush: a push authorized for an account that is
// deleted before the push creates its repository (or the organization it
// may create) is refused with ErrCreatorGone (an ErrUserNotFound), not a foreign-key error,
// and leaves neither the repository nor the organization behind.
func TestCreatorDeletedDuringPush(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			bob, err := db.Users().CreateUser(ctx, meta.User{Username: "bob", SecretHash: "x"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Organizations().CreateOrganization(ctx, "acme", 0); err != nil {
				t.Fatal(err)
			}
			gone, err := db.Users().CreateUser(ctx, meta.User{Username: "gone", SecretHash: "x"})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Users().DeleteUser(ctx, "gone"); err != nil {
				t.Fatal(err)
			}

			for _, c := range []struct {
				repo string
				plan meta.RepoCreate
			}{
				{"acme/app", meta.RepoCreate{AdminUserID: gone.ID}},
				{"neworg/app", meta.RepoCreate{OrgOwnerID: gone.ID, AdminUserID: gone.ID}},
			} {
				err := db.Repositories().EnsureRepository(ctx, c.repo, meta.Writer{Actor: "gone", Create: &c.plan})
				if !errors.Is(err, meta.ErrCreatorGone) || !errors.Is(err, meta.ErrUserNotFound) {
					t.Fatalf("%s by a deleted account: %v, want ErrCreatorGone", c.repo, err)
				}
				if ri, _ := db.Repositories().Repository(ctx, c.repo); ri.Exists {
					t.Fatalf("%s: a refused push created the repository", c.repo)
				}
			}
			if _, err := db.Users().NamespaceByName(ctx, "neworg"); !errors.Is(err, meta.ErrNamespaceNotFound) {
				t.Fatalf("a refused push left organization neworg: %v", err)
			}

			// A live account still creates and administers.
			if err := db.Repositories().EnsureRepository(ctx, "acme/app", meta.Writer{Actor: "bob", Create: &meta.RepoCreate{AdminUserID: bob.ID}}); err != nil {
				t.Fatalf("acme/app by bob: %v", err)
			}
		})
	}
}
