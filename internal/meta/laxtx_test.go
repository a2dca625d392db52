package meta

import (
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestLaxTxSQLite checks that a lax transaction commits with
// synchronous=NORMAL and that the writer connection is back at FULL
// afterwards, whether the transaction committed, failed or had its
// context cancelled, so that the next durable commit is flushed.
func TestLaxTxSQLite(t *testing.T) {
	db, err := open(filepath.Join(t.TempDir(), "meta.db"), true)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.write.ExecContext(ctx, "CREATE TABLE t (k INTEGER PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	level := func(q interface {
		QueryRowContext(context.Context, string, ...any) *sql.Row
	}) int {
		t.Helper()
		var n int
		if err := q.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	const normal, full = 1, 2
	if got := level(db.write); got != full {
		t.Fatalf("writer starts at synchronous=%d, want FULL (%d)", got, full)
	}
	var inside int
	if err := db.laxTx(ctx, func(tx *sql.Tx) error {
		inside = level(tx)
		_, err := tx.ExecContext(ctx, "INSERT INTO t (k) VALUES (1)")
		return err
	}); err != nil {
		t.Fatal(err)
	}
	if inside != normal {
		t.Errorf("inside a lax transaction synchronous=%d, want NORMAL (%d)", inside, normal)
	}
	if got := level(db.write); got != full {
		t.Errorf("after a lax commit synchronous=%d, want FULL", got)
	}
	if err := db.tx(ctx, func(tx *sql.Tx) error { inside = level(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside != full {
		t.Errorf("inside a durable transaction synchronous=%d, want FULL", inside)
	}
	if err := db.tx(LaxCommits(ctx), func(tx *sql.Tx) error { inside = level(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside != normal {
		t.Errorf("inside a transaction under LaxCommits synchronous=%d, want NORMAL", inside)
	}

	boom := errors.New("boom")
	if err := db.laxTx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, "INSERT INTO t (k) VALUES (2)"); err != nil {
			return err
		}
		return boom
	}); !errors.Is(err, boom) {
		t.Fatalf("failing lax transaction: %v, want boom", err)
	}
	if got := level(db.write); got != full {
		t.Errorf("after a failed lax transaction synchronous=%d, want FULL", got)
	}

	cctx, cancel := context.WithCancel(ctx)
	err = db.laxTx(cctx, func(tx *sql.Tx) error {
		cancel()
		_, err := tx.ExecContext(cctx, "INSERT INTO t (k) VALUES (3)")
		return err
	})
	if err == nil {
		t.Fatal("lax transaction with a cancelled context committed")
	}
	if got := level(db.write); got != full {
		t.Errorf("after a cancelled lax transaction synchronous=%d, want FULL", got)
	}
	var n int
	if err := db.read.QueryRowContext(ctx, "SELECT count(*) FROM t").Scan(&n); err != nil || n != 1 {
		t.Errorf("rows = %d (%v), want only the committed one", n, err)
	}

	// Without SyncFull the store runs at NORMAL throughout.
	plain, err := open(filepath.Join(t.TempDir(), "plain.db"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	if err := plain.laxTx(ctx, func(tx *sql.Tx) error { inside = level(tx); return nil }); err != nil {
		t.Fatal(err)
	}
	if inside != normal || level(plain.write) != normal {
		t.Errorf("store without SyncFull: synchronous %d inside, %d after; want NORMAL", inside, level(plain.write))
	}
}

// TestLaxTxPostgres checks that a lax transaction runs with
// synchronous_commit off and that the setting does not outlive it.
func TestLaxTxPostgres(t *testing.T) {
	dsn := os.Getenv("BERTH_TEST_POSTGRES_DSN")
	if dsn == "" {
		t.Skip("BERTH_TEST_POSTGRES_DSN not set")
	}
	db, err := open(dsn, false)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	var server string
	if err := db.read.QueryRowContext(ctx, "SHOW synchronous_commit").Scan(&server); err != nil {
		t.Fatal(err)
	}
	if server == "off" {
		t.Skip("the server runs with synchronous_commit off")
	}
	show := func(tx *sql.Tx, into *string) error {
		return tx.QueryRowContext(ctx, "SHOW synchronous_commit").Scan(into)
	}
	var lax, durable string
	if err := db.laxTx(ctx, func(tx *sql.Tx) error { return show(tx, &lax) }); err != nil {
		t.Fatal(err)
	}
	if err := db.tx(ctx, func(tx *sql.Tx) error { return show(tx, &durable) }); err != nil {
		t.Fatal(err)
	}
	if lax != "off" || durable != server {
		t.Errorf("synchronous_commit: %q in a lax transaction, %q in a durable one; want off and %q", lax, durable, server)
	}
}
