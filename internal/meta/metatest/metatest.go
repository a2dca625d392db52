// Package metatest opens metadata stores for tests: SQLite always, and
// PostgreSQL when BERTH_TEST_POSTGRES_DSN is set, each test in a schema of
// its own that is dropped afterwards.
package metatest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
)

// EnvPostgresDSN names the variable that enables the PostgreSQL runs.
const EnvPostgresDSN = "BERTH_TEST_POSTGRES_DSN"

// Dialects returns the dialects to test: "sqlite", plus "postgres" when
// EnvPostgresDSN is set.
func Dialects() []string {
	if os.Getenv(EnvPostgresDSN) != "" {
		return []string{"sqlite", "postgres"}
	}
	return []string{"sqlite"}
}

// DSN returns where a fresh store of the dialect lives for one test: a
// file in a temporary directory, or a PostgreSQL schema of its own
// (PostgresDSN). Two stores opened at it share the database.
func DSN(t testing.TB, dialect string) string {
	t.Helper()
	switch dialect {
	case "sqlite":
		return filepath.Join(t.TempDir(), "meta.db")
	case "postgres":
		return PostgresDSN(t)
	}
	t.Fatalf("unknown dialect %q", dialect)
	return ""
}

// Open returns a fresh, migrated store of the dialect, closed at cleanup.
// An SQLite store fails t if a statement it ran was prepared again on
// most of its runs (CheckReprepares).
func Open(t testing.TB, dialect string) *meta.DB {
	t.Helper()
	ctx := context.Background()
	dsn := DSN(t, dialect)
	db, err := meta.Open(ctx, dsn, meta.StatementCheck(CheckReprepares(t)))
	if err != nil {
		t.Fatalf("open %s store: %v", dialect, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// PostgresDSN creates a schema for one test (dropped at cleanup) and
// returns a DSN whose search_path selects it. It skips the test when
// EnvPostgresDSN is unset.
func PostgresDSN(t testing.TB) string {
	base := os.Getenv(EnvPostgresDSN)
	if base == "" {
		t.Skipf("%s is not set", EnvPostgresDSN)
	}
	b := make([]byte, 6)
	rand.Read(b)
	schema := "berth_test_" + hex.EncodeToString(b)
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatalf("postgres: %v", err)
	}
	if _, err := admin.Exec("CREATE SCHEMA " + schema); err != nil {
		admin.Close()
		t.Fatalf("postgres at %s: create schema: %v", EnvPostgresDSN, err)
	}
	t.Cleanup(func() {
		admin.Exec("DROP SCHEMA " + schema + " CASCADE")
		admin.Close()
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatalf("%s: %v", EnvPostgresDSN, err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// NoBytes is the meta.BlobBytes of a test that records a blob without
// storing its bytes: nothing is placed early, the bytes are always there,
// and placing or clearing them does nothing.
var NoBytes meta.BlobBytes = noBytes{}

type noBytes struct{}

func (noBytes) PlaceEarly(context.Context) (bool, error) { return false, nil }
func (noBytes) Present(context.Context) (bool, error)    { return true, nil }
func (noBytes) Place(context.Context) error              { return nil }
func (noBytes) Clear(context.Context) error              { return nil }

// Orgs creates organizations without owners, for tests that create
// repositories in them directly (CreateRepository needs its namespace).
func Orgs(t testing.TB, db *meta.DB, names ...string) {
	t.Helper()
	for _, name := range names {
		if _, err := db.Organizations().CreateOrganization(context.Background(), name, 0); err != nil {
			t.Fatalf("create organization %s: %v", name, err)
		}
	}
}
