// Package meta is Berth's metadata store, the source of truth for what
// exists: repositories, blobs and their links, manifests, tags, referrers,
// uploads and the event outbox. One SQL implementation serves two dialects,
// SQLite (embedded, no cgo) and PostgreSQL.
package meta

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx"
	msqlite "modernc.org/sqlite"
)

// ErrNotFound is wrapped when a looked-up row does not exist.
var ErrNotFound = errors.New("not found")

// ErrRepositoryNotFound is returned when a repository does not exist.
var ErrRepositoryNotFound = fmt.Errorf("repository %w", ErrNotFound)

type dialect int

const (
	sqlite dialect = iota
	postgres
)

// core is the connection every typed store shares. Reads and writes may
// use different pools: with SQLite, writes go through a single connection
// (SQLite has one writer at a time; serializing in the pool avoids busy
// retries) while reads run in parallel on a WAL database.
type core struct {
	read    *sql.DB
	write   writer
	dialect dialect
	// appended, if set, is signalled (without blocking) after each commit
	// of a transaction that appended an event to the outbox
	// (WakeOnAppend); enqueued, if set, is called after each commit of a
	// transaction that enqueued a job, once per queue (WakeOnEnqueue).
	// notes holds what a live transaction did of either until it ends.
	appended chan<- struct{}
	enqueued func(queue string)
	notes    sync.Map // *sql.Tx -> *txNote
	// syncFull carries SyncFull from the options to Open; the store's
	// own state is write.log (logFlusher), nil when nothing waits.
	syncFull bool
	// stmtCheck carries StatementCheck from the options to Open.
	stmtCheck func(query string, s driver.Stmt)
	// noUpgrade refuses to migrate a database at an older schema version
	// (NoUpgrade).
	noUpgrade bool
	// mustExist refuses a database that holds no Berth schema
	// (MustExist); only Open reads it.
	mustExist bool
	// deadlocks counts the transactions PostgreSQL ended as deadlocked
	// (and txRetry ran again): locks taken in inconsistent orders.
	deadlocks atomic.Int64
	// writerWaits and writerWaitNanos count SQLite's write transactions
	// and the time they waited to begin: for the single writer connection
	// and for the database's write lock (WriterWait).
	writerWaits, writerWaitNanos atomic.Int64
	// writerHoldNanos is the time SQLite's write transactions held the
	// writer, from their start to their commit or rollback (WriterHold).
	writerHoldNanos atomic.Int64
	// behindSwept holds, per job queue, when this process last looked for
	// jobs marked behind that nothing holds back (sweepBehind).
	behindSwept sync.Map // queue -> *atomic.Int64 (microseconds)
	// offset is what now adds to the local clock, in microseconds: the
	// database server's clock minus the local one on PostgreSQL, measured
	// at Open and every clockEvery (clock.go); 0 on SQLite.
	offset atomic.Int64
	// clock, if set, replaces time.Now as the local clock (tests only).
	clock func() time.Time
	// clockStop ends the measures of offset (startClock), which close
	// clockDone once they have stopped; clockWarned is set while the
	// offset is past clockWarnOver and that was logged. Only Open and
	// then the measuring goroutine touch clockWarned.
	clockStop   context.CancelFunc
	clockDone   chan struct{}
	clockWarned bool
	// log is where the store logs (Logger; slog.Default() if nil).
	log *slog.Logger
	// expiry bounds tag expirations (TagExpirationBounds); nil: Quay's
	// defaults.
	expiry *[2]time.Duration
}

// DB is the metadata store: an open database and its migrations. Its
// data is reached through one typed store per aggregate (stores.go); the
// DB itself only opens, checks and closes.
type DB struct{ *core }

// Option configures a store at Open.
type Option func(*core)

// WakeOnAppend makes the store signal c, without blocking, each time a
// transaction that appended an event to the outbox commits in this
// process: the feed's dispatcher (internal/feed) waits on it, so that a
// local change reaches the subscribers at once rather than at the next
// poll. Give c a buffer of one.
func WakeOnAppend(c chan<- struct{}) Option {
	return func(db *core) { db.appended = c }
}

