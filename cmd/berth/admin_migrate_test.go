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
