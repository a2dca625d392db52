package meta

// Claiming jobs: ClaimJob, the completion that claims the next job
// (CompleteJobClaimNext), and the sweep of jobs held behind their key.

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"
)

// ClaimJob atomically claims the oldest ready job of the queue for owner,
// for lease: a pending job whose run_at has come, or a running job whose
// lease expired (its worker died; the job is taken over). The job becomes
// running with one more attempt. It returns false when no job is ready.
// A job taken over after its last attempt (Attempts >= MaxAttempts) goes
// to the dead letter instead of running again.
//
// Jobs with a FairKey take turns by key: the oldest ready job of a key
// with no job running goes first, then that of a key with fewer than
// JobFairShare running, then the oldest of any (see claimReadyStatement).
// Fairness only chooses among the ready jobs; it holds none back.
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
	ts := db.now()
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
		ts := db.now()
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

// JobFairShare is how many running jobs of one fair key (Job.FairKey)
// the claims allow while a job of another key is ready.
const JobFairShare = 2

// jobsFairSchema adds jobs.fair_key (see Job.FairKey; empty for the jobs
// of every queue but notification deliveries) and jobs_fair, the running
// jobs of a queue by fair key and lease: the claims count a queue's
// running jobs per key in it (underShare), however long its backlog.
const jobsFairSchema = `
ALTER TABLE jobs ADD COLUMN fair_key TEXT NOT NULL DEFAULT '';
CREATE INDEX jobs_fair ON jobs(queue, fair_key, lease_until) WHERE status = 'running';
`

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

// underShare is the condition on j, a job of the queue (the first
// placeholder), that its fair key is empty or has fewer than share jobs
// of the queue running under a live lease at the time of the second. The
// keys at or over their share are found once per search, in jobs_fair
// (its status term repeats the index's predicate verbatim, see
// claimReadyStatement), from the queue's running jobs, at most one per
// worker; each job the search steps over is then only looked up in them.
func underShare(share int) string {
	return `j.fair_key NOT IN (SELECT r.fair_key FROM jobs r
		WHERE r.queue = ? AND r.status = 'running' AND r.lease_until > ? AND r.fair_key > ''
		GROUP BY r.fair_key HAVING COUNT(*) >= ` + strconv.Itoa(share) + `) AND `
}