// WakeOnEnqueue makes the store call wake(queue) each time a transaction
// that enqueued a job of queue commits in this process, once per queue
// and transaction: the queue's workers (internal/jobs) then look for it at
// once rather than at their next poll, and an idle worker is woken only
// when there is something new for it. wake must not block.
func WakeOnEnqueue(wake func(queue string)) Option {
	return func(db *core) { db.enqueued = wake }
}

// txNote is what a transaction did that the store announces once it
// commits (WakeOnAppend, WakeOnEnqueue). Only the goroutine running the
// transaction touches it.
type txNote struct {
	appended bool
	queues   []string
}

// note returns tx's note, making it on first use.
func (db *core) note(tx *sql.Tx) *txNote {
	if n, ok := db.notes.Load(tx); ok {
		return n.(*txNote)
	}
	n := &txNote{}
	db.notes.Store(tx, n)
	return n
}

// announce tells what a committed transaction did to whoever waits for
// it.
func (db *core) announce(n *txNote) {
	if n.appended {
		select {
		case db.appended <- struct{}{}:
		default:
		}
	}
	for _, q := range n.queues {
		db.enqueued(q)
	}
}

// SyncFull makes an SQLite store's commits return only once its
// write-ahead log is on disk, so that a commit survives a power cut, not
// only a crash of the process; without it a power cut may lose the last
// commits. The log is flushed after the commit rather than inside it,
// once for all the commits made meanwhile (logFlusher), and lax commits
// (laxTx) do not wait for it. It is what storage.filesystem.fsync asks
// for. PostgreSQL's durability is the server's setting.
func SyncFull() Option {
	return func(db *core) { db.syncFull = true }
}

// StatementCheck makes each SQLite connection call check with the SQL
// and the driver's statement (modernc.org/sqlite) of every statement it
// kept prepared (stmtcache.go), just before it finalizes the statement:
// when the connection closes or the cache evicts it. Tests read SQLite's
// counters of the statement there (metatest counts re-preparations);
// PostgreSQL stores never call it.
func StatementCheck(check func(query string, s driver.Stmt)) Option {
	return func(db *core) { db.stmtCheck = check }
}

// NoUpgrade makes Open create the schema of a new (empty) database but
// refuse one at an older schema version rather than migrate it: a tool
// (berth admin, berth import) run from a newer binary must not move a
// shared database past the running servers' version, which would take
// them out of service (/readyz). berth serve and berth admin migrate
// upgrade.
func NoUpgrade() Option {
	return func(db *core) { db.noUpgrade = true }
}

// ErrNoDatabase is returned by Open with MustExist for a database that
// holds no Berth schema: an SQLite file that does not exist or is empty,
// a PostgreSQL database (or search_path schema) with no Berth tables.
var ErrNoDatabase = errors.New("no Berth database there (schema version 0)")

// MustExist makes Open refuse, with ErrNoDatabase, a database it would
// have to create, rather than create it: a maintenance tool (berth admin,
// berth import) pointed at the wrong place (a shell without
// BERTH_DATABASE_URL, a typo in --data-dir) must not take an empty
// database for the registry's, whose storage holds what no row of it
// records. It neither creates an SQLite file nor its directory, nor any
// table on PostgreSQL. berth serve and berth admin migrate create.
func MustExist() Option {
	return func(db *core) { db.mustExist = true }
}

// Quay's bounds of every tag expiration, after the tag's start
// (LABELED_EXPIRATION_MINIMUM "1h", LABELED_EXPIRATION_MAXIMUM "104w").
const (
	DefaultExpirationMinimum = time.Hour
	DefaultExpirationMaximum = 104 * 7 * 24 * time.Hour
)

