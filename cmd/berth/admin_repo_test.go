package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
)

func TestAdminRepo(t *testing.T) {
	for dialect, newStore := range adminStores(t) {
		t.Run(dialect, func(t *testing.T) {
			s := newStore(t)
			s.must(t, "user", "create", "alice")
			s.must(t, "org", "create", "acme", "--owner", "alice")

			out := s.must(t, "repo", "create", "acme/team/app")
			if !strings.Contains(out, "created repository acme/team/app (private, NORMAL)") {
				t.Fatalf("repo create printed %q", out)
			}
			s.must(t, "repo", "create", "acme/site", "--visibility", "public", "--description", "the web site")
			s.must(t, "repo", "create", "acme/frozen", "--state", "READ_ONLY")
			s.must(t, "repo", "create", "alice/mirror", "--state", "MIRROR", "--visibility", "public")

			s.refused(t, []string{`namespace "ghost" does not exist`, "berth admin org create ghost --owner USER", "berth admin user create ghost"},
				"repo", "create", "ghost/app")
			s.refused(t, []string{"acme/site already exists"}, "repo", "create", "acme/site")
			s.refused(t, []string{`unknown visibility "secret"`, "private, public"}, "repo", "create", "acme/x", "--visibility", "secret")
			s.refused(t, []string{`unknown state "FROZEN"`, "NORMAL, READ_ONLY, MIRROR"}, "repo", "create", "acme/x", "--state", "FROZEN")
			s.refused(t, []string{"NAMESPACE/NAME"}, "repo", "create", "app")
			s.refused(t, []string{"NAMESPACE/NAME"}, "repo", "create", "acme/")
			s.refused(t, []string{"acme/Bad"}, "repo", "create", "acme/Bad")
			s.refused(t, []string{"namespace", "+"}, "repo", "create", "acme+ci/app")

			rows := table(t, s.must(t, "repo", "list"), "REPOSITORY")
			want := []string{
				"acme/frozen private READ_ONLY",
				"acme/site public NORMAL",
				"acme/team/app private NORMAL",
				"alice/mirror public MIRROR",
			}
			if len(rows) != len(want) {
				t.Fatalf("repo list: %v, want %v", rows, want)
			}
			for i, w := range want {
				if got := strings.Join(rows[i], " "); got != w {
					t.Errorf("repo list row %d: %q, want %q", i, got, w)
				}
			}
			rows = table(t, s.must(t, "repo", "list", "--namespace", "alice"), "REPOSITORY")
			if len(rows) != 1 || rows[0][0] != "alice/mirror" {
				t.Fatalf("repo list --namespace alice: %v", rows)
			}

			// What the registry decides on: the stored settings, and the
			// owners' standing; and the repo_created events in the feed.
			db := s.open(t)
			ctx := context.Background()
			ri, err := db.Repositories().Repository(ctx, "acme/site")
			if err != nil || !ri.Exists || ri.Visibility != "public" || ri.State != "NORMAL" || ri.Description != "the web site" {
				t.Fatalf("acme/site stored as %+v, %v", ri, err)
			}
			alice, _ := db.Users().UserByName(ctx, "alice")
			if st, _ := db.Access().StandingOf(ctx, alice, "acme/frozen"); st.Role != "admin" {
				t.Fatalf("alice's standing on acme/frozen: %+v", st)
			}
			assertAudit(t, db, "create_repo", 4)
			assertAudit(t, db, "change_repo_state", 2)
		})
	}
}

// TestAdminRepoListPages: the list goes past one page of the store.
func TestAdminRepoListPages(t *testing.T) {
	if testing.Short() {
		t.Skip("creates 501 repositories")
	}
	s := adminStores(t)["sqlite"](t)
	s.must(t, "user", "create", "alice")
	db := s.open(t)
	ctx := context.Background()
	const n = 501
	for i := range n {
		if err := db.Repositories().CreateRepository(ctx, fmt.Sprintf("alice/r%04d", i), "private", "", "test", 0); err != nil {
			t.Fatal(err)
		}
	}
	rows := table(t, s.must(t, "repo", "list"), "REPOSITORY")
	if len(rows) != n || rows[0][0] != "alice/r0000" || rows[n-1][0] != fmt.Sprintf("alice/r%04d", n-1) {
		t.Fatalf("repo list: %d rows (want %d), first %v, last %v", len(rows), n, rows[0], rows[len(rows)-1])
	}
}
