package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
	"unicode/utf8"
)

// Job statuses.
const (
	JobPending = "pending" // waiting for run_at, or for an older job of its ordering key
	JobRunning = "running" // claimed by a worker holding a lease
	JobDone    = "done"    // finished
	JobDead    = "dead"    // failed for good: the dead letter
)

// DefaultJobMaxAttempts is the MaxAttempts of a job enqueued without one.
const DefaultJobMaxAttempts = 5

// maxJobError caps the stored last_error.
const maxJobError = 4096

// ErrJobLost is returned when a worker acts on a job whose lease it no
// longer holds: the lease expired and another worker took the job over, or
// the job already finished.
var ErrJobLost = errors.New("job lease lost")

// ErrJobNotFound is returned for an unknown job (or, by RequeueDeadJob, a
// job that is not dead).
var ErrJobNotFound = fmt.Errorf("job %w", ErrNotFound)

// Job is a unit of work of the durable queue. Jobs of one queue with the
// same non-empty OrderingKey run one at a time, in enqueue order. Jobs of
// one queue with the same non-empty FairKey (a tenant: the namespace a
// notification delivery is for) share the queue's workers fairly with the
// other keys' (see ClaimJob).
type Job struct {
	ID          int64
	Queue       string
	OrderingKey string
	FairKey     string
	Payload     json.RawMessage
	Status      string
	Attempts    int
	MaxAttempts int
	RunAt       time.Time
	LastError   string
	CreatedAt   time.Time
}

// jobsBehindSchema adds jobs.behind: 1 while an older job of the same
// queue and ordering key is live (pending or running), 0 otherwise (always
// 0 without a key). Of a key's live jobs only the oldest can be ready, so
// the claims walk jobs_ready, which leaves the others out: a backlog held
// behind one key (a slow webhook's deliveries, one repository's graph
// indexing) costs a claim nothing, where jobs_claim had it step over every
// held job at every poll of every idle worker. jobs_key serves what
// jobs_claim also served (a queue's live jobs).
const jobsBehindSchema = `
ALTER TABLE jobs ADD COLUMN behind SMALLINT NOT NULL DEFAULT 0;
UPDATE jobs SET behind = 1 WHERE status IN ('pending', 'running') AND ordering_key <> '' AND EXISTS (
	SELECT 1 FROM jobs o WHERE o.queue = jobs.queue AND o.ordering_key = jobs.ordering_key
	AND o.status IN ('pending', 'running') AND o.id < jobs.id);
CREATE INDEX jobs_ready ON jobs(queue, id) WHERE status IN ('pending', 'running') AND behind = 0;
DROP INDEX jobs_claim;
`

// jobKeyLockClass is the first key of the two-key PostgreSQL advisory
// locks that serialize enqueues of one ordering key ("jobs"). The two-key
// form lives in a space of its own: it cannot collide with the one-key
// locks of migrations and the feed's sequencer.
const jobKeyLockClass = 0x6a6f6273

// EnqueueJob adds a job in a transaction of its own and returns its id.
// Zero MaxAttempts means DefaultJobMaxAttempts; zero RunAt means now.
// Status, Attempts, LastError and CreatedAt are ignored.
func (db Jobs) EnqueueJob(ctx context.Context, j Job) (int64, error) {
	var id int64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var err error
		id, err = db.enqueueJob(ctx, tx, j)
		return err
	})
	return id, err
}

// EnqueueIn adds a job in tx, so that it commits with the rest of tx (a
// feed subscriber's deliveries with its cursor), and returns its id.
func (db Jobs) EnqueueIn(ctx context.Context, tx Tx, j Job) (int64, error) {
	return db.enqueueJob(ctx, tx.tx, j)
}

// enqueueJob adds a job in the caller's transaction, so that a change
// and the work it causes commit together (transactional outbox).
//
// On PostgreSQL a job with an OrderingKey takes a transaction-scoped
// advisory lock on its queue and key before its id is drawn, so that
// transactions enqueuing for one key commit in id order: a claimer can
// never see a job of a key before an older one of the same key. The lock is
// held until the caller's transaction ends; a transaction that enqueues for
// several keys must take them in a consistent order (as a feed
// subscriber does: one transaction at a time, in feed order), or two such transactions may deadlock.
func (db *core) enqueueJob(ctx context.Context, tx *sql.Tx, j Job) (int64, error) {
	j.LastError, j.CreatedAt = "", time.Time{}
	return db.insertJob(ctx, tx, j)
}

