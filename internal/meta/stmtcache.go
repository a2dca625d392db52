package meta

import (
	"context"
	"database/sql/driver"
	"errors"
)

// SQLite connections keep their statements prepared.
//
// modernc.org/sqlite parses a query's SQL on every Exec and Query that
// does not go through a prepared statement, and Berth's queries do not:
// parsing was half the cost of a manifest GET by tag, and a good part of
// every push transaction. Rather than preparing statements at every call
// site, each SQLite connection (a driver.Conn wrapped at Open) keeps the
// statements it has run, by SQL text, and runs the same SQL through the
// statement it prepared the first time. That covers every query of the
// read and the write pool alike, inside transactions too (a transaction
// is one connection), with no change to the queries. PostgreSQL is not
// wrapped: pgx caches its statements itself.
//
// A prepared statement runs one query at a time: while rows of it are
// open (a loop over rows that runs the same query again, inside one
// transaction), the same SQL runs unprepared. The cache holds at most
// stmtCacheSize statements per connection (queries with a varying number
// of placeholders are different SQL), and no SQL of stmtCacheMaxLen bytes
// or more (migrations, multi-row inserts), which would not repeat.
const (
	stmtCacheSize   = 256
	stmtCacheMaxLen = 4 << 10
)

// stmtCachingConnector opens connections of d to dsn that cache their
// statements.
type stmtCachingConnector struct {
	d   driver.Driver
	dsn string
}

func (c stmtCachingConnector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.d.Open(c.dsn)
	if err != nil {
		return nil, err
	}
	cc, ok := conn.(sqliteConn)
	if !ok {
		conn.Close()
		return nil, errors.New("open sqlite: the driver's connection lacks the context methods")
	}
	return &cachingConn{sqliteConn: cc, stmts: map[string]*cachedStmt{}}, nil
}

func (c stmtCachingConnector) Driver() driver.Driver { return c.d }

// sqliteConn is what database/sql uses of modernc.org/sqlite's connection.
type sqliteConn interface {
	driver.Conn
	driver.ConnBeginTx
	driver.ConnPrepareContext
	driver.ExecerContext
	driver.QueryerContext
	driver.Pinger
	driver.SessionResetter
	driver.Validator
}

// stmtContext is what a cached statement runs with.
type stmtContext interface {
	driver.Stmt
	driver.StmtExecContext
	driver.StmtQueryContext
}

type cachedStmt struct {
	s    stmtContext
	busy bool // rows of it are open
}

// cachingConn is one SQLite connection with its statements. database/sql
// never uses a connection from two goroutines at once, so the map needs
// no lock.
type cachingConn struct {
	sqliteConn
	stmts map[string]*cachedStmt
}

// stmt returns the connection's prepared statement of query, preparing
// it on first use; nil when it is busy or not to be cached (the caller
// then runs the SQL unprepared).
func (c *cachingConn) stmt(ctx context.Context, query string) *cachedStmt {
	if s, ok := c.stmts[query]; ok {
		if s.busy {
			return nil
		}
		return s
	}
	if len(query) >= stmtCacheMaxLen {
		return nil
	}
	ds, err := c.sqliteConn.PrepareContext(ctx, query)
	if err != nil {
		return nil // the unprepared run reports the error
	}
	s, ok := ds.(stmtContext)
	if !ok {
		ds.Close()
		return nil
	}
	if len(c.stmts) >= stmtCacheSize {
		for q, old := range c.stmts { // evict one that is not running
			if !old.busy {
				old.s.Close()
				delete(c.stmts, q)
				break
			}
		}
	}
	cs := &cachedStmt{s: s}
	c.stmts[query] = cs
	return cs
}

func (c *cachingConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	if s := c.stmt(ctx, query); s != nil {
		return s.s.ExecContext(ctx, args)
	}
	return c.sqliteConn.ExecContext(ctx, query, args)
}

func (c *cachingConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	s := c.stmt(ctx, query)
	if s == nil {
		return c.sqliteConn.QueryContext(ctx, query, args)
	}
	rows, err := s.s.QueryContext(ctx, args)
	if err != nil {
		return nil, err
	}
	s.busy = true
	return &cachedRows{Rows: rows, s: s}, nil
}

// Close finalizes the cached statements, then closes the connection.
func (c *cachingConn) Close() error {
	for q, s := range c.stmts {
		s.s.Close()
		delete(c.stmts, q)
	}
	return c.sqliteConn.Close()
}

// cachedRows frees its statement for the next query when closed.
type cachedRows struct {
	driver.Rows
	s *cachedStmt
}

func (r *cachedRows) Close() error {
	err := r.Rows.Close()
	r.s.busy = false
	return err
}
