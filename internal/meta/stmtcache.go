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
//
// A statement whose plan reads a value bound to it is prepared again on
// every run, since every run binds it anew, and keeping it saves
// nothing. SQLite (3.54) reads the value of a parameter that is a LIMIT
// or an OFFSET (to plan for the limit), the pattern of a LIKE (for its
// prefix optimization), and one compared with a column the way a
// partial index's WHERE compares it with a constant (`until_at > ?`
// against `WHERE until_at > 0`, to decide whether the index applies).
// Berth's queries write CAST(? AS BIGINT) or CAST(? AS TEXT) there,
// whose value the planner does not read, and where a partial index must
// stay usable they state its condition too (`expires_at > 0 AND
// expires_at > CAST(? AS BIGINT)`). SQLite 3.54 also plans a join or an
// ORDER BY query on whether the value of a `col = ?` is 0 or 1: a
// statement bound alternately to 1 and to other ids (repository 1, then
// 2) is prepared again at each change; the statements that run so in a
// loop (the graph's tagsReaching, a push's quota count) cast it too.
// metatest.CheckReprepares fails the tests that run a statement prepared
// again on nearly every run.
const (
	stmtCacheSize   = 256
	stmtCacheMaxLen = 4 << 10
)

// stmtCachingConnector opens connections of d to dsn that cache their
// statements.
type stmtCachingConnector struct {
	d     driver.Driver
	dsn   string
	check func(query string, s driver.Stmt) // StatementCheck, or nil
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
	return &cachingConn{sqliteConn: cc, stmts: map[string]*cachedStmt{}, check: c.check}, nil
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
	check func(query string, s driver.Stmt)
}

// drop finalizes the statement of query.
func (c *cachingConn) drop(query string, s *cachedStmt) {
	if c.check != nil {
		c.check(query, s.s)
	}
	s.s.Close()
	delete(c.stmts, query)
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
				c.drop(q, old)
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
		c.drop(q, s)
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
