package main

import (
	"bytes"
	"context"
	"errors"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta/metatest"
)

// runSplit runs berth with args and returns its standard output and
// standard error apart.
func runSplit(t *testing.T, stdin string, args ...string) (string, string, error) {
	t.Helper()
	cmd := rootCmd()
	var out, errOut bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&errOut)
	cmd.SetIn(strings.NewReader(stdin))
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), errOut.String(), err
}

// TestToolsRefuseAMissingDatabase: pointed at a data directory with no
// database (an operator's shell without BERTH_DATABASE_URL, a typo in
// --data-dir), berth admin gc, the other admin commands and berth import
// fail saying so and create nothing, where before they created an empty
// database, and gc then took every blob in storage for a crash's
// leftover.
func TestToolsRefuseAMissingDatabase(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	// Storage holds a registry's blob, old enough to be collected.
	blob := filepath.Join(dir, "storage", "blobs", "sha256", "2c", "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae")
	if err := os.MkdirAll(filepath.Dir(blob), 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(blob, []byte("foo"), 0o640); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-72 * time.Hour)
	if err := os.Chtimes(blob, old, old); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"admin", "gc"},
		{"admin", "gc", "--dry-run", "--json"},
		{"admin", "user", "list"},
		{"admin", "org", "list"},
		{"admin", "org", "create", "acme", "--owner", "alice"},
		{"admin", "repo", "list"},
		{"admin", "vulndb", "status"},
		{"import", "127.0.0.1:1/library/app:1", "--repository", "alice/app"},
	} {
		out, stderr, err := runSplit(t, "", append(args, "--data-dir", dir)...)
		if err == nil || !strings.Contains(err.Error(), "no Berth database") || !strings.Contains(err.Error(), filepath.Join(dir, "berth.db")) ||
			!strings.Contains(err.Error(), "berth admin migrate") {
			t.Fatalf("berth %s on a directory with no database: %v\n%s%s", strings.Join(args, " "), err, out, stderr)
		}
		if _, err := os.Stat(filepath.Join(dir, "berth.db")); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("berth %s created a database: %v", strings.Join(args, " "), err)
		}
	}
	if _, err := os.Stat(blob); err != nil {
		t.Fatalf("the blob is gone: %v", err)
	}

	// The first user may still be made before the first start (the
	// documented bootstrap), saying that a database was created.
	out, stderr, err := runSplit(t, "", "admin", "user", "create", "alice", "--data-dir", dir)
	if err != nil || !strings.Contains(stderr, "created a new database at "+filepath.Join(dir, "berth.db")) || !strings.Contains(out, "created user alice") {
		t.Fatalf("user create on a new directory: %v\n%s%s", err, out, stderr)
	}
	_, stderr, err = runSplit(t, "", "admin", "user", "create", "bob", "--data-dir", dir)
	if err != nil || strings.Contains(stderr, "created a new database") {
		t.Fatalf("user create on an existing database: %v\n%s", err, stderr)
	}
}

// TestAdminGCSaysWhatItOpened: berth admin gc prints on standard error
// the database (without its password) and the storage it works on; with
// --json the report carries them, standard output staying one JSON
// document.
func TestAdminGCSaysWhatItOpened(t *testing.T) {
	dir := t.TempDir()
	if out, err := runIn(t, "", "admin", "migrate", "--data-dir", dir); err != nil {
		t.Fatal(err, out)
	}
	out, stderr, err := runSplit(t, "", "admin", "gc", "--dry-run", "--data-dir", dir)
	if err != nil {
		t.Fatal(err, out, stderr)
	}
	if !strings.Contains(stderr, "database: "+filepath.Join(dir, "berth.db")) || !strings.Contains(stderr, "storage: "+filepath.Join(dir, "storage")) {
		t.Fatalf("stderr does not say what gc opened:\n%s", stderr)
	}
	out, _, err = runSplit(t, "", "admin", "gc", "--dry-run", "--json", "--data-dir", dir)
	if err != nil || !strings.HasPrefix(out, "{") || !strings.Contains(out, `"database": "`+filepath.Join(dir, "berth.db")+`"`) ||
		!strings.Contains(out, `"storage": "`+filepath.Join(dir, "storage")+`"`) {
		t.Fatalf("gc --json: %v\n%s", err, out)
	}
}

// TestAdminGCHidesTheDatabasePassword: on PostgreSQL, the database gc
// names (and the refusal of an empty one) carry no password.
func TestAdminGCHidesTheDatabasePassword(t *testing.T) {
	u, err := url.Parse(metatest.PostgresDSN(t))
	if err != nil {
		t.Fatal(err)
	}
	user := "postgres"
	if u.User != nil {
		user = u.User.Username()
	}
	u.User = url.UserPassword(user, "hunter2-secret") // the test server trusts local connections
	dsn := u.String()
	dir := t.TempDir()
	out, stderr, err := runSplit(t, "", "admin", "gc", "--database", dsn, "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "no Berth database") || strings.Contains(err.Error(), "hunter2") || strings.Contains(stderr, "hunter2") {
		t.Fatalf("gc on an empty PostgreSQL schema: %v\n%s%s", err, out, stderr)
	}
	if out, err := runIn(t, "", "admin", "migrate", "--database", dsn, "--data-dir", dir); err != nil {
		t.Fatal(err, out)
	}
	out, stderr, err = runSplit(t, "", "admin", "gc", "--dry-run", "--database", dsn, "--data-dir", dir)
	if err != nil || !strings.Contains(stderr, "database: postgres://REDACTED@") || strings.Contains(out+stderr, "hunter2") {
		t.Fatalf("gc on PostgreSQL: %v\n%s%s", err, out, stderr)
	}
}
