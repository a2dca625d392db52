package meta

import (
	"context"
	"database/sql"
	"fmt"
	"path/filepath"
	"testing"
)

// TestStmtCache runs what the per-connection statement cache must get
// right on SQLite: the same query again while rows of it are still open
// (inside one transaction, so on one connection), more distinct queries
// than the cache holds, and an error from SQL that does not prepare.
func TestStmtCache(t *testing.T) {
	db, err := open(filepath.Join(t.TempDir(), "meta.db"), false)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	ctx := context.Background()
	if _, err := db.write.ExecContext(ctx, "CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)"); err != nil {
		t.Fatal(err)
	}
	const n = 20
	for i := range n {
		if _, err := db.write.ExecContext(ctx, "INSERT INTO t (k, v) VALUES (?, ?)", i, fmt.Sprint("v", i)); err != nil {
			t.Fatal(err)
		}
	}
	const q = "SELECT k, v FROM t WHERE k >= ? ORDER BY k"
	err = db.tx(ctx, func(tx *sql.Tx) error {
		outer, err := tx.QueryContext(ctx, q, 0)
		if err != nil {
			return err
		}
		defer outer.Close()
		seen := 0
		for outer.Next() {
			var k int
			var v string
			if err := outer.Scan(&k, &v); err != nil {
				return err
			}
			if k != seen || v != fmt.Sprint("v", k) {
				return fmt.Errorf("outer row %d = %d %q", seen, k, v)
			}
			seen++
			// The same SQL while the outer rows are open.
			var inner int
			if err := tx.QueryRowContext(ctx, "SELECT count(*) FROM ("+q+")", k).Scan(&inner); err != nil {
				return err
			}
			var first int
			var fv string
			if err := tx.QueryRowContext(ctx, q, k).Scan(&first, &fv); err != nil || first != k {
				return fmt.Errorf("inner query at %d: %d, %v", k, first, err)
			}
			if inner != n-k {
				return fmt.Errorf("inner count at %d = %d, want %d", k, inner, n-k)
			}
		}
		if seen != n {
			return fmt.Errorf("outer saw %d rows, want %d", seen, n)
		}
		return outer.Err()
	})
	if err != nil {
		t.Fatal(err)
	}
	// More distinct statements than a connection keeps.
	for i := range stmtCacheSize + 50 {
		var got int
		if err := db.read.QueryRowContext(ctx, fmt.Sprintf("SELECT k + %d FROM t WHERE k = ?", i), 3).Scan(&got); err != nil || got != 3+i {
			t.Fatalf("query %d = %d, %v", i, got, err)
		}
	}
	if _, err := db.read.ExecContext(ctx, "SELEKT 1"); err == nil {
		t.Fatal("a syntax error was not reported")
	}
	if _, err := db.read.QueryContext(ctx, "SELECT * FROM no_such_table"); err == nil {
		t.Fatal("a missing table was not reported")
	}
}
