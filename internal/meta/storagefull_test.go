package meta_test

import (
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/jackc/pgx/v5/pgconn"
	_ "modernc.org/sqlite"

	"github.com/berth-dev/berth/internal/meta"
)

// TestStorageFull: the refusals for want of space that callers answer as
// such (507), as each source reports them, wrapped as callers wrap them.
func TestStorageFull(t *testing.T) {
	// SQLite's own: a database that may not grow past two pages.
	db, err := sql.Open("sqlite", filepath.Join(t.TempDir(), "full.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	if _, err := db.Exec(`CREATE TABLE t (b BLOB)`); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(`PRAGMA max_page_count = 3`); err != nil {
		t.Fatal(err)
	}
	_, sqliteFull := db.Exec(`INSERT INTO t VALUES (?)`, []byte(strings.Repeat("x", 64<<10)))
	if sqliteFull == nil {
		t.Fatal("a 64 KiB row fit in three pages")
	}
	for _, c := range []struct {
		name string
		err  error
		want bool
	}{
		{"SQLITE_FULL", fmt.Errorf("commit: %w", sqliteFull), true},
		{"ENOSPC", fmt.Errorf("receive upload body: %w", &os.PathError{Op: "write", Path: "/x", Err: syscall.ENOSPC}), true},
		{"EDQUOT", fmt.Errorf("place blob: %w", &os.LinkError{Op: "link", Old: "/a", New: "/b", Err: syscall.EDQUOT}), true},
		{"PostgreSQL disk_full", fmt.Errorf("insert: %w", &pgconn.PgError{Code: "53100"}), true},
		{"PostgreSQL unique violation", &pgconn.PgError{Code: "23505"}, false},
		{"EIO", &os.PathError{Op: "write", Path: "/x", Err: syscall.EIO}, false},
		{"not found", os.ErrNotExist, false},
	} {
		if got := meta.StorageFull(c.err); got != c.want {
			t.Errorf("%s (%v): StorageFull = %v, want %v", c.name, c.err, got, c.want)
		}
	}
}
