package meta_test

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestMustExistSQLite: a tool opening with MustExist is refused a data
// directory with no database, creates neither the file nor its
// directory, is refused an empty file too, and opens a database that
// berth serve (Open without the option) made.
func TestMustExistSQLite(t *testing.T) {
	ctx := context.Background()
	dir := filepath.Join(t.TempDir(), "typo")
	path := filepath.Join(dir, "berth.db")
	if db, err := meta.Open(ctx, path, meta.MustExist(), meta.NoUpgrade()); !errors.Is(err, meta.ErrNoDatabase) {
		if db != nil {
			db.Close()
		}
		t.Fatalf("open of a missing database = %v, want ErrNoDatabase", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Fatalf("the refused open left its directory behind: %v", err)
	}
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, nil, 0o640); err != nil {
		t.Fatal(err)
	}
	if db, err := meta.Open(ctx, "sqlite:"+path, meta.MustExist(), meta.SyncFull()); !errors.Is(err, meta.ErrNoDatabase) {
		if db != nil {
			db.Close()
		}
		t.Fatalf("open of an empty file = %v, want ErrNoDatabase", err)
	}
	if db, err := meta.Open(ctx, path, meta.MustExist()); !errors.Is(err, meta.ErrNoDatabase) {
		if db != nil {
			db.Close()
		}
		t.Fatalf("second open of an empty file = %v, want ErrNoDatabase (the refused open must not have made the schema)", err)
	}
	db, err := meta.Open(ctx, path)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = meta.Open(ctx, path, meta.MustExist(), meta.NoUpgrade())
	if err != nil {
		t.Fatalf("open of an existing database: %v", err)
	}
	db.Close()
}

// TestMustExistPostgres: on PostgreSQL a schema with no Berth tables is
// refused and left without any; a migrated one opens.
func TestMustExistPostgres(t *testing.T) {
	ctx := context.Background()
	dsn := metatest.PostgresDSN(t)
	if db, err := meta.Open(ctx, dsn, meta.MustExist(), meta.NoUpgrade()); !errors.Is(err, meta.ErrNoDatabase) {
		if db != nil {
			db.Close()
		}
		t.Fatalf("open of an empty schema = %v, want ErrNoDatabase", err)
	}
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var tables int
	if err := raw.QueryRowContext(ctx, "SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()").Scan(&tables); err != nil {
		t.Fatal(err)
	}
	if tables != 0 {
		t.Fatalf("the refused open created %d tables", tables)
	}
	db, err := meta.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	db, err = meta.Open(ctx, dsn, meta.MustExist())
	if err != nil {
		t.Fatalf("open of a migrated schema: %v", err)
	}
	db.Close()
}
