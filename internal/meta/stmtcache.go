package meta

import (
	"context"
	"database/sql"
)

// readRow runs a single-row query on the read pool. On SQLite it goes
// through a statement prepared once per process (and, by database/sql,
// once per connection) and kept: modernc.org/sqlite parses a query's SQL
// on every call otherwise, which was half the cost of a manifest GET by
// tag (the query itself a fifth). Only for the few hot reads whose SQL is
// one of a handful of fixed strings: the cache is never pruned. On
// PostgreSQL pgx already caches its statements, and the plain call is
// kept.
func (db *core) readRow(ctx context.Context, query string, args ...any) *sql.Row {
	if db.dialect == postgres {
		return db.read.QueryRowContext(ctx, query, args...)
	}
	if s, ok := db.stmts.Load(query); ok {
		return s.(*sql.Stmt).QueryRowContext(ctx, args...)
	}
	s, err := db.read.PrepareContext(context.WithoutCancel(ctx), query)
	if err != nil {
		return db.read.QueryRowContext(ctx, query, args...) // the same error, or a result
	}
	if prev, loaded := db.stmts.LoadOrStore(query, s); loaded {
		s.Close()
		s = prev.(*sql.Stmt)
	}
	return s.QueryRowContext(ctx, args...)
}

// closeStmts closes the cached statements (at Close).
func (db *core) closeStmts() {
	db.stmts.Range(func(k, v any) bool {
		v.(*sql.Stmt).Close()
		db.stmts.Delete(k)
		return true
	})
}
