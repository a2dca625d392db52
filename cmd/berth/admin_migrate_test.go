package main

import (
	"context"
	"database/sql"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestAdminMigrate: `berth admin migrate` creates or upgrades the schema
// and exits; run again it has nothing to do; a database migrated by a
// newer binary is refused with the reason.
func TestAdminMigrate(t *testing.T) {
	dir := t.TempDir()
	for range 2 {
		out, err := runIn(t, "", "admin", "migrate", "--data-dir", dir)
		if err != nil || !strings.Contains(out, "sqlite database is at this binary's schema version") {
			t.Fatalf("migrate: %v\n%s", err, out)
		}
	}
	ctx := context.Background()
	db, err := meta.Open(ctx, filepath.Join(dir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	if err := db.CheckSchema(ctx); err != nil {
		t.Fatalf("after migrate: %v", err)
	}
	db.Close()

	raw, err := sql.Open("sqlite", filepath.Join(dir, "berth.db"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := raw.Exec("INSERT INTO schema_migrations (version, applied_at) VALUES (100000, 0)"); err != nil {
		t.Fatal(err)
	}
	raw.Close()
	out, err := runIn(t, "", "admin", "migrate", "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "newer than this binary") {
		t.Fatalf("a schema from a newer binary: err %v\n%s", err, out)
	}
}

// TestAdminMigrateConcurrentPostgres: migrate commands started together on
// an empty PostgreSQL database all succeed (the advisory lock serializes
// them; one applies the migrations).
func TestAdminMigrateConcurrentPostgres(t *testing.T) {
	dsn := metatest.PostgresDSN(t)
	var wg sync.WaitGroup
	errs := make([]error, 4)
	outs := make([]string, 4)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			outs[i], errs[i] = runIn(t, "", "admin", "migrate", "--database", dsn, "--data-dir", t.TempDir())
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil || !strings.Contains(outs[i], "postgres database is at this binary's schema version") {
			t.Fatalf("migrate %d: %v\n%s", i, err, outs[i])
		}
	}
}

// TestAdminRefusesAnOlderSchema: berth admin and berth import, run from a
// binary newer than the database's schema, refuse with the reason and
// leave the schema where it was (migrating it would take the running
// servers of the older version out of service).
func TestAdminRefusesAnOlderSchema(t *testing.T) {
	dir := t.TempDir()
	if _, err := runIn(t, "", "admin", "migrate", "--data-dir", dir); err != nil {
		t.Fatalf("migrate a new data directory: %v", err)
	}
	path := filepath.Join(dir, "berth.db")
	raw, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var top int
	if err := raw.QueryRow("SELECT MAX(version) FROM schema_migrations").Scan(&top); err != nil {
		t.Fatal(err)
	}
	// The last migration's record taken away: the database says it is one
	// version behind (its tables are the same: the tools refuse before
	// they touch any).
	if _, err := raw.Exec("DELETE FROM schema_migrations WHERE version = ?", top); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"admin", "user", "list"}, {"admin", "gc", "--dry-run"}, {"import", "registry.example/a:1", "--repository", "x/a"}} {
		_, err := runIn(t, "", append(args, "--data-dir", dir)...)
		if err == nil || !strings.Contains(err.Error(), "berth admin migrate") {
			t.Fatalf("%v on an older schema: %v", args, err)
		}
		var now int
		if err := raw.QueryRow("SELECT MAX(version) FROM schema_migrations").Scan(&now); err != nil || now != top-1 {
			t.Fatalf("%v moved the schema to %d (%v)", args, now, err)
		}
	}
	if _, err := raw.Exec("INSERT INTO schema_migrations (version, applied_at) VALUES (?, 0)", top); err != nil {
		t.Fatal(err)
	}
	if _, err := runIn(t, "", "admin", "user", "list", "--data-dir", dir); err != nil {
		t.Fatalf("admin at this binary's version: %v", err)
	}
}
