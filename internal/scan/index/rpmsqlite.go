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
// So: opened read-only and immutable, Packages must be a plain table of at
// most maxRPMRows rows whose every blob passes checkPackageHeader, all
// within rpmCheckTimeout. It returns the number of rows.
func checkRPMSQLite(ctx context.Context, path string) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, rpmCheckTimeout)
	defer cancel()
	n, err := checkRPMSQLiteIn(ctx, path)
	if err != nil && ctx.Err() != nil {
		// Out of time (a loaded host as much as a hostile database): not
		// a fact about the layer to cache, an error to retry.
		return 0, fmt.Errorf("%w: %v", errRPMCheckTimedOut, err)
	}
	return n, err
}

// errRPMCheckTimedOut is checkRPMSQLite's error when its time ran out.
var errRPMCheckTimedOut = errors.New("the rpm database check ran out of time")

func checkRPMSQLiteIn(ctx context.Context, path string) (int, error) {
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
	rows, err := db.QueryContext(ctx, "SELECT blob FROM Packages")
	if err != nil {
		return 0, fmt.Errorf("read Packages: %w", err)
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		if n++; n > maxRPMRows {
			return 0, fmt.Errorf("over %d packages", maxRPMRows)
		}
		var blob []byte
		if err := rows.Scan(&blob); err != nil {
			return 0, fmt.Errorf("read Packages: %w", err)
		}
		if err := checkPackageHeader(blob); err != nil {
			return 0, fmt.Errorf("package %d: %w", n, err)
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read Packages: %w", err)
	}
	return n, nil
}
