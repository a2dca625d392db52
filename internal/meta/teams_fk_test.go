package meta_test

import (
	"context"
	"errors"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestTeamAndPermissionWritesToDeletedParents: a membership, a permission
// or an organization's owner written for a team, user, robot or
// repository deleted since the caller looked it up is not found (the
// parent that is gone, the team or repository first), not the foreign
// key's refusal, which the API answered 500.
func TestTeamAndPermissionWritesToDeletedParents(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, d)
			orgs, users, access := db.Organizations(), db.Users(), db.Access()
			user := func(name string) meta.User {
				t.Helper()
				u, err := users.CreateUser(ctx, meta.User{Username: name, SecretHash: "x"})
				if err != nil {
					t.Fatal(err)
				}
				return u
			}
			team := func(name string) meta.Team {
				t.Helper()
				tm, err := orgs.PutTeam(ctx, "acme", meta.Team{Name: name, Role: "member"})
				if err != nil {
					t.Fatal(err)
				}
				return tm
			}
			deleteUser := func(name string) {
				t.Helper()
				if err := users.DeleteUser(ctx, name); err != nil {
					t.Fatal(err)
				}
			}
			deleteTeam := func(name string) {
				t.Helper()
				if err := orgs.DeleteTeam(ctx, "acme", name); err != nil {
					t.Fatal(err)
				}
			}
			repo := func(name string) int64 {
				t.Helper()
				if err := db.Repositories().CreateRepository(ctx, name, "private", "", "owner", 0); err != nil {
					t.Fatal(err)
				}
				ri, err := db.Repositories().Repository(ctx, name)
				if err != nil {
					t.Fatal(err)
				}
				return ri.ID
			}
			owner := user("owner")
			if _, err := orgs.CreateOrganization(ctx, "acme", owner.ID); err != nil {
				t.Fatal(err)
			}
			bob, carol := user("bob"), user("carol")

			devs := team("devs")
			deleteTeam("devs")
			if err := orgs.AddTeamMember(ctx, devs.ID, bob.ID); !errors.Is(err, meta.ErrTeamNotFound) {
				t.Errorf("AddTeamMember to a deleted team: %v, want ErrTeamNotFound", err)
			}
			qa := team("qa")
			deleteUser("carol")
			if err := orgs.AddTeamMember(ctx, qa.ID, carol.ID); !errors.Is(err, meta.ErrUserNotFound) {
				t.Errorf("AddTeamMember of a deleted user: %v, want ErrUserNotFound", err)
			}
			ops, dave := team("ops"), user("dave")
			deleteTeam("ops")
			deleteUser("dave")
			if err := orgs.AddTeamMember(ctx, ops.ID, dave.ID); !errors.Is(err, meta.ErrTeamNotFound) {
				t.Errorf("AddTeamMember of a deleted user to a deleted team: %v, want ErrTeamNotFound", err)
			}
			if err := orgs.AddTeamMember(ctx, qa.ID, bob.ID); err != nil {
				t.Fatalf("AddTeamMember: %v", err)
			}
			if err := orgs.AddTeamMember(ctx, qa.ID, bob.ID); err != nil {
				t.Fatalf("AddTeamMember again: %v", err)
			}

			app := repo("acme/app")
			if err := db.Repositories().DeleteRepository(ctx, "acme/app", "owner"); err != nil {
				t.Fatal(err)
			}
			if err := access.SetPermission(ctx, app, bob.ID, 0, "read"); !errors.Is(err, meta.ErrRepositoryNotFound) {
				t.Errorf("SetPermission of a user on a deleted repository: %v, want ErrRepositoryNotFound", err)
			}
			if err := access.SetPermission(ctx, app, 0, qa.ID, "read"); !errors.Is(err, meta.ErrRepositoryNotFound) {
				t.Errorf("SetPermission of a team on a deleted repository: %v, want ErrRepositoryNotFound", err)
			}
			if err := access.SetPermission(ctx, app, carol.ID, 0, "read"); !errors.Is(err, meta.ErrRepositoryNotFound) {
				t.Errorf("SetPermission of a deleted user on a deleted repository: %v, want ErrRepositoryNotFound", err)
			}
			web := repo("acme/web")
			if err := access.SetPermission(ctx, web, carol.ID, 0, "write"); !errors.Is(err, meta.ErrUserNotFound) {
				t.Errorf("SetPermission of a deleted user: %v, want ErrUserNotFound", err)
			}
			if err := access.SetPermission(ctx, web, 0, devs.ID, "write"); !errors.Is(err, meta.ErrTeamNotFound) {
				t.Errorf("SetPermission of a deleted team: %v, want ErrTeamNotFound", err)
			}
			robot, err := users.CreateRobot(ctx, "acme", "ci", "x")
			if err != nil {
				t.Fatal(err)
			}
			if err := users.DeleteRobot(ctx, robot.Username); err != nil {
				t.Fatal(err)
			}
			if err := access.SetPermission(ctx, web, robot.ID, 0, "write"); !errors.Is(err, meta.ErrUserNotFound) {
				t.Errorf("SetPermission of a deleted robot: %v, want ErrUserNotFound", err)
			}
			if err := orgs.AddTeamMember(ctx, qa.ID, robot.ID); !errors.Is(err, meta.ErrUserNotFound) {
				t.Errorf("AddTeamMember of a deleted robot: %v, want ErrUserNotFound", err)
			}
			if err := access.SetPermission(ctx, web, bob.ID, 0, "write"); err != nil {
				t.Fatalf("SetPermission: %v", err)
			}
			if err := access.SetPermission(ctx, web, 0, qa.ID, "read"); err != nil {
				t.Fatalf("SetPermission of a team: %v", err)
			}

			if _, err := orgs.CreateOrganization(ctx, "beta", carol.ID); !errors.Is(err, meta.ErrUserNotFound) {
				t.Errorf("CreateOrganization owned by a deleted user: %v, want ErrUserNotFound", err)
			}
			if _, err := users.NamespaceByName(ctx, "beta"); !errors.Is(err, meta.ErrNamespaceNotFound) {
				t.Errorf("the refused organization was left: %v", err)
			}
		})
	}
}
