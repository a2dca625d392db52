package main

import (
	"database/sql"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/server"
)

// TestAdminMigrateRefusesAnotherKey: on PostgreSQL, `berth admin migrate`
// given a secretKey other than the one the database's first server
// recorded refuses with "secret key mismatch" before it applies any
// pending migration, as berth serve does: the migrate step of a rolling
// upgrade given the wrong key must not move the schema under the running
// replicas. The pending migration is made by taking the last one's
// record away. With the recorded key the command succeeds.
func TestAdminMigrateRefusesAnotherKey(t *testing.T) {
	dsn := metatest.PostgresDSN(t)
	const k1 = "Zmlyc3Qga2V5IG9mIDMyIGJ5dGVzIGV4YWN0bHkhISE="
	const k2 = "c2Vjb25kIGtleSBvZiAzMiBieXRlcyBleGFjdGx5ISE="
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Database.URL = dsn
	cfg.Scan.Enabled = false
	cfg.SecretKey = k1
	first, err := server.New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	first.Close() // it recorded k1's fingerprint

	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var top int
	if err := raw.QueryRowContext(t.Context(), "DELETE FROM schema_migrations WHERE version = (SELECT MAX(version) FROM schema_migrations) RETURNING version").Scan(&top); err != nil {
		t.Fatal(err)
	}
	version := func() int {
		t.Helper()
		var v int
		if err := raw.QueryRowContext(t.Context(), "SELECT MAX(version) FROM schema_migrations").Scan(&v); err != nil {
			t.Fatal(err)
		}
		return v
	}

	t.Setenv("BERTH_SECRET_KEY", k2)
	out, err := runIn(t, "", "admin", "migrate", "--database", dsn, "--data-dir", t.TempDir())
	if err == nil || !strings.Contains(err.Error(), "secret key mismatch") {
		t.Fatalf("migrate with another key: %v, want secret key mismatch\n%s", err, out)
	}
	if v := version(); v != top-1 {
		t.Fatalf("migrate with another key moved the schema to version %d (it was at %d)", v, top-1)
	}

	// The recorded key is accepted. (The migration record put back: the
	// migration taken away from it could not run a second time.)
	if _, err := raw.ExecContext(t.Context(), "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, 0)", top); err != nil {
		t.Fatal(err)
	}
	t.Setenv("BERTH_SECRET_KEY", k1)
	if out, err := runIn(t, "", "admin", "migrate", "--database", dsn, "--data-dir", t.TempDir()); err != nil {
		t.Fatalf("migrate with the recorded key: %v\n%s", err, out)
	}
}
