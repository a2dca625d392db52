package meta_test

import (
	"context"
	"database/sql"
	"errors"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestMirrorWaitingForProxyCacheSeesIt (PostgreSQL): a mirror created
// while its organization is being made a proxy cache waits for that
// transaction's lock on the organization, then sees the proxy cache it
// committed and is refused. Read in the subquery of its locking statement,
// the count came from the snapshot taken before the wait: the mirror was
// created in a proxy cache organization.
func TestMirrorWaitingForProxyCacheSeesIt(t *testing.T) {
	ctx := context.Background()
	dsn := metatest.PostgresDSN(t)
	db, err := meta.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Exec(ctx, "INSERT INTO namespaces (name, kind, created_at) VALUES ('hub', ?, 1)", meta.NamespaceOrg); err != nil {
		t.Fatal(err)
	}
	if err := db.Repositories().CreateRepository(ctx, "hub/alpine", "public", "", "test", 0); err != nil {
		t.Fatal(err)
	}
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	// SetProxyCache's steps, held open: the organization's row locked,
	// its proxy cache inserted, not yet committed.
	tx, err := raw.BeginTx(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback()
	var nsID int64
	if err := tx.QueryRowContext(ctx, "SELECT id FROM namespaces WHERE name = 'hub' FOR UPDATE").Scan(&nsID); err != nil {
		t.Fatal(err)
	}
	if _, err := tx.ExecContext(ctx, `INSERT INTO proxy_caches (namespace_id, upstream, username, password_sealed, expiration_s, insecure, created_by, created_at)
		VALUES ($1, 'docker.io', '', '', 86400, 0, 'test', 1)`, nsID); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- db.Mirrors().CreateMirror(ctx, meta.Mirror{Repository: "hub/alpine", Enabled: true, ExternalReference: "evil.example/x/alpine",
			RobotUsername: "hub+ci", SyncInterval: 3600})
	}()
	time.Sleep(500 * time.Millisecond) // CreateMirror now waits for the organization's row
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if err := <-done; !errors.Is(err, meta.ErrProxyCacheConflict) {
		t.Fatalf("a mirror created while its organization became a proxy cache: %v, want ErrProxyCacheConflict", err)
	}
}