// claimReadyStatement is ClaimJob's claim: one UPDATE that takes the
// oldest ready job of a queue (readyJob), the fair keys' turns considered.
// A job whose worker was lost on its last attempt is not run again: the
// claim moves it to the dead letter instead (a job that crashes its
// process must not crash every process in turn). The SET expressions all
// see the row as it was before the update. The status terms of the WHERE
// repeat the partial indexes' predicate verbatim, so that SQLite (which
// matches it syntactically) uses them.
//
// The job is the first found of three searches, each the oldest ready
// job of the queue with no key (Job.FairKey) or with a key that has
// running, under a live lease: none; fewer than JobFairShare; any
// number. So the workers go first to the keys that have none, then to
// those under their share, and are never idle while a job is ready: a
// tenant whose backlog is thousands of deliveries to slow receivers takes
// every worker while no one else has a job ready, and at most its share
// of those that free up once someone has. Jobs without a key (every queue
// but notification deliveries) are found by the first search, as before.
// COALESCE runs a search only when those before it found nothing. Each
// walks jobs_ready past the ready jobs of keys at their bound, only the
// front jobs of their ordering keys (one per webhook and repository):
// with one tenant's 10,000 deliveries to 100 webhooks queued and over its
// share, a claim costs up to about a millisecond more, on SQLite and on
// PostgreSQL, than with no fair key (BenchmarkFairClaimSaturated).
//
// The counts, like the ordering check, read the statement's snapshot:
// claims that commit concurrently may each count the same running jobs,
// so a key may briefly run a few more than its bound. That is all a
// stale count can do; which jobs are ready is readyJob's rule alone.
func (db *core) claimReadyStatement() string {
	lock := ""
	if db.dialect == postgres {
		lock = " FOR UPDATE SKIP LOCKED"
	}
	search := func(cond string) string {
		return `(SELECT j.id FROM jobs j WHERE ` + cond + readyJob + `
			ORDER BY j.id LIMIT 1` + lock + `)`
	}
	return db.q(`UPDATE jobs SET
			status = CASE WHEN status = 'running' AND attempts >= max_attempts THEN 'dead' ELSE 'running' END,
			attempts = CASE WHEN status = 'running' AND attempts >= max_attempts THEN attempts ELSE attempts + 1 END,
			last_error = CASE WHEN status = 'running' AND attempts >= max_attempts THEN ? ELSE last_error END,
			lease_until = ?, lease_owner = ?, updated_at = ?
		WHERE id = COALESCE(` + search(underShare(1)) + `, ` + search(underShare(JobFairShare)) + `, ` + search("") + `)
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
		errLeaseExpired, ts+lease.Microseconds(), owner, ts,
		queue, ts, queue, ts, takeover, // keys with none running
		queue, ts, queue, ts, takeover, // keys under their share
		queue, ts, takeover)) // any
	if err == nil && j.Status == JobDead {
		err = db.advanceKey(ctx, tx, j.Queue, j.OrderingKey)
		if err == nil {
			err = db.lostOnLastAttempt(ctx, tx, j)
		}
	}
	return j, err
}

// lostOnLastAttempt records, in the claim's transaction, what a job whose
// worker was lost on its last attempt leaves undone, where its handler
// would have on failing: a manifest scan is failed (else it stays queued
// for ever, and clients and gates wait on it), and announced failed in
// the scan's repository, as the scanner announces a scan that fails
// for good (manifest_scanned: receivers hear of it, gates evaluate again).
func (db *core) lostOnLastAttempt(ctx context.Context, tx *sql.Tx, j Job) error {
	if j.Queue != ScanQueue {
		return nil
	}
	var sj ScanJob
	if json.Unmarshal(j.Payload, &sj) != nil || sj.Kind != ScanJobManifest {
		return nil
	}
	reason := "the scan's last attempt did not finish: " + errLeaseExpired
	res, err := tx.ExecContext(ctx, db.q("UPDATE manifest_scans SET status = ?, reason = ?, updated_at = ? WHERE digest = ? AND status = ?"),
		ScanFailed, reason, db.now(), sj.Digest, ScanQueued)
	if err != nil {
		return fmt.Errorf("fail the lost scan: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return fmt.Errorf("fail the lost scan: %w", err)
	}
	if n == 0 || sj.Repository == "" {
		return nil // not failed here (scanned already, or failed before): nothing new to announce
	}
	tags, err := db.scanTagsIn(ctx, tx, sj.Repository, sj.Digest)
	if err != nil {
		return err
	}
	// The scanner's manifest_scanned data (scan.Service.announce) for a
	// failed scan: no report, so no packages, distribution or coverage.
	return db.appendEvent(ctx, tx, Event{Kind: EventManifestScanned, Repository: sj.Repository, Actor: scannerActor,
		Data: mustJSON(map[string]any{"digest": sj.Digest, "tags": tags, "status": ScanFailed, "reason": reason, "vulnerabilities": map[string]int{}})})
}

// scannerActor is the actor of the scanner's events (scan.Actor).
const scannerActor = "berth-scanner"

// scanTagsIn lists the tags of digest in repo, but those past their
// expiration (liveTag), in the transaction (as the scanner's
// manifest_scanned lists them: ManifestHolders).
func (db *core) scanTagsIn(ctx context.Context, tx *sql.Tx, repo, digest string) ([]string, error) {
	rows, err := tx.QueryContext(ctx, db.q(`SELECT t.name FROM tags t JOIN repositories r ON r.id = t.repository_id
		WHERE r.name = ? AND t.manifest_digest = ? AND `+liveTag("t")+` ORDER BY t.name`), repo, digest, db.now())
	if err != nil {
		return nil, fmt.Errorf("list the tags of the lost scan: %w", err)
	}
	defer rows.Close()
	tags := []string{}
	for rows.Next() {
		var t string
		if err := rows.Scan(&t); err != nil {
			return nil, fmt.Errorf("list the tags of the lost scan: %w", err)
		}
		tags = append(tags, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("list the tags of the lost scan: %w", err)
	}
	return tags, nil
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
	last, ts := v.(*atomic.Int64), db.now()
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
		ts := db.now()
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
