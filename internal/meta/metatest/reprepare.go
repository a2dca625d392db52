package metatest

import (
	"database/sql/driver"
	"reflect"
	"testing"

	"modernc.org/libc"
	sqlite3 "modernc.org/sqlite/lib"
)

// CheckReprepares returns a meta.StatementCheck that fails t when SQLite
// prepared a kept statement again on (nearly) every one of its runs. It
// does that when the statement's plan reads a value bound to it (a LIMIT
// or a LIKE pattern of a parameter, or a parameter compared with a
// partial index's column: internal/meta/stmtcache.go). Each run then
// parses and plans the SQL again, and the statement cache saves nothing:
// that made a manifest GET by tag cost twice its CPU. Open passes it to
// every SQLite store, so that every test using one checks the queries it
// ran. It reads the driver's statement handle, an unexported field of
// modernc.org/sqlite, and fails t if that field is gone.
func CheckReprepares(t testing.TB) func(query string, s driver.Stmt) {
	return func(query string, s driver.Stmt) {
		v := reflect.ValueOf(s)
		if v.Kind() == reflect.Pointer {
			v = v.Elem()
		}
		var p reflect.Value
		if v.Kind() == reflect.Struct {
			p = v.FieldByName("pstmt")
		}
		if !p.IsValid() || p.Kind() != reflect.Uintptr {
			t.Errorf("metatest: %T has no pstmt field: modernc.org/sqlite changed, update CheckReprepares", s)
			return
		}
		if p.Uint() == 0 {
			return
		}
		tls := libc.NewTLS()
		defer tls.Close()
		pstmt := uintptr(p.Uint())
		reprepared := sqlite3.Xsqlite3_stmt_status(tls, pstmt, sqlite3.SQLITE_STMTSTATUS_REPREPARE, 0)
		runs := sqlite3.Xsqlite3_stmt_status(tls, pstmt, sqlite3.SQLITE_STMTSTATUS_RUN, 0)
		// A schema change (a test's trigger, ANALYZE) prepares a statement
		// again once; a plan that reads a bound value does it on every run.
		if reprepared >= 5 && reprepared+1 >= runs {
			t.Errorf("SQLite prepared this statement again on %d of its %d runs: its plan reads a bound value "+
				"(a LIMIT, OFFSET or LIKE pattern, a parameter compared with a partial index's column, or a "+
				"`col = ?` of a join or ORDER BY query bound alternately to 1 and other ids: "+
				"write CAST(? AS BIGINT) or CAST(? AS TEXT), see internal/meta/stmtcache.go):\n%s",
				reprepared, runs, query)
		}
	}
}