// TagExpirationBounds replaces Quay's bounds of tag expirations, set
// through the API or by a push's quay.expires-after label
// (boundExpiration, lifecycle.go); a zero bound is none. berth serve
// passes lifecycle.expirationMinimum and lifecycle.expirationMaximum.
func TagExpirationBounds(minimum, maximum time.Duration) Option {
	return func(db *core) { db.expiry = &[2]time.Duration{minimum, maximum} }
}

// Open connects to the database named by dsn: a postgres:// or
// postgresql:// URL, or an SQLite file path (optionally prefixed sqlite://
// or sqlite:). It applies pending migrations before returning.
func Open(ctx context.Context, dsn string, opts ...Option) (*DB, error) {
	var set core
	for _, o := range opts {
		o(&set)
	}
	if set.mustExist && !isPostgresDSN(dsn) {
		// Before the open, which makes the file's directory (and SQLite
		// the file at the first connection).
		if _, err := os.Stat(sqlitePath(dsn)); errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("open sqlite: the file does not exist: %w", ErrNoDatabase)
		}
	}
	db, err := openWith(dsn, set.syncFull, set.stmtCheck)
	if err != nil {
		return nil, err
	}
	db.appended, db.enqueued, db.noUpgrade = set.appended, set.enqueued, set.noUpgrade
	db.clock, db.log, db.expiry = set.clock, set.log, set.expiry
	if set.mustExist {
		if err := db.checkExists(ctx); err != nil {
			db.Close()
			return nil, err
		}
	}
	if err := db.checkJournal(ctx); err != nil {
		db.Close()
		return nil, err
	}
	// Before the migrations, which record when they ran.
	if err := db.syncClock(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	if err := db.migrate(ctx); err != nil {
		db.Close()
		return nil, err
	}
	db.startClock()
	return db, nil
}

// checkExists returns ErrNoDatabase unless the database records a schema
// version above 0, reading only: no table is created.
func (db *core) checkExists(ctx context.Context) error {
	var present bool
	q := "SELECT COUNT(*) > 0 FROM sqlite_master WHERE type = 'table' AND name = 'schema_migrations'"
	if db.dialect == postgres {
		q = "SELECT to_regclass('schema_migrations') IS NOT NULL"
	}
	if err := db.read.QueryRowContext(ctx, q).Scan(&present); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if !present {
		return ErrNoDatabase
	}
	var version int
	if err := db.read.QueryRowContext(ctx, "SELECT COALESCE(MAX(version), 0) FROM schema_migrations").Scan(&version); err != nil {
		return fmt.Errorf("read schema version: %w", err)
	}
	if version == 0 {
		return ErrNoDatabase
	}
	return nil
}

// checkJournal makes sure that an SQLite store whose commits wait for the
// log's flush (SyncFull) has a write-ahead log to flush: SQLite falls back
// to another journal where WAL cannot work (a file system without shared
// memory), and then the flush would make nothing durable.
func (db *core) checkJournal(ctx context.Context) error {
	if db.write.log == nil {
		return nil
	}
	var mode string
	if err := db.write.ReadRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return fmt.Errorf("open sqlite: read the journal mode: %w", err)
	}
	if !strings.EqualFold(mode, "wal") {
		return fmt.Errorf("open sqlite: the database runs in journal mode %q, not WAL (write-ahead logging), which Berth needs; put the data directory on a local file system", mode)
	}
	// The log is next to the file SQLite opened, which is where a
	// symbolic link in the configured path leads: flushing the log next
	// to the link would find none, and flush nothing, ever.
	rows, err := db.write.ReadContext(ctx, "PRAGMA database_list")
	if err != nil {
		return fmt.Errorf("open sqlite: read the database's file name: %w", err)
	}
	defer rows.Close()
	for rows.Next() {
		var seq int
		var name, file string
		if err := rows.Scan(&seq, &name, &file); err != nil {
			return fmt.Errorf("open sqlite: read the database's file name: %w", err)
		}
		if name == "main" && file != "" {
			db.write.log.path = file + "-wal"
		}
	}
	if err := rows.Err(); err != nil {
		return fmt.Errorf("open sqlite: read the database's file name: %w", err)
	}
	return nil
}