// insertJob adds j as a pending job with no attempts; zero CreatedAt means
// now.
func (db *core) insertJob(ctx context.Context, tx *sql.Tx, j Job) (int64, error) {
	if j.Queue == "" {
		return 0, errors.New("enqueue job: empty queue")
	}
	if j.Payload == nil {
		j.Payload = json.RawMessage("{}")
	}
	if !json.Valid(j.Payload) || !utf8.Valid(j.Payload) {
		return 0, fmt.Errorf("enqueue %s job: payload is not valid JSON", j.Queue)
	}
	if j.MaxAttempts <= 0 {
		j.MaxAttempts = DefaultJobMaxAttempts
	}
	ts := db.now()
	runAt, created := ts, ts
	if !j.RunAt.IsZero() {
		runAt = j.RunAt.UnixMicro()
	}
	if !j.CreatedAt.IsZero() {
		created = j.CreatedAt.UnixMicro()
	}
	if err := db.lockJobKey(ctx, tx, j.Queue, j.OrderingKey); err != nil {
		return 0, err
	}
	// Every live job of the key is older than this one (enqueues of a key
	// are serialized): any of them holds it behind (jobsBehindSchema).
	var id int64
	err := tx.QueryRowContext(ctx, db.q(`INSERT INTO jobs (queue, ordering_key, fair_key, payload, status, attempts, max_attempts, run_at, last_error, created_at, updated_at, behind)
		VALUES (?, ?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?, CASE WHEN ? <> '' AND EXISTS (
			SELECT 1 FROM jobs o WHERE o.queue = ? AND o.ordering_key = ? AND o.status IN ('pending', 'running')) THEN 1 ELSE 0 END)
		RETURNING id`),
		j.Queue, j.OrderingKey, j.FairKey, string(j.Payload), j.MaxAttempts, runAt, cleanJobError(j.LastError), created, ts,
		j.OrderingKey, j.Queue, j.OrderingKey).Scan(&id)
	if err != nil {
		return 0, fmt.Errorf("enqueue %s job: %w", j.Queue, err)
	}
	if db.enqueued != nil {
		if n := db.note(tx); !slices.Contains(n.queues, j.Queue) {
			n.queues = append(n.queues, j.Queue)
		}
	}
	return id, nil
}

// advanceKey is what a job of a key that stops being live (done, dead)
// does in the same transaction: the key's oldest live job, if any, is no
// longer behind, and claims see it. On PostgreSQL it takes the key's
// enqueue lock first (lockJobKey), so that an enqueue of the key either
// committed before (and its job is seen here) or runs after this commit
// (and sees the finished job gone: its job is not behind); without the
// lock, a job enqueued concurrently would be held behind a job that is
// no longer live, for good.
func (db *core) advanceKey(ctx context.Context, tx *sql.Tx, queue, key string) error {
	if key == "" {
		return nil
	}
	if err := db.lockJobKey(ctx, tx, queue, key); err != nil {
		return err
	}
	return db.frontOfKey(ctx, tx, queue, key)
}

// frontOfKey marks the oldest live job of the key not behind; the caller
// holds the key's enqueue lock (advanceKey).
func (db *core) frontOfKey(ctx context.Context, tx *sql.Tx, queue, key string) error {
	_, err := tx.ExecContext(ctx, db.q(`UPDATE jobs SET behind = 0 WHERE id = (
			SELECT MIN(o.id) FROM jobs o WHERE o.queue = ? AND o.ordering_key = ? AND o.status IN ('pending', 'running'))
		AND behind = 1`), queue, key)
	if err != nil {
		return fmt.Errorf("advance %s jobs of key %q: %w", queue, key, err)
	}
	return nil
}

func (db *core) lockJobKey(ctx context.Context, tx *sql.Tx, queue, key string) error {
	if db.dialect != postgres || key == "" {
		return nil // SQLite: the write transaction already serializes enqueues
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1, hashtext($2))", jobKeyLockClass, queue+"\n"+key); err != nil {
		return fmt.Errorf("lock ordering key: %w", err)
	}
	return nil
}

const jobColumns = "id, queue, ordering_key, fair_key, payload, status, attempts, max_attempts, run_at, last_error, created_at"

func scanJob(row interface{ Scan(...any) error }) (Job, error) {
	var j Job
	var payload string
	var runAt, created int64
	if err := row.Scan(&j.ID, &j.Queue, &j.OrderingKey, &j.FairKey, &payload, &j.Status, &j.Attempts, &j.MaxAttempts, &runAt, &j.LastError, &created); err != nil {
		return Job{}, err
	}
	j.Payload = json.RawMessage(payload)
	j.RunAt = fromMicros(runAt)
	j.CreatedAt = fromMicros(created)
	return j, nil
}

