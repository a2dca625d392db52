package index

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"net/url"
	"strings"
	"time"

	_ "modernc.org/sqlite" // database/sql driver "sqlite", for the check below
)

// Bounds of an rpm database in SQLite form that a layer may bring. A
// distribution's has hundreds to a few thousand packages.
const (
	maxRPMRows        = 100_000
	rpmCheckTimeout   = 30 * time.Second
	rpmHeaderIndexLen = 16 // bytes per entry of an rpm header's index
)

// checkRPMSQLite decides whether the rpm extractor may open an rpm
// database in SQLite form from a layer: the extractor's library runs
// "SELECT blob FROM Packages" with a real SQLite engine, without a time
// bound, and allocates what each header's first bytes say before checking
// them. A pushed file could make Packages a view over an endless recursive
// query (a scan worker spinning for ever), a virtual table, or hold a
// header claiming 2^31 index entries (an allocation that kills the
// process); and like the other forms (rpmheader.go), its reader goroutine
// blocks for ever, its query open, after a header go-rpmdb cannot parse.
// Nor need a blob be stored: a generated column (virtual unless its DDL
// says STORED, and the DDL need not say VIRTUAL) is computed as it is read
// (zeroblob(900000000) makes a file of a few KiB a 900 MB value, copied
// twice on its way, or an expression costs minutes of CPU), and a default
// value stands for the column in rows written before it was added (one
// stored header repeated for every row). So: opened read-only and
// immutable, Packages must be a plain table (rpm's own is "hnum INTEGER
// PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL") with a blob column and
// no generated or hidden one; of at most maxRPMRows rows, whose blobs are
// blobs, each under go-rpmdb's header limit and all together no more
// than the file's size bytes (what a stored value takes; only computed
// ones can make more), all read by their lengths alone (which SQLite
// gives without loading a value) before any is read; and every blob must
// pass checkPackageHeader; all within rpmCheckTimeout. (Triggers do not
// run on a SELECT; an index holds stored values.) It returns the number
// of rows.
func checkRPMSQLite(ctx context.Context, path string, size int64) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, rpmCheckTimeout)
	defer cancel()
	n, err := checkRPMSQLiteIn(ctx, path, size)
	if err != nil && ctx.Err() != nil {
		// Out of time (a loaded host as much as a hostile database): not
		// a fact about the layer to cache, an error to retry.
		return 0, fmt.Errorf("%w: %v", errRPMCheckTimedOut, err)
	}
	return n, err
}

// errRPMCheckTimedOut is checkRPMSQLite's error when its time ran out.
var errRPMCheckTimedOut = errors.New("the rpm database check ran out of time")

func checkRPMSQLiteIn(ctx context.Context, path string, size int64) (int, error) {
	db, err := sql.Open("sqlite", "file:"+(&url.URL{Path: path}).EscapedPath()+"?mode=ro&immutable=1")
	if err != nil {
		return 0, fmt.Errorf("open: %w", err)
	}
	defer db.Close()
	db.SetMaxOpenConns(1)
	var kind, ddl string
	if err := db.QueryRowContext(ctx, "SELECT type, COALESCE(sql, '') FROM sqlite_master WHERE name = 'Packages'").Scan(&kind, &ddl); err != nil {
		return 0, fmt.Errorf("no Packages table: %w", err)
	}
	if strings.Contains(strings.ToUpper(ddl), "VIRTUAL") {
		kind = "virtual table"
	}
	if kind != "table" {
		return 0, fmt.Errorf("its Packages is a %s, not a plain table", kind)
	}
	if err := checkRPMSQLiteColumns(ctx, db); err != nil {
		return 0, err
	}
	n, err := checkRPMSQLiteLengths(ctx, db, size)
	if err != nil {
		return 0, err
	}
	rows, err := db.QueryContext(ctx, "SELECT blob FROM Packages")
	if err != nil {
		return 0, fmt.Errorf("read Packages: %w", err)
	}
	defer rows.Close()
	read := 0
	for rows.Next() {
		if read++; read > n {
			return 0, fmt.Errorf("over the %d packages it first counted", n)
		}
		var blob sql.RawBytes // not copied again: checkPackageHeader keeps none of it
		if err := rows.Scan(&blob); err != nil {
			return 0, fmt.Errorf("read Packages: %w", err)
		}
		if err := checkPackageHeader(blob); err != nil {
			return 0, fmt.Errorf("package %d: %w", read, err)
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read Packages: %w", err)
	}
	return read, nil
}

// checkRPMSQLiteColumns requires Packages to have a blob column and no
// generated or hidden column, as SQLite itself parsed its DDL.
func checkRPMSQLiteColumns(ctx context.Context, db *sql.DB) error {
	rows, err := db.QueryContext(ctx, "PRAGMA table_xinfo('Packages')")
	if err != nil {
		return fmt.Errorf("read Packages' columns: %w", err)
	}
	defer rows.Close()
	hasBlob := false
	for rows.Next() {
		var (
			cid, notNull, pk, hidden int64
			name, typ                string
			dflt                     sql.NullString
		)
		if err := rows.Scan(&cid, &name, &typ, &notNull, &dflt, &pk, &hidden); err != nil {
			return fmt.Errorf("read Packages' columns: %w", err)
		}
		if hidden != 0 {
			// 1: a virtual table's hidden column, 2 and 3: generated.
			return fmt.Errorf("its Packages has a generated or hidden column (%q), not rpm's plain columns", name)
		}
		if strings.EqualFold(name, "blob") {
			hasBlob = true
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("read Packages' columns: %w", err)
	}
	if !hasBlob {
		return errors.New("its Packages has no blob column")
	}
	return nil
}

// checkRPMSQLiteLengths counts Packages' rows and bounds their blobs by
// their types and lengths, which SQLite reads from a row without loading
// the value: every one a blob under go-rpmdb's header limit, and all
// together no more than the file's size bytes.
func checkRPMSQLiteLengths(ctx context.Context, db *sql.DB, size int64) (int, error) {
	rows, err := db.QueryContext(ctx, "SELECT typeof(blob), length(blob) FROM Packages")
	if err != nil {
		return 0, fmt.Errorf("read Packages: %w", err)
	}
	defer rows.Close()
	n := 0
	var total int64
	for rows.Next() {
		if n++; n > maxRPMRows {
			return 0, fmt.Errorf("over %d packages", maxRPMRows)
		}
		var typ string
		var length int64
		if err := rows.Scan(&typ, &length); err != nil {
			return 0, fmt.Errorf("read Packages: %w", err)
		}
		switch {
		case typ != "blob":
			return 0, fmt.Errorf("package %d: a %s value, not a blob", n, typ)
		case length >= rpmHeaderMaxBytes:
			return 0, fmt.Errorf("package %d: a blob of %d bytes, over go-rpmdb's limit of %d", n, length, rpmHeaderMaxBytes)
		}
		if total += length; total > size {
			return 0, fmt.Errorf("its packages' blobs add up to over %d bytes, more than the file's %d (values made up by its schema, not stored)", total, size)
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read Packages: %w", err)
	}
	return n, nil
}