// open connects without migrating.
func open(dsn string, syncFull bool) (*DB, error) {
	return openWith(dsn, syncFull, nil)
}

func openWith(dsn string, syncFull bool, check func(string, driver.Stmt)) (*DB, error) {
	if isPostgresDSN(dsn) {
		return openPostgres(dsn)
	}
	return openSQLite(sqlitePath(dsn), syncFull, check)
}

func isPostgresDSN(dsn string) bool {
	return strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://")
}

// sqlitePath is the file an SQLite dsn names.
func sqlitePath(dsn string) string {
	return strings.TrimPrefix(strings.TrimPrefix(dsn, "sqlite://"), "sqlite:")
}

func openPostgres(dsn string) (*DB, error) {
	pool, err := sql.Open("pgx", dsn)
	if err != nil {
		return nil, fmt.Errorf("open postgres: %w", err)
	}
	pool.SetMaxOpenConns(32)
	pool.SetMaxIdleConns(32)
	pool.SetConnMaxIdleTime(5 * time.Minute)
	// Connections are renewed, so that a failover that moves the primary
	// behind the same name (a DNS change: Patroni, Aurora) reaches every
	// connection, busy ones included, within this.
	pool.SetConnMaxLifetime(30 * time.Minute)
	return &DB{&core{read: pool, write: writer{db: pool}, dialect: postgres}}, nil
}

func openSQLite(path string, syncFull bool, check func(string, driver.Stmt)) (*DB, error) {
	if path == "" {
		return nil, errors.New("open sqlite: empty path")
	}
	if dir := filepath.Dir(path); dir != "" {
		if err := os.MkdirAll(dir, 0o750); err != nil {
			return nil, fmt.Errorf("open sqlite: %w", err)
		}
	}
	// Commits do not flush the log themselves (synchronous=NORMAL): with
	// SyncFull, the durable ones wait for logFlusher's flush, after the
	// writer has moved on.
	base := "file:" + (&url.URL{Path: path}).EscapedPath() +
		"?_pragma=busy_timeout(10000)&_pragma=journal_mode(WAL)&_pragma=synchronous(NORMAL)&_pragma=foreign_keys(1)"
	// Connections keep their statements prepared (stmtcache.go).
	write := writer{db: sql.OpenDB(stmtCachingConnector{d: &msqlite.Driver{}, dsn: base + "&_txlock=immediate", check: check})}
	if syncFull {
		write.log = newLogFlusher(path)
	}
	write.db.SetMaxOpenConns(1)
	write.db.SetMaxIdleConns(1)
	write.db.SetConnMaxLifetime(0)
	read := sql.OpenDB(stmtCachingConnector{d: &msqlite.Driver{}, dsn: base + "&_pragma=query_only(1)", check: check})
	n := max(4, 2*runtime.GOMAXPROCS(0))
	read.SetMaxOpenConns(n)
	read.SetMaxIdleConns(n)
	read.SetConnMaxLifetime(0)
	return &DB{&core{read: read, write: write, dialect: sqlite}}, nil
}

// Close stops measuring the offset to the database's clock and closes
// the pools.
func (db *DB) Close() error {
	db.stopClock()
	err := db.write.Close()
	if db.read != db.write.db {
		err = errors.Join(err, db.read.Close())
	}
	return err
}

// Dialect names the database kind ("sqlite" or "postgres").
func (db *DB) Dialect() string {
	if db.dialect == postgres {
		return "postgres"
	}
	return "sqlite"
}

// Ping checks the database answers, and that its log's flushes have not
// failed (logFlusher: durable commits fail until a restart).
func (db *DB) Ping(ctx context.Context) error {
	if err := db.write.failed(); err != nil {
		return err
	}
	return db.read.PingContext(ctx)
}