// finishJob applies set to a job that owner still holds.
func (db *core) finishJob(ctx context.Context, what string, id int64, owner, set string, args ...any) error {
	args = append(args, db.now(), id, owner)
	res, err := db.laxExec(ctx, db.q("UPDATE jobs SET "+set+", updated_at = ? WHERE id = ? AND lease_owner = ? AND status = 'running'"), args...)
	if err != nil {
		return fmt.Errorf("%s job %d: %w", what, id, err)
	}
	if n, err := res.RowsAffected(); err != nil {
		return fmt.Errorf("%s job %d: %w", what, id, err)
	} else if n == 0 {
		return fmt.Errorf("%s job %d: %w", what, id, ErrJobLost)
	}
	return nil
}

// endJob applies set, which ends the job (done, dead), to a job that owner
// still holds, and advances its key (advanceKey) in the same transaction.
func (db *core) endJob(ctx context.Context, what string, id int64, owner, set string, args ...any) error {
	args = append(args, db.now(), id, owner)
	err := db.laxTx(ctx, func(tx *sql.Tx) error {
		var queue, key string
		err := tx.QueryRowContext(ctx, db.q("UPDATE jobs SET "+set+", updated_at = ? WHERE id = ? AND lease_owner = ? AND status = 'running' RETURNING queue, ordering_key"),
			args...).Scan(&queue, &key)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrJobLost
		}
		if err != nil {
			return err
		}
		return db.advanceKey(ctx, tx, queue, key)
	})
	if err != nil {
		return fmt.Errorf("%s job %d: %w", what, id, err)
	}
	return nil
}

// CompleteJob marks a job done. It returns ErrJobLost unless owner still
// holds the job.
func (db Jobs) CompleteJob(ctx context.Context, id int64, owner string) error {
	return db.endJob(ctx, "complete", id, owner, "status = 'done', lease_until = 0, lease_owner = ''")
}

// RetryJob puts a job back to pending, to run again from runAt, recording
// the error. A job released by ReleaseJobs while it ran is ready at once
// instead: the attempt that failed started before the release (a delivery
// to a receiver that was down until the reset). It returns ErrJobLost
// unless owner still holds the job.
func (db Jobs) RetryJob(ctx context.Context, id int64, owner string, runAt time.Time, errText string) error {
	return db.finishJob(ctx, "retry", id, owner, `status = 'pending',
		run_at = CASE WHEN run_at = ? THEN CAST(? AS BIGINT) ELSE CAST(? AS BIGINT) END,
		lease_until = 0, lease_owner = '', last_error = ?`,
		releasedRunAt, db.now(), runAt.UnixMicro(), cleanJobError(errText))
}

// DeferJob puts a running job back to pending without counting the
// attempt its claim counted, to run again from runAt, recording reason: a
// handler's "not now", which spends no attempt however often it happens.
// A job released by ReleaseJobs while it ran is ready at once instead. It
// returns ErrJobLost unless owner still holds the job.
func (db Jobs) DeferJob(ctx context.Context, id int64, owner string, runAt time.Time, reason string) error {
	return db.finishJob(ctx, "defer", id, owner, `status = 'pending',
		run_at = CASE WHEN run_at = ? THEN CAST(? AS BIGINT) ELSE CAST(? AS BIGINT) END,
		attempts = CASE WHEN attempts > 0 THEN attempts - 1 ELSE 0 END,
		lease_until = 0, lease_owner = '', last_error = ?`,
		releasedRunAt, db.now(), runAt.UnixMicro(), cleanJobError(reason))
}

// releasedRunAt is the run_at that ReleaseJobs gives a running job, whose
// run_at otherwise is the time it became ready: DeferJob and RetryJob then
// make it ready at once rather than at the time its handler asked for.
const releasedRunAt = 0

// ReleaseJobs makes the live jobs of a queue whose ordering key starts
// with keyPrefix ready at once: a pending job waiting for its run_at (a
// retry's backoff, a deferral) can be claimed now, still after the older
// jobs of its key, and a running job that its handler defers or fails is
// not held.
// It returns how many jobs it released.
func (db Jobs) ReleaseJobs(ctx context.Context, queue, keyPrefix string) (int64, error) {
	var n int64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var err error
		n, err = db.releaseJobsTx(ctx, tx, queue, keyPrefix)
		return err
	})
	return n, err
}

func (db *core) releaseJobsTx(ctx context.Context, tx *sql.Tx, queue, keyPrefix string) (int64, error) {
	if queue == "" || keyPrefix == "" {
		return 0, errors.New("release jobs: a queue and a key prefix are required")
	}
	// The status terms repeat the partial indexes' predicate verbatim, so
	// that SQLite uses them (see ClaimJob).
	ts := db.now()
	res, err := tx.ExecContext(ctx, db.q(`UPDATE jobs SET run_at = CASE WHEN status = 'running' THEN CAST(? AS BIGINT) ELSE CAST(? AS BIGINT) END, updated_at = ?
		WHERE queue = ? AND status IN ('pending', 'running') AND substr(ordering_key, 1, ?) = ?
		AND ((status = 'pending' AND run_at > ?) OR (status = 'running' AND run_at <> ?))`),
		releasedRunAt, ts, ts, queue, utf8.RuneCountInString(keyPrefix), keyPrefix, ts, releasedRunAt)
	if err != nil {
		return 0, fmt.Errorf("release %s jobs: %w", queue, err)
	}
	return res.RowsAffected()
}

