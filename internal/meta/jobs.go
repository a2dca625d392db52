package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
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
// same non-empty OrderingKey run one at a time, in enqueue order.
type Job struct {
	ID          int64
	Queue       string
	OrderingKey string
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
	ts := now()
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
	err := tx.QueryRowContext(ctx, db.q(`INSERT INTO jobs (queue, ordering_key, payload, status, attempts, max_attempts, run_at, last_error, created_at, updated_at, behind)
		VALUES (?, ?, ?, 'pending', 0, ?, ?, ?, ?, ?, CASE WHEN ? <> '' AND EXISTS (
			SELECT 1 FROM jobs o WHERE o.queue = ? AND o.ordering_key = ? AND o.status IN ('pending', 'running')) THEN 1 ELSE 0 END)
		RETURNING id`),
		j.Queue, j.OrderingKey, string(j.Payload), j.MaxAttempts, runAt, cleanJobError(j.LastError), created, ts,
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

const jobColumns = "id, queue, ordering_key, payload, status, attempts, max_attempts, run_at, last_error, created_at"

func scanJob(row interface{ Scan(...any) error }) (Job, error) {
	var j Job
	var payload string
	var runAt, created int64
	if err := row.Scan(&j.ID, &j.Queue, &j.OrderingKey, &payload, &j.Status, &j.Attempts, &j.MaxAttempts, &runAt, &j.LastError, &created); err != nil {
		return Job{}, err
	}
	j.Payload = json.RawMessage(payload)
	j.RunAt = fromMicros(runAt)
	j.CreatedAt = fromMicros(created)
	return j, nil
}

// ClaimJob atomically claims the oldest ready job of the queue for owner,
// for lease: a pending job whose run_at has come, or a running job whose
// lease expired (its worker died; the job is taken over). The job becomes
// running with one more attempt. It returns false when no job is ready.
// A job taken over after its last attempt (Attempts >= MaxAttempts) goes
// to the dead letter instead of running again.
//
// A job with an OrderingKey is ready only while no older job (smaller id)
// of its queue and key is pending or running: the jobs of a key run one at
// a time, in id order, and a retried job holds back the younger jobs of its
// key until it is done or dead.
//
// Why no two jobs of a key can run at once, with any number of processes:
//   - On PostgreSQL the candidate is locked FOR UPDATE SKIP LOCKED, so two
//     claimers never take the same row; a row that a claim committed after
//     this statement's snapshot changed is re-checked against its new
//     version (running, lease live: rejected).
//   - The ordering check reads the other jobs of the key from the
//     statement's snapshot, without locks. That is safe because the check
//     is monotonic: an existing older job only ever goes from live
//     (pending, running) to finished (done, dead), never back (a retry stays
//     pending, a takeover stays running, a requeued dead job becomes a new,
//     youngest job); and an older job of a key cannot commit after a younger
//     one, because enqueues of a key are serialized (enqueueJob). So a
//     stale snapshot can only block a job wrongly, never release one: job N
//     of a key is ready only once every older job of the key finished for
//     good, and then no other job of the key is claimable until N finishes.
//   - On SQLite the claim is one write statement, and writes are
//     serialized, across processes too.
//   - CompleteJobClaimNext hands a key on from one job to the next without
//     the key ever being free: see there.
func (db Jobs) ClaimJob(ctx context.Context, queue, owner string, lease time.Duration) (Job, bool, error) {
	if owner == "" || lease <= 0 {
		return Job{}, false, errors.New("claim job: owner and a positive lease are required")
	}
	// A read first, without locks: a poll that finds no job ready must not
	// take the write lock (SQLite has one writer, and pushes need it). Not
	// only an empty queue: a queue whose live jobs all wait, for their
	// run_at or behind an older job of their key (a webhook's backlog
	// while one worker chains through it), is polled by every idle worker
	// at every wake-up. The read may miss a job committed since; the
	// commit's wake-up or the next poll finds it.
	var ready int
	ts := now()
	err := db.read.QueryRowContext(ctx, db.q(claimPoll), queue, ts, ts).Scan(&ready)
	if errors.Is(err, sql.ErrNoRows) {
		n, serr := db.sweepBehind(ctx, queue)
		if serr != nil || n == 0 {
			return Job{}, false, serr
		}
		err = nil // jobs came out from behind: claim
	}
	if err != nil {
		return Job{}, false, fmt.Errorf("claim job: %w", err)
	}
	query := db.claimReadyStatement()
	for range 16 {
		ts := now()
		var j Job
		err := db.laxTx(ctx, func(tx *sql.Tx) error {
			var err error
			j, err = db.claimReady(ctx, tx, query, queue, owner, ts, ts, lease)
			return err
		})
		if errors.Is(err, sql.ErrNoRows) {
			return Job{}, false, nil
		}
		if err != nil {
			return Job{}, false, fmt.Errorf("claim %s job: %w", queue, err)
		}
		if j.Status == JobRunning {
			return j, true, nil
		}
	}
	return Job{}, false, nil // many dead-lettered in a row: look again at the next poll
}

// readyJob is the condition on j, a job of the queue (the first
// placeholder), that ClaimJob may claim at the time of the other two: a
// pending job whose run_at has come or a running one whose lease expired,
// with no older live job of its key. The NOT EXISTS is the rule; behind
// = 0 says the same (jobsBehindSchema) and keeps the walk of jobs_ready
// to the jobs at the front of their key.
const readyJob = `j.queue = ? AND j.status IN ('pending', 'running') AND j.behind = 0
	AND ((j.status = 'pending' AND j.run_at <= ?) OR (j.status = 'running' AND j.lease_until <= ?))
	AND (j.ordering_key = '' OR NOT EXISTS (
		SELECT 1 FROM jobs o
		WHERE o.queue = j.queue AND o.ordering_key = j.ordering_key AND o.status IN ('pending', 'running')
		AND o.id < j.id))`

// claimReadyStatement is ClaimJob's claim: one UPDATE that takes the
// oldest ready job of a queue (readyJob). A job whose worker was lost on
// its last attempt is not run again: the claim moves it to the dead
// letter instead (a job that crashes its process must not crash every
// process in turn). The SET expressions all see the row as it was before
// the update. The status terms of the WHERE repeat the partial indexes'
// predicate verbatim, so that SQLite (which matches it syntactically)
// uses them.
func (db *core) claimReadyStatement() string {
	lock := ""
	if db.dialect == postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	return db.q(`UPDATE jobs SET
			status = CASE WHEN status = 'running' AND attempts >= max_attempts THEN 'dead' ELSE 'running' END,
			attempts = CASE WHEN status = 'running' AND attempts >= max_attempts THEN attempts ELSE attempts + 1 END,
			last_error = CASE WHEN status = 'running' AND attempts >= max_attempts THEN ? ELSE last_error END,
			lease_until = ?, lease_owner = ?, updated_at = ?
		WHERE id = (
			SELECT j.id FROM jobs j WHERE ` + readyJob + `
			ORDER BY j.id LIMIT 1` + lock + `)
		RETURNING ` + jobColumns)
}

// claimReady runs query (claimReadyStatement) in tx at ts: the job it
// claimed, running, or the one it moved to the dead letter, whose key it
// then advances (advanceKey); sql.ErrNoRows when no job was ready.
// Running jobs whose lease ended at or before takeover are taken over; a
// negative takeover takes over none (ExpireLeasesOf leaves leases at 0):
// only pending jobs are claimed then, and none is dead-lettered.
func (db *core) claimReady(ctx context.Context, tx *sql.Tx, query, queue, owner string, ts, takeover int64, lease time.Duration) (Job, error) {
	j, err := scanJob(tx.QueryRowContext(ctx, query,
		errLeaseExpired, ts+lease.Microseconds(), owner, ts, queue, ts, takeover))
	if err == nil && j.Status == JobDead {
		err = db.advanceKey(ctx, tx, j.Queue, j.OrderingKey)
	}
	return j, err
}

// behindSweepEvery is how often an idle queue is checked for jobs marked
// behind that no older live job holds back (sweepBehind).
const behindSweepEvery = time.Minute

// sweepBehind, at most once every behindSweepEvery per queue and process,
// puts in front the live jobs of the queue marked behind although no
// older job of their key is live, and returns how many. The transactions
// that end a job keep the marks; a job ended by a binary older than the
// mark (a replica still running during a rolling upgrade) does not, and
// without this its key's next job would never be claimed. Only a read
// runs when nothing is wrong. Clearing a mark needs no lock: a job older
// than one that has none live cannot appear (enqueues of a key are
// serialized), and the claim still checks the rule itself.
func (db *core) sweepBehind(ctx context.Context, queue string) (int64, error) {
	v, _ := db.behindSwept.LoadOrStore(queue, new(atomic.Int64))
	last, ts := v.(*atomic.Int64), now()
	if prev := last.Load(); ts-prev < behindSweepEvery.Microseconds() || !last.CompareAndSwap(prev, ts) {
		return 0, nil
	}
	const stray = `status IN ('pending', 'running') AND behind = 1 AND NOT EXISTS (
		SELECT 1 FROM jobs o WHERE o.queue = jobs.queue AND o.ordering_key = jobs.ordering_key
		AND o.status IN ('pending', 'running') AND o.id < jobs.id)`
	var one int
	err := db.read.QueryRowContext(ctx, db.q("SELECT 1 FROM jobs WHERE queue = ? AND "+stray+" LIMIT 1"), queue).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("look for %s jobs held behind nothing: %w", queue, err)
	}
	res, err := db.laxExec(ctx, db.q("UPDATE jobs SET behind = 0 WHERE queue = ? AND "+stray), queue)
	if err != nil {
		return 0, fmt.Errorf("put in front the %s jobs held behind nothing: %w", queue, err)
	}
	return res.RowsAffected()
}

// claimPoll is ClaimJob's read: whether a job of the queue is ready. Its
// ORDER BY makes SQLite walk jobs_ready, as the claim does; without it,
// SQLite picks jobs_status, which holds the jobs behind their key too.
const claimPoll = "SELECT 1 FROM jobs j WHERE " + readyJob + " ORDER BY j.id LIMIT 1"

// errLeaseExpired is the last_error of a job dead-lettered by ClaimJob.
const errLeaseExpired = "lease expired during the last attempt: the worker stopped or hung"

// finishJob applies set to a job that owner still holds.
func (db *core) finishJob(ctx context.Context, what string, id int64, owner, set string, args ...any) error {
	args = append(args, now(), id, owner)
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
	args = append(args, now(), id, owner)
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

// CompleteJobClaimNext marks a job done and, in the same transaction,
// claims for nextOwner, for lease, the next job of its queue: the next job
// of its ordering key (the oldest pending or running job of the key, if it
// is pending and its run_at has come); failing that (the job has no key,
// or the key's next job is not ready), the oldest pending job of the queue
// that ClaimJob would claim. It runs with one more attempt, as after
// ClaimJob. The job returned is the one claimed; false means none was
// ready (or nextOwner is empty: then it only completes), and the key's
// next job is then left to ClaimJob, at the front of its key (advanceKey).
// Running jobs whose lease expired are left to ClaimJob too, which takes
// them over or dead-letters them. It returns ErrJobLost, and completes
// nothing, unless owner still holds the job.
//
// The functions also run first, in the same transaction: what the job's
// handler records about its outcome (a delivery attempt) commits with the
// completion, in one write. An error of theirs rolls everything back.
//
// A worker that finished a job runs the next one at once (internal/jobs):
// one write instead of a complete and a claim (and the handler's own
// record, and the claim's read of the queue), and no wait for a poll or a
// wake-up between the deliveries of one webhook or the scans of a busy
// registry.
//
// It keeps ClaimJob's invariant (the jobs of a key run one at a time, in
// id order): the completed job was the only running job of its key, and
// every older job of the key had finished (ClaimJob claimed it only then,
// or a chain did, by the same rule). The job of the key claimed is the
// oldest live one of the key, so no older job of the key is pending or
// running, exactly ClaimJob's condition; a job of the key that commits
// later has a larger id (enqueues of a key are serialized). Completing and
// claiming commit together, so no claimer ever sees the key free between
// the two: one that reads before the commit sees the completed job still
// running and holds the key's younger jobs back, one that reads after it
// sees the next job running. On PostgreSQL the next job is locked FOR
// UPDATE SKIP LOCKED: only the oldest live job of the key is a candidate,
// so a lock held elsewhere (ReleaseJobs changing its run_at) makes the
// key's chain stop rather than skip to a younger job or wait (the claim
// of the queue's oldest job then cannot take a younger job of that key
// either: the older one is still live). No claimer can hold that lock:
// the job becomes ClaimJob's candidate only once its claimer sees the
// completed job done, after this commit. The claim of the queue's oldest
// job is ClaimJob's own statement (claimReadyStatement), with its
// reasoning, and takes no key's lock.
func (db Jobs) CompleteJobClaimNext(ctx context.Context, id int64, owner, nextOwner string, lease time.Duration, also ...func(context.Context, Tx) error) (Job, bool, error) {
	if nextOwner != "" && lease <= 0 {
		return Job{}, false, errors.New("complete and claim next job: the lease must be positive")
	}
	lock := ""
	if db.dialect == postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	// The status terms repeat the partial indexes' predicate verbatim, so
	// that SQLite uses them (see ClaimJob).
	claimNext := db.q(`UPDATE jobs SET status = 'running', attempts = attempts + 1,
			lease_until = ?, lease_owner = ?, updated_at = ?, behind = 0
		WHERE id = (
			SELECT j.id FROM jobs j
			WHERE j.id = (
				SELECT o.id FROM jobs o
				WHERE o.queue = ? AND o.ordering_key = ? AND o.status IN ('pending', 'running')
				ORDER BY o.id LIMIT 1)
			AND j.status = 'pending' AND j.run_at <= ?` + lock + `)
		RETURNING ` + jobColumns)
	var next Job
	var ok bool
	// A job's outcome is bookkeeping (laxTx): if a power cut loses it,
	// the job runs again, and the claim of the next one is lost with it.
	err := db.laxTx(ctx, func(tx *sql.Tx) error {
		next, ok = Job{}, false
		for _, fn := range also {
			if err := fn(ctx, Tx{tx}); err != nil {
				return err
			}
		}
		ts := now()
		var queue, key string
		err := tx.QueryRowContext(ctx, db.q(`UPDATE jobs SET status = 'done', lease_until = 0, lease_owner = '', updated_at = ?
			WHERE id = ? AND lease_owner = ? AND status = 'running' RETURNING queue, ordering_key`), ts, id, owner).Scan(&queue, &key)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("complete job %d: %w", id, ErrJobLost)
		}
		if err != nil {
			return fmt.Errorf("complete job %d: %w", id, err)
		}
		if key != "" {
			// The key's enqueue lock first, as advanceKey takes it; then
			// its next job is claimed, or else put at the front for
			// ClaimJob.
			if err := db.lockJobKey(ctx, tx, queue, key); err != nil {
				return err
			}
			if nextOwner != "" {
				next, err = scanJob(tx.QueryRowContext(ctx, claimNext, ts+lease.Microseconds(), nextOwner, ts, queue, key, ts))
				if err == nil {
					ok = true
					return nil
				}
				if !errors.Is(err, sql.ErrNoRows) {
					return fmt.Errorf("claim next %s job of key %q: %w", queue, key, err)
				}
			}
			if err := db.frontOfKey(ctx, tx, queue, key); err != nil {
				return err
			}
		}
		if nextOwner == "" {
			return nil
		}
		// Pending jobs only (no takeover), so nothing is dead-lettered
		// here and no other key's lock is taken.
		j, err := db.claimReady(ctx, tx, db.claimReadyStatement(), queue, nextOwner, ts, -1, lease)
		switch {
		case errors.Is(err, sql.ErrNoRows):
			return nil
		case err != nil:
			return fmt.Errorf("claim next %s job: %w", queue, err)
		case j.Status != JobRunning:
			return fmt.Errorf("claim next %s job: job %d is %s, not running", queue, j.ID, j.Status)
		}
		next, ok = j, true
		return nil
	})
	if err != nil {
		return Job{}, false, err
	}
	return next, ok, nil
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
		releasedRunAt, now(), runAt.UnixMicro(), cleanJobError(errText))
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
		releasedRunAt, now(), runAt.UnixMicro(), cleanJobError(reason))
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
	ts := now()
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
// as it would after the leases ran out. It returns how many it ended.
func (db Jobs) ExpireLeasesOf(ctx context.Context, ownerPrefix string) (int64, error) {
	if ownerPrefix == "" {
		return 0, errors.New("expire job leases: an owner prefix is required")
	}
	res, err := db.write.ExecContext(ctx, db.q(`UPDATE jobs SET lease_until = 0, updated_at = ?
		WHERE status = 'running' AND substr(lease_owner, 1, ?) = ?`), now(), utf8.RuneCountInString(ownerPrefix), ownerPrefix)
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
	return db.finishJob(ctx, "extend lease of", id, owner, "lease_until = ?", now()+lease.Microseconds())
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
		where = append(where, "status = ?")
		args = append(args, status)
	}
	query := "SELECT " + jobColumns + " FROM jobs"
	if len(where) > 0 {
		query += " WHERE " + strings.Join(where, " AND ")
	}
	rows, err := db.read.QueryContext(ctx, db.q(query+" ORDER BY id LIMIT ?"), append(args, limit)...)
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