// q rewrites ? placeholders to $n for PostgreSQL. Queries never contain a
// literal question mark.
func (db *core) q(query string) string {
	if db.dialect != postgres {
		return query
	}
	var b strings.Builder
	b.Grow(len(query) + 8)
	n := 0
	for i := 0; i < len(query); i++ {
		if query[i] == '?' {
			n++
			b.WriteByte('$')
			b.WriteString(strconv.Itoa(n))
			continue
		}
		b.WriteByte(query[i])
	}
	return b.String()
}

// tx runs fn in a write transaction, committing if it returns nil. A
// transaction that loses a race the database detects (a serialization
// failure or deadlock on PostgreSQL, or fn's own errRetry after a
// concurrent change it could not lock) is run again from the start, a few
// times: concurrency in normal operation is not an error the caller sees.
// fn must therefore only touch the database and its own locals.
//
// Under a context from LaxCommits it commits laxly, as laxTx does.
func (db *core) tx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return db.txRetry(ctx, ctx.Value(laxKey{}) != nil, fn)
}

type laxKey struct{}

// LaxCommits returns a context under which the store's write transactions
// commit without waiting for the log to reach the disk (see laxTx), for a
// job handler whose writes are derived data that the job can write again:
// the job's own completion commits after them, laxly too, and the logs
// keep commit order, so a power cut that loses the writes loses the
// completion with them and the job runs again. Not for handlers that
// delete stored content or act on the outside world on the strength of
// their writes.
func LaxCommits(ctx context.Context) context.Context {
	return context.WithValue(ctx, laxKey{}, true)
}

// laxTx is tx for bookkeeping whose loss to a power cut is harmless: its
// commit returns before the write-ahead log reaches the disk (SQLite
// without waiting for logFlusher's flush, PostgreSQL with
// synchronous_commit off). Both logs are written in commit order, so the
// next durable commit makes every earlier lax one durable too, and a power
// cut can only lose the lax commits made since the last durable one, as
// if they had not happened; a crash of the process loses nothing. It is
// for leases and claims (of uploads and jobs), job outcomes (a job whose
// completion is lost runs again; handlers are idempotent), the progress
// of upload sessions (a client told an upload exists or advanced learns
// otherwise and starts over, as it must when an upload expires), and the
// feed's positions and cursors (a subscriber's writes commit with its
// cursor, so a lost cursor also loses what it wrote, and the events are
// handled again). Never for what a client is told is stored: blobs,
// manifests, tags, deletions, accounts and settings stay durable.
func (db *core) laxTx(ctx context.Context, fn func(tx *sql.Tx) error) error {
	return db.txRetry(ctx, true, fn)
}

// laxExec runs one statement in a laxTx.
func (db *core) laxExec(ctx context.Context, query string, args ...any) (sql.Result, error) {
	var res sql.Result
	err := db.laxTx(ctx, func(tx *sql.Tx) error {
		var err error
		res, err = tx.ExecContext(ctx, query, args...)
		return err
	})
	return res, err
}

func (db *core) txRetry(ctx context.Context, lax bool, fn func(tx *sql.Tx) error) error {
	var err error
	for attempt := range txAttempts {
		err = db.tx1(ctx, lax, fn)
		if db.dialect == sqlite {
			// The writer connection just went to the next waiter, if any,
			// which the runtime readied to run on this P only once this
			// goroutine blocks: yield now, so that SQLite's one writer
			// does not sit idle while this goroutine carries on with its
			// request (the yield costs a microsecond or so).
			runtime.Gosched()
		}
		if err == nil || !retryable(err) || ctx.Err() != nil {
			return err
		}
		if isDeadlock(err) {
			db.deadlocks.Add(1)
		}
		// A short, growing pause lets the winner commit.
		select {
		case <-ctx.Done():
			return err
		case <-time.After(time.Duration(attempt+1) * 2 * time.Millisecond):
		}
	}
	return fmt.Errorf("%w (gave up after %d tries)", err, txAttempts)
}

// txAttempts bounds the runs of one transaction that keeps losing races.
const txAttempts = 8

