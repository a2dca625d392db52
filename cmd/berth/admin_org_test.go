package main

import (
	"context"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// adminStore is where the admin commands of a test work: a data directory
// (SQLite) or a PostgreSQL schema of the test's own.
type adminStore struct {
	flags []string // --data-dir DIR or --database URL
	dsn   string
}

// adminStores returns a store for each dialect metatest tests.
func adminStores(t *testing.T) map[string]func(t *testing.T) adminStore {
	out := map[string]func(t *testing.T) adminStore{}
	for _, d := range metatest.Dialects() {
		switch d {
		case "sqlite":
			out[d] = func(t *testing.T) adminStore {
				dir := t.TempDir()
				return adminStore{flags: []string{"--data-dir", dir}, dsn: filepath.Join(dir, "berth.db")}.created(t)
			}
		case "postgres":
			out[d] = func(t *testing.T) adminStore {
				dsn := metatest.PostgresDSN(t)
				// The data directory still holds the secret key.
				return adminStore{flags: []string{"--data-dir", t.TempDir(), "--database", dsn}, dsn: dsn}.created(t)
			}
		}
	}
	return out
}

// created makes the store's database, as a registry's first start does
// (berth admin refuses a database that does not exist).
func (s adminStore) created(t *testing.T) adminStore {
	t.Helper()
	s.must(t, "migrate")
	return s
}

// admin runs `berth admin ARGS` on the store and returns its output.
func (s adminStore) admin(t *testing.T, args ...string) (string, error) {
	t.Helper()
	return runIn(t, "", append(append([]string{"admin"}, args...), s.flags...)...)
}

// must runs `berth admin ARGS` and fails the test if it fails.
func (s adminStore) must(t *testing.T, args ...string) string {
	t.Helper()
	out, err := s.admin(t, args...)
	if err != nil {
		t.Fatalf("berth admin %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// refused runs `berth admin ARGS`, which must fail with an error naming
// every one of want.
func (s adminStore) refused(t *testing.T, want []string, args ...string) {
	t.Helper()
	out, err := s.admin(t, args...)
	if err == nil {
		t.Fatalf("berth admin %s succeeded:\n%s", strings.Join(args, " "), out)
	}
	for _, w := range want {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("berth admin %s: error %q does not say %q", strings.Join(args, " "), err, w)
		}
	}
}

func (s adminStore) open(t *testing.T) *meta.DB {
	t.Helper()
	db, err := meta.Open(context.Background(), s.dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// table parses the rows of a list command's table (header dropped) into
// their whitespace-separated fields.
func table(t *testing.T, out string, header string) [][]string {
	t.Helper()
	lines := strings.Split(strings.TrimRight(out, "\n"), "\n")
	if len(lines) == 0 || !strings.HasPrefix(lines[0], header) {
		t.Fatalf("list output does not start with %q:\n%s", header, out)
	}
	var rows [][]string
	for _, l := range lines[1:] {
		rows = append(rows, strings.Fields(l))
	}
	return rows
}

func TestAdminOrg(t *testing.T) {
	for dialect, newStore := range adminStores(t) {
		t.Run(dialect, func(t *testing.T) {
			s := newStore(t)
			s.must(t, "user", "create", "alice")
			s.must(t, "user", "create", "bob")
			s.must(t, "robot", "create", "alice+ci")

			if rows := table(t, s.must(t, "org", "list"), "ORGANIZATION"); len(rows) != 0 {
				t.Fatalf("org list of a fresh store: %v", rows)
			}
			out := s.must(t, "org", "create", "acme", "--owner", "alice", "--email", "ops@acme.example")
			if !strings.Contains(out, "created organization acme (owner: alice)") {
				t.Fatalf("org create printed %q", out)
			}
			s.must(t, "org", "create", "beta", "--owner", "bob")

			s.refused(t, []string{`unknown user "carol"`, "berth admin user create carol"}, "org", "create", "gamma", "--owner", "carol")
			s.refused(t, []string{`"acme" already exists`}, "org", "create", "acme", "--owner", "bob")
			s.refused(t, []string{`"alice" already exists`}, "org", "create", "alice", "--owner", "bob")
			s.refused(t, []string{"robot"}, "org", "create", "gamma", "--owner", "alice+ci")
			s.refused(t, []string{"owner"}, "org", "create", "gamma")
			s.refused(t, []string{"Bad/Name"}, "org", "create", "Bad/Name", "--owner", "alice")
			s.refused(t, []string{"e-mail"}, "org", "create", "gamma", "--owner", "alice", "--email", "not an address")
			// A user of an organization's name cannot be created either.
			s.refused(t, []string{`"acme" already exists`}, "user", "create", "acme")

			rows := table(t, s.must(t, "org", "list"), "ORGANIZATION")
			want := [][]string{{"acme", "alice", "ops@acme.example"}, {"beta", "bob", "-"}}
			if len(rows) != len(want) || strings.Join(rows[0], " ") != strings.Join(want[0], " ") || strings.Join(rows[1], " ") != strings.Join(want[1], " ") {
				t.Fatalf("org list rows %v, want %v", rows, want)
			}

			// What the API and the registry see: an organization whose owners
			// team holds alice and administers it.
			db := s.open(t)
			ctx := context.Background()
			ns, err := db.Users().NamespaceByName(ctx, "acme")
			if err != nil || ns.Kind != meta.NamespaceOrg || ns.Email != "ops@acme.example" {
				t.Fatalf("acme stored as %+v, %v", ns, err)
			}
			alice, _ := db.Users().UserByName(ctx, "alice")
			if role, _ := db.Organizations().OrgRole(ctx, "acme", alice.ID); role != "admin" {
				t.Fatalf("alice's role in acme: %q, want admin", role)
			}
			if st, _ := db.Access().StandingOf(ctx, alice, "acme/app"); st.Role != "admin" || !st.CanCreate {
				t.Fatalf("alice's standing on acme/app: %+v", st)
			}
			assertAudit(t, db, "org_create", 2)
		})
	}
}

func TestAdminTeam(t *testing.T) {
	for dialect, newStore := range adminStores(t) {
		t.Run(dialect, func(t *testing.T) {
			s := newStore(t)
			for _, u := range []string{"alice", "bob", "carol"} {
				s.must(t, "user", "create", u)
			}
			s.must(t, "org", "create", "acme", "--owner", "alice")
			s.must(t, "org", "create", "other", "--owner", "alice")
			s.must(t, "robot", "create", "acme+deploy")
			s.must(t, "robot", "create", "other+deploy")

			out := s.must(t, "team", "create", "acme", "builders", "--role", "creator", "--description", "CI")
			if !strings.Contains(out, "created team builders in acme (role: creator)") {
				t.Fatalf("team create printed %q", out)
			}
			s.must(t, "team", "create", "acme", "readers") // role member by default
			s.refused(t, []string{"already exists"}, "team", "create", "acme", "builders", "--role", "admin")
			s.refused(t, []string{"already exists"}, "team", "create", "acme", "owners", "--role", "member")
			s.refused(t, []string{`unknown team role "boss"`, "member, creator, admin"}, "team", "create", "acme", "x", "--role", "boss")
			s.refused(t, []string{`unknown organization "nope"`, "berth admin org create nope"}, "team", "create", "nope", "x")
			s.refused(t, []string{`"bob" is a user's namespace`}, "team", "create", "bob", "x")
			s.refused(t, []string{"Bad.-Team"}, "team", "create", "acme", "Bad.-Team")

			out = s.must(t, "team", "add-member", "acme", "builders", "bob")
			if !strings.Contains(out, "added bob to team builders of acme") {
				t.Fatalf("add-member printed %q", out)
			}
			s.must(t, "team", "add-member", "acme", "builders", "acme+deploy")
			if out := s.must(t, "team", "add-member", "acme", "builders", "bob"); !strings.Contains(out, "already in team builders") {
				t.Fatalf("second add-member printed %q", out)
			}
			s.refused(t, []string{`unknown user "dave"`}, "team", "add-member", "acme", "builders", "dave")
			s.refused(t, []string{`unknown team "ghosts"`, "berth admin team create acme ghosts"}, "team", "add-member", "acme", "ghosts", "bob")
			s.refused(t, []string{"robot other+deploy belongs to namespace other"}, "team", "add-member", "acme", "builders", "other+deploy")
			s.refused(t, []string{`unknown organization "nope"`}, "team", "add-member", "nope", "builders", "bob")

			rows := table(t, s.must(t, "team", "list", "acme"), "TEAM")
			got := map[string]string{}
			for _, r := range rows {
				got[r[0]] = strings.Join(r[1:], " ")
			}
			want := map[string]string{"builders": "creator acme+deploy,bob", "owners": "admin alice", "readers": "member -"}
			if len(got) != len(want) {
				t.Fatalf("team list: %v, want %v", got, want)
			}
			for k, v := range want {
				if got[k] != v {
					t.Errorf("team list row %s: %q, want %q", k, got[k], v)
				}
			}
			s.refused(t, []string{`unknown organization "nope"`}, "team", "list", "nope")

			// bob may now create repositories in acme (creator), carol may not.
			db := s.open(t)
			ctx := context.Background()
			bob, _ := db.Users().UserByName(ctx, "bob")
			carol, _ := db.Users().UserByName(ctx, "carol")
			if st, _ := db.Access().StandingOf(ctx, bob, "acme/app"); !st.CanCreate {
				t.Fatalf("bob in a creator team cannot create acme/app: %+v", st)
			}
			if st, _ := db.Access().StandingOf(ctx, carol, "acme/app"); st.CanCreate || st.Role != "" {
				t.Fatalf("carol, in no team, stands %+v on acme/app", st)
			}
			team, _ := db.Organizations().TeamByName(ctx, "acme", "builders")
			if team.Description != "CI" {
				t.Fatalf("builders stored as %+v", team)
			}
			assertAudit(t, db, "team_change", 2)
			assertAudit(t, db, "team_member_add", 2)
		})
	}
}

// assertAudit checks the audit log holds n entries of a kind by berth admin.
func assertAudit(t *testing.T, db *meta.DB, kind string, n int) {
	t.Helper()
	entries, err := db.Access().AuditLog(context.Background(), "", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	got := 0
	for _, e := range entries {
		if e.Kind == kind && e.Actor == "berth admin" {
			got++
		}
	}
	if got != n {
		t.Errorf("%d audit entries of kind %s by berth admin, want %d", got, kind, n)
	}
}

// TestAdminRobotNamespace: a robot of a namespace that does not exist is
// refused with what to do.
func TestAdminRobotNamespace(t *testing.T) {
	s := adminStores(t)["sqlite"](t)
	s.refused(t, []string{`namespace "ghost" does not exist`, "berth admin org create ghost"}, "robot", "create", "ghost+ci")
	s.must(t, "user", "create", "alice")
	out := s.must(t, "robot", "create", "alice+ci")
	if !regexp.MustCompile(`token: \S+`).MatchString(out) {
		t.Fatalf("robot create printed %q", out)
	}
	s.refused(t, []string{"alice+ci already exists"}, "robot", "create", "alice+ci")
}