// ExpireLeasesOf ends now the leases of the running jobs whose lease owner
// starts with ownerPrefix (the workers of a process that stops without
// their handlers having returned): another worker takes them over at once,
// as it would after the leases ran out. It returns how many it ended. The
// prefix must name one process alone and end unambiguously (see
// jobs.OwnerPrefix): any live owner it begins loses its lease.
func (db Jobs) ExpireLeasesOf(ctx context.Context, ownerPrefix string) (int64, error) {
	if ownerPrefix == "" {
		return 0, errors.New("expire job leases: an owner prefix is required")
	}
	res, err := db.write.ExecContext(ctx, db.q(`UPDATE jobs SET lease_until = 0, updated_at = ?
		WHERE status = 'running' AND substr(lease_owner, 1, ?) = ?`), db.now(), utf8.RuneCountInString(ownerPrefix), ownerPrefix)
	if err != nil {
		return 0, fmt.Errorf("expire job leases: %w", err)
	}
	return res.RowsAffected()
}

// KillJob moves a job to the dead letter, recording the error. It returns
// ErrJobLost unless owner still holds the job.
func (db Jobs) KillJob(ctx context.Context, id int64, owner string, errText string) error {
	return db.endJob(ctx, "kill", id, owner, "status = 'dead', lease_until = 0, lease_owner = '', last_error = ?", cleanJobError(errText))
}

// ExtendJobLease renews owner's lease on a running job to lease from now.
// It returns ErrJobLost unless owner still holds the job.
func (db Jobs) ExtendJobLease(ctx context.Context, id int64, owner string, lease time.Duration) error {
	if lease <= 0 {
		return errors.New("extend job lease: lease must be positive")
	}
	return db.finishJob(ctx, "extend lease of", id, owner, "lease_until = ?", db.now()+lease.Microseconds())
}

// Jobs lists up to limit jobs (100 if limit <= 0), oldest first. An empty
// queue or status matches all.
func (db Jobs) Jobs(ctx context.Context, queue, status string, limit int) ([]Job, error) {
	if limit <= 0 {
		limit = 100
	}
	var where []string
	var args []any
	if queue != "" {
		where = append(where, "queue = ?")
		args = append(args, queue)
	}
	if status != "" {
		where = append(where, "status = CAST(? AS TEXT)") // not planned on the value (stmtcache.go)
		args = append(args, status)
	}
	query := "SELECT " + jobColumns + " FROM jobs"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	rows, err := db.read.QueryContext(ctx, db.q(query+" ORDER BY id LIMIT CAST(? AS BIGINT)"), append(args, limit)...)
	if err != nil {
		return nil, fmt.Errorf("list jobs: %w", err)
	}
	defer rows.Close()
	var out []Job
	for rows.Next() {
		j, err := scanJob(rows)
		if err != nil {
			return nil, fmt.Errorf("scan job: %w", err)
		}
		out = append(out, j)
	}
	return out, rows.Err()
}

// RequeueDeadJob gives a dead job another round of MaxAttempts attempts.
// The job is enqueued again as a new job (a new id, at the tail of its
// queue and ordering key; the younger jobs of its key ran while it was
// dead) with its payload, creation time and last error, and the dead row is
// removed. It returns ErrJobNotFound if no dead job has the id.
func (db Jobs) RequeueDeadJob(ctx context.Context, id int64) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		lock := ""
		if db.dialect == postgres {
			lock = " FOR UPDATE"
		}
		j, err := scanJob(tx.QueryRowContext(ctx, db.q("SELECT "+jobColumns+" FROM jobs WHERE id = ? AND status = 'dead'"+lock), id))
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("dead job %d: %w", id, ErrJobNotFound)
		}
		if err != nil {
			return fmt.Errorf("read dead job %d: %w", id, err)
		}
		if _, err := tx.ExecContext(ctx, db.q("DELETE FROM jobs WHERE id = ?"), id); err != nil {
			return fmt.Errorf("requeue job %d: %w", id, err)
		}
		j.RunAt = time.Time{}
		if _, err := db.insertJob(ctx, tx, j); err != nil {
			return fmt.Errorf("requeue job %d: %w", id, err)
		}
		return nil
	})
}

// cleanJobError makes an error text storable: valid UTF-8 without NUL
// (PostgreSQL TEXT refuses both), at most maxJobError bytes.
func cleanJobError(s string) string {
	if len(s) > maxJobError {
		s = s[:maxJobError]
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "")
}