func (db *core) tx1(ctx context.Context, lax bool, fn func(tx *sql.Tx) error) error {
	start := time.Now()
	tx, err := db.write.BeginTx(ctx, nil)
	if db.dialect == sqlite {
		db.writerWaits.Add(1)
		db.writerWaitNanos.Add(int64(time.Since(start)))
	}
	if err != nil {
		return fmt.Errorf("begin: %w", err)
	}
	held := time.Now()
	released := func() {
		if db.dialect == sqlite {
			db.writerHoldNanos.Add(int64(time.Since(held)))
		}
	}
	if lax && db.dialect == postgres {
		if _, err := tx.ExecContext(ctx, "SET LOCAL synchronous_commit TO OFF"); err != nil {
			tx.Rollback()
			return fmt.Errorf("begin: %w", err)
		}
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		released()
		db.notes.Delete(tx)
		return invalidText(err)
	}
	err = tx.Commit()
	released() // the writer is free again (a durable commit's flush follows)
	if err == nil && !lax {
		// The writer is free again; this commit waits for the log's
		// flush, which the commits made meanwhile share.
		if err = db.write.flush(); err != nil {
			err = fmt.Errorf("%w (the change is committed and visible, but may not survive a power cut)", err)
		}
	}
	// What a durable commit enqueued or appended is announced once it is
	// on disk. (That alone does not keep a webhook from going out for a
	// push a power cut could lose: the commit is visible before its flush,
	// and lax work may act on it meanwhile; see WaitDurable.)
	if n, ok := db.notes.LoadAndDelete(tx); ok && err == nil {
		db.announce(n.(*txNote))
	}
	if err != nil {
		return fmt.Errorf("commit: %w", err)
	}
	return nil
}

// WaitDurable returns once everything committed before the call would
// survive a power cut: on an SQLite store with SyncFull, after a flush of
// the log that began after the call (the flush durable commits share); at
// once on PostgreSQL, whose commits become visible only once durable (lax
// ones aside), and on SQLite without SyncFull, which flushes nothing. A
// commit is visible one flush before its caller is told it is stored, and
// lax commits made on the strength of it (the feed's numbering, a
// delivery's queueing and claim) do not wait for that flush: whoever
// tells the outside world of what it read (a webhook's delivery) calls
// this first. ctx ends the wait, not the flush.
func (db *DB) WaitDurable(ctx context.Context) error {
	if db.write.log == nil {
		return nil
	}
	done := make(chan error, 1)
	go func() { done <- db.write.flush() }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
		return fmt.Errorf("wait for the log's flush: %w", ctx.Err())
	}
}

// pointLookup is the context for a read by key on a pull's hot path (a
// manifest or blob GET) on SQLite: its work is bounded by the key (the
// rows it names, through an index) and an SQLite read never waits for a
// lock (WAL), so cancelling it midway saves nothing, while a cancellable
// context costs two goroutines per query (database/sql's closer of the
// rows and the driver's interrupter of the statement). On PostgreSQL the
// request's context stays: a query there waits on the network, and must
// end with its request.
func (db *core) pointLookup(ctx context.Context) context.Context {
	if db.dialect == sqlite {
		return context.WithoutCancel(ctx)
	}
	return ctx
}

// now is the time, in Unix microseconds, that the store writes and
// compares: the local clock corrected by the offset to the database's
// clock (clock.go).
func (db *core) now() int64 { return db.localNow().UnixMicro() + db.offset.Load() }

// localNow is the host's clock (core.clock in tests).
func (db *core) localNow() time.Time {
	if db.clock != nil {
		return db.clock()
	}
	return time.Now()
}

func fromMicros(us int64) time.Time { return time.UnixMicro(us).UTC() }

func likePrefix(s string) string {
	r := strings.NewReplacer(`\`, `\\`, `%`, `\%`, `_`, `\_`)
	return r.Replace(s) + "%"
}

// lockSuffix locks the selected rows until the transaction ends on
// PostgreSQL; SQLite serializes write transactions already.
func (db *core) lockSuffix() string {
	if db.dialect == postgres {
		return " FOR UPDATE"
	}
	return ""
}
