package server_test

import (
	"database/sql"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/server"
)

// TestTokenRealmFollowsExternalURL: with externalURL set and auth.realm
// not, the challenge names externalURL's token endpoint, whatever Host
// and scheme the request came with (behind a load balancer that ends TLS,
// the request is plain HTTP: clients were sent to an http:// realm);
// auth.realm, when set, wins.
func TestTokenRealmFollowsExternalURL(t *testing.T) {
	for _, c := range []struct {
		externalURL, realm, want string
	}{
		{"https://registry.example.com", "", `realm="https://registry.example.com/v2/auth"`},
		{"https://registry.example.com/", "https://login.example.com/token", `realm="https://login.example.com/token"`},
		{"", "", `realm="http://registry.internal:5000/v2/auth"`},
	} {
		_, hs, _ := startServer(t, func(cfg *config.Config) {
			cfg.ExternalURL, cfg.Auth.Realm = c.externalURL, c.realm
		})
		req, _ := http.NewRequest("GET", hs.URL+"/v2/", nil)
		req.Host = "registry.internal:5000"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("WWW-Authenticate"); resp.StatusCode != 401 || !strings.Contains(got, c.want) {
			t.Errorf("externalURL %q, auth.realm %q: %d %s, want %s", c.externalURL, c.realm, resp.StatusCode, got, c.want)
		}
	}
}

// TestStartRefusalsComeBeforeTheDatabase: a setting that stops the server
// at start (an allowed host that does not parse) stops it before it opens
// the database, which would migrate it: in a rolling upgrade such a
// replica moved the schema past the running replicas' and then exited.
func TestStartRefusalsComeBeforeTheDatabase(t *testing.T) {
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Notifications.AllowedHosts = []string{"10.0.0.0/33"}
	if _, err := server.New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "allowedHosts") {
		t.Fatalf("a bad allowed host: %v", err)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "berth.db")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the database was opened before the refusal: %v", err)
	}
}

// TestMissingSecretKeyRefusedBeforeTheDatabase: on PostgreSQL, a server
// with neither secretKey nor a key file (a new replica not given the
// shared key) is refused before it opens the database: the schema stays
// as it was (here: none, no migrations table). Before, the server
// migrated the database and then refused.
func TestMissingSecretKeyRefusedBeforeTheDatabase(t *testing.T) {
	dsn := metatest.PostgresDSN(t)
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Database.URL = dsn
	cfg.Scan.Enabled = false
	if _, err := server.New(t.Context(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil))); err == nil || !strings.Contains(err.Error(), "secretKey is not set") {
		t.Fatalf("no secretKey on PostgreSQL: %v", err)
	}
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var table sql.NullString
	if err := raw.QueryRowContext(t.Context(), "SELECT to_regclass('schema_migrations')::text").Scan(&table); err != nil {
		t.Fatal(err)
	}
	if table.Valid {
		t.Fatalf("the database was migrated before the refusal: %s exists", table.String)
	}
	if _, err := os.Stat(filepath.Join(cfg.DataDir, "secret.key")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("a key file was generated: %v", err)
	}
}

// TestMismatchedKeyRefusedBeforeMigrating: on PostgreSQL, a server whose
// secretKey is not the one the database recorded refuses with "secret key
// mismatch" before it applies any pending migration (a replica of a new
// version given the wrong key in a rolling upgrade). Before, it migrated
// the schema and only then refused. The pending migration is made by
// taking the last one's record away.
func TestMismatchedKeyRefusedBeforeMigrating(t *testing.T) {
	dsn := metatest.PostgresDSN(t)
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Database.URL = dsn
	cfg.Scan.Enabled = false
	cfg.SecretKey = testSecretKey
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	first, err := server.New(t.Context(), cfg, logger)
	if err != nil {
		t.Fatal(err)
	}
	first.Close()
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	var version int
	if err := raw.QueryRowContext(t.Context(), "DELETE FROM schema_migrations WHERE version = (SELECT MAX(version) FROM schema_migrations) RETURNING version").Scan(&version); err != nil {
		t.Fatal(err)
	}
	cfg.SecretKey = "c2Vjb25kIGtleSBvZiAzMiBieXRlcyBleGFjdGx5ISE="
	cfg.DataDir = t.TempDir()
	if _, err := server.New(t.Context(), cfg, logger); err == nil || !strings.Contains(err.Error(), "secret key mismatch") {
		t.Fatalf("another key: %v, want secret key mismatch", err)
	}
	var now int
	if err := raw.QueryRowContext(t.Context(), "SELECT MAX(version) FROM schema_migrations").Scan(&now); err != nil {
		t.Fatal(err)
	}
	if now != version-1 {
		t.Fatalf("the schema moved to version %d before the refusal (it was at %d)", now, version-1)
	}
}
