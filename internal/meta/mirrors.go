package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Mirror sync statuses (Quay's).
const (
	MirrorNeverRun = "NEVER_RUN"
	MirrorSyncNow  = "SYNC_NOW"
	MirrorSyncing  = "SYNCING"
	MirrorSuccess  = "SUCCESS"
	MirrorFail     = "FAIL"
	MirrorCancel   = "CANCEL"
)

// Mirror sync events (Quay's notification kinds).
const (
	EventMirrorSyncStarted = "repo_mirror_sync_started"
	EventMirrorSyncSuccess = "repo_mirror_sync_success"
	EventMirrorSyncFailed  = "repo_mirror_sync_failed"
)

// MirrorQueue is the job queue of mirror syncs; a job's ordering key is
// its repository.
const MirrorQueue = "mirror"

// MirrorRetries is the sync_retries_remaining of a fresh mirror.
const MirrorRetries = 3

// ErrMirrorNotFound is returned for a repository without a mirror.
var ErrMirrorNotFound = fmt.Errorf("mirror %w", ErrNotFound)

// repoStateMirror is the state of a mirrored repository: only a
// repository in this state is synced.
const repoStateMirror = "MIRROR"

// MirrorInactiveError is returned when a mirror would sync a repository
// that is no longer in state MIRROR (an administrator changed it to NORMAL
// or READ_ONLY, to take it over): its mirror neither syncs nor writes.
type MirrorInactiveError struct {
	Repository, State string
}

func (e *MirrorInactiveError) Error() string {
	return fmt.Sprintf("repository %s is in state %s, not MIRROR: its mirror does not sync (change its state back to MIRROR to resume)", e.Repository, e.State)
}

// mirrorRepoState reads the state of a mirror's repository in tx, locking
// its row against a concurrent state change (PostgreSQL; SQLite's one
// writer serializes them) until tx ends: ErrMirrorNotFound without a
// mirror, a *MirrorInactiveError unless the state is MIRROR.
func (db *core) mirrorRepoState(ctx context.Context, tx *sql.Tx, repo string) error {
	lock := ""
	if db.dialect == postgres {
		lock = " FOR SHARE OF r"
	}
	var state string
	err := tx.QueryRowContext(ctx, db.q(`SELECT r.state FROM repositories r JOIN repository_mirrors m ON m.repository = r.name
		WHERE r.name = ?`+lock), repo).Scan(&state)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrMirrorNotFound
	}
	if err != nil {
		return fmt.Errorf("read repository state: %w", err)
	}
	if state != repoStateMirror {
		return &MirrorInactiveError{Repository: repo, State: state}
	}
	return nil
}

// MirrorProxy is a mirror's upstream proxy settings.
type MirrorProxy struct {
	HTTPProxy  string `json:"http_proxy"`
	HTTPSProxy string `json:"https_proxy"`
	NoProxy    string `json:"no_proxy"`
}

// MirrorRule selects upstream tags: tag_glob_csv, any glob matches.
type MirrorRule struct {
	Kind  string   `json:"rule_kind"`
	Value []string `json:"rule_value"`
}

// Mirror is a repository mirror's configuration and state.
type Mirror struct {
	Repository        string
	Enabled           bool
	ExternalReference string
	Username          string
	PasswordSealed    string
	VerifyTLS         bool
	UnsignedImages    bool
	Proxy             MirrorProxy
	SyncInterval      time.Duration
	SyncStartDate     time.Time
	RootRule          MirrorRule
	RobotUsername     string
	ArchFilter        []string
	// ConfiguredBy is the ID of the account (a user, or a robot) that
	// last set the configuration through the API; 0 for none (set by no
	// account, before migration 38, or the account was deleted since). A
	// sync links a blob from another repository of the namespace only
	// where both the robot and this account may pull.
	ConfiguredBy int64
	// State, read-only for the API.
	Status           string
	RetriesRemaining int
	NextSyncAt       time.Time
	LastError        string
	CancelRequested  bool
	JobID            int64
	LastSyncAt       time.Time
}

const mirrorColumns = `repository, is_enabled, external_reference, username, password_sealed, verify_tls, unsigned_images, proxy,
	sync_interval, sync_start_date, root_rule, robot_username, architecture_filter, sync_status, sync_retries_remaining,
	next_sync_at, last_error, cancel_requested, job_id, last_sync_at, configured_by`

func scanMirror(row interface{ Scan(...any) error }) (Mirror, error) {
	var m Mirror
	var enabled, verify, unsigned, cancel int
	var proxy, rule, arch string
	var interval, start, next, last int64
	var configuredBy sql.NullInt64
	err := row.Scan(&m.Repository, &enabled, &m.ExternalReference, &m.Username, &m.PasswordSealed, &verify, &unsigned, &proxy,
		&interval, &start, &rule, &m.RobotUsername, &arch, &m.Status, &m.RetriesRemaining, &next, &m.LastError, &cancel, &m.JobID, &last,
		&configuredBy)
	if errors.Is(err, sql.ErrNoRows) {
		return Mirror{}, ErrMirrorNotFound
	}
	if err != nil {
		return Mirror{}, fmt.Errorf("read mirror: %w", err)
	}
	m.Enabled, m.VerifyTLS, m.UnsignedImages, m.CancelRequested = enabled != 0, verify != 0, unsigned != 0, cancel != 0
	m.ConfiguredBy = configuredBy.Int64
	json.Unmarshal([]byte(proxy), &m.Proxy)
	json.Unmarshal([]byte(rule), &m.RootRule)
	json.Unmarshal([]byte(arch), &m.ArchFilter)
	m.SyncInterval = time.Duration(interval) * time.Second
	m.SyncStartDate, m.NextSyncAt = fromMicros(start), fromMicros(next)
	if last != 0 {
		m.LastSyncAt = fromMicros(last)
	}
	return m, nil
}

func mirrorArgs(m Mirror) []any {
	if m.ArchFilter == nil {
		m.ArchFilter = []string{}
	}
	if m.RootRule.Value == nil {
		m.RootRule.Value = []string{}
	}
	var configuredBy any // NULL: no account
	if m.ConfiguredBy != 0 {
		configuredBy = m.ConfiguredBy
	}
	return []any{boolInt(m.Enabled), m.ExternalReference, m.Username, m.PasswordSealed, boolInt(m.VerifyTLS), boolInt(m.UnsignedImages),
		string(mustJSON(m.Proxy)), int64(m.SyncInterval / time.Second), m.SyncStartDate.UnixMicro(), string(mustJSON(m.RootRule)),
		m.RobotUsername, string(mustJSON(m.ArchFilter)), configuredBy}
}

// CreateMirror configures a repository's mirror: the first sync is due at
// its start date. The repository goes to state MIRROR, written only by the
// mirror robot, in the same transaction. ErrExists if it has a mirror;
// ErrCreatorGone if the account ConfiguredBy names was deleted.
func (db Mirrors) CreateMirror(ctx context.Context, m Mirror) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		// Not in a proxy cache organization; its row is held FOR SHARE so
		// that SetProxyCache (FOR UPDATE) sees this mirror or waits.
		ns, _, _ := strings.Cut(m.Repository, "/")
		lock := ""
		if db.dialect == postgres {
			lock = " FOR SHARE"
		}
		// Two statements: the count, after the lock, reads what a
		// SetProxyCache it waited for committed (a subquery of the locking
		// statement would read the snapshot taken before the wait).
		var nsID int64
		err := tx.QueryRowContext(ctx, db.q(`SELECT id FROM namespaces WHERE name = ?`+lock), ns).Scan(&nsID)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("look up namespace: %w", err)
		}
		var proxied int
		if err := tx.QueryRowContext(ctx, db.q(`SELECT COUNT(*) FROM proxy_caches WHERE namespace_id = ?`), nsID).Scan(&proxied); err != nil {
			return fmt.Errorf("look up proxy cache: %w", err)
		}
		if proxied > 0 {
			return fmt.Errorf("%w: %s is one", ErrProxyCacheConflict, ns)
		}
		res, err := tx.ExecContext(ctx, db.q(`UPDATE repositories SET state = ?, mirror_robot = ? WHERE name = ?`), repoStateMirror, m.RobotUsername, m.Repository)
		if err != nil {
			return fmt.Errorf("set repository state: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrRepositoryNotFound
		}
		args := append([]any{m.Repository}, mirrorArgs(m)...)
		args = append(args, MirrorNeverRun, MirrorRetries, m.SyncStartDate.UnixMicro(), db.now())
		res, err = tx.ExecContext(ctx, db.q(`INSERT INTO repository_mirrors (repository, is_enabled, external_reference, username, password_sealed,
			verify_tls, unsigned_images, proxy, sync_interval, sync_start_date, root_rule, robot_username, architecture_filter,
			configured_by, sync_status, sync_retries_remaining, next_sync_at, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (repository) DO NOTHING`), args...)
		if foreignKeyViolation(err) {
			// The repository is held by this transaction: the account
			// configuring the mirror was deleted since.
			return fmt.Errorf("mirror of %s, configured by %d: %w", m.Repository, m.ConfiguredBy, ErrCreatorGone)
		}
		if err != nil {
			return fmt.Errorf("create mirror: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return fmt.Errorf("mirror of %s %w", m.Repository, ErrExists)
		}
		return nil
	})
}

// UpdateMirror stores a mirror's configuration (not its state), and who
// configured it (ConfiguredBy); a changed start date or interval
// reschedules it. The repository's mirror robot follows robot_username.
func (db Mirrors) UpdateMirror(ctx context.Context, m Mirror, reschedule bool) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		args := append(mirrorArgs(m), m.Repository)
		res, err := tx.ExecContext(ctx, db.q(`UPDATE repository_mirrors SET is_enabled = ?, external_reference = ?, username = ?, password_sealed = ?,
			verify_tls = ?, unsigned_images = ?, proxy = ?, sync_interval = ?, sync_start_date = ?, root_rule = ?, robot_username = ?,
			architecture_filter = ?, configured_by = ? WHERE repository = ?`), args...)
		if foreignKeyViolation(err) {
			// The account configuring the mirror was deleted since.
			return fmt.Errorf("mirror of %s, configured by %d: %w", m.Repository, m.ConfiguredBy, ErrCreatorGone)
		}
		if err != nil {
			return fmt.Errorf("update mirror: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrMirrorNotFound
		}
		if reschedule {
			if _, err := tx.ExecContext(ctx, db.q(`UPDATE repository_mirrors SET next_sync_at = ? WHERE repository = ?`), m.SyncStartDate.UnixMicro(), m.Repository); err != nil {
				return fmt.Errorf("reschedule mirror: %w", err)
			}
		}
		_, err = tx.ExecContext(ctx, db.q(`UPDATE repositories SET mirror_robot = ? WHERE name = ?`), m.RobotUsername, m.Repository)
		return err
	})
}

// GetMirror returns a repository's mirror, or ErrMirrorNotFound.
func (db Mirrors) GetMirror(ctx context.Context, repo string) (Mirror, error) {
	return scanMirror(db.write.ReadRowContext(ctx, db.q("SELECT "+mirrorColumns+" FROM repository_mirrors WHERE repository = ?"), repo))
}

// MirrorSyncNow makes a mirror due at once (status SYNC_NOW unless a sync
// runs) and clears a pending cancel. A repository no longer in state
// MIRROR is not synced: *MirrorInactiveError, and nothing changes.
func (db Mirrors) MirrorSyncNow(ctx context.Context, repo string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.mirrorRepoState(ctx, tx, repo); err != nil {
			return err
		}
		// During a sync the request is remembered (sync_now_requested): its
		// finish schedules another at once, as upstream may have changed
		// after the running one read it.
		_, err := tx.ExecContext(ctx, db.q(`UPDATE repository_mirrors SET next_sync_at = ?, cancel_requested = 0,
			sync_now_requested = CASE WHEN sync_status = 'SYNCING' THEN 1 ELSE 0 END,
			sync_status = CASE WHEN sync_status = 'SYNCING' THEN sync_status ELSE 'SYNC_NOW' END WHERE repository = ?`), db.now(), repo)
		if err != nil {
			return fmt.Errorf("update mirror: %w", err)
		}
		return nil
	})
}

// MinMirrorInterval is the shortest interval between a mirror's syncs:
// the API refuses a shorter one, and a mirror stored with one before that
// floor existed is scheduled as if it had this one.
const MinMirrorInterval = time.Minute

// MirrorSyncCancel asks a running or queued sync to stop at its next safe
// point; the mirror's status is CANCEL and its next sync an interval away.
func (db Mirrors) MirrorSyncCancel(ctx context.Context, repo string) error {
	return db.execMirror(ctx, `UPDATE repository_mirrors SET cancel_requested = CASE WHEN sync_status IN ('SYNCING', 'SYNC_NOW') THEN 1 ELSE 0 END,
		sync_status = 'CANCEL', next_sync_at = ? + (CASE WHEN sync_interval < ? THEN ? ELSE sync_interval END) * 1000000 WHERE repository = ?`,
		db.now(), int64(MinMirrorInterval/time.Second), int64(MinMirrorInterval/time.Second), repo)
}

func (db *core) execMirror(ctx context.Context, stmt string, args ...any) error {
	res, err := db.write.ExecContext(ctx, db.q(stmt), args...)
	if err != nil {
		return fmt.Errorf("update mirror: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrMirrorNotFound
	}
	return nil
}

// MirrorCancelRequested reports whether a running sync of the mirror must
// stop: true if a cancel is pending or the mirror is gone, a
// *MirrorInactiveError if its repository left state MIRROR.
func (db Mirrors) MirrorCancelRequested(ctx context.Context, repo string) (bool, error) {
	var c int
	var state string
	err := db.write.ReadRowContext(ctx, db.q(`SELECT m.cancel_requested, r.state FROM repository_mirrors m JOIN repositories r ON r.name = m.repository
		WHERE m.repository = ?`), repo).Scan(&c, &state)
	if errors.Is(err, sql.ErrNoRows) {
		return true, nil // the mirror is gone: stop
	}
	if err != nil {
		return false, err
	}
	if state != repoStateMirror {
		return false, &MirrorInactiveError{Repository: repo, State: state}
	}
	return c != 0, nil
}

// EnqueueDueMirrors enqueues a sync job for every enabled mirror of a
// repository in state MIRROR that is due and has no pending or running
// job, and returns how many it enqueued. Any number of processes may call
// it: a mirror's job is recorded with a compare-and-set, so each due sync
// is enqueued once.
func (db Mirrors) EnqueueDueMirrors(ctx context.Context, at time.Time) (int, error) {
	rows, err := db.write.ReadContext(ctx, db.q(`SELECT m.repository, m.job_id FROM repository_mirrors m JOIN repositories r ON r.name = m.repository
		WHERE m.is_enabled = 1 AND m.next_sync_at <= ? AND r.state = ?
		AND NOT EXISTS (SELECT 1 FROM jobs j WHERE j.id = m.job_id AND j.status IN ('pending', 'running')) ORDER BY m.next_sync_at LIMIT 100`),
		at.UnixMicro(), repoStateMirror)
	if err != nil {
		return 0, fmt.Errorf("due mirrors: %w", err)
	}
	type due struct {
		repo string
		job  int64
	}
	var list []due
	for rows.Next() {
		var d due
		if err := rows.Scan(&d.repo, &d.job); err != nil {
			rows.Close()
			return 0, err
		}
		list = append(list, d)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return 0, err
	}
	errRaced := errors.New("raced")
	n := 0
	for _, d := range list {
		err := db.tx(ctx, func(tx *sql.Tx) error {
			id, err := db.enqueueJob(ctx, tx, Job{Queue: MirrorQueue, OrderingKey: d.repo, MaxAttempts: 1000,
				Payload: mustJSON(map[string]string{"repository": d.repo})})
			if err != nil {
				return err
			}
			res, err := tx.ExecContext(ctx, db.q("UPDATE repository_mirrors SET job_id = ? WHERE repository = ? AND job_id = ?"), id, d.repo, d.job)
			if err != nil {
				return err
			}
			if c, _ := res.RowsAffected(); c == 0 {
				return errRaced
			}
			return nil
		})
		switch {
		case errors.Is(err, errRaced):
		case err != nil:
			return n, fmt.Errorf("enqueue mirror sync of %s: %w", d.repo, err)
		default:
			n++
		}
	}
	return n, nil
}

// StartMirrorSync marks the mirror SYNCING and appends the
// repo_mirror_sync_started event with message, in one transaction. It
// returns the mirror as it was before. A repository no longer in state
// MIRROR is not synced: *MirrorInactiveError, and nothing changes. A
// mirror already SYNCING is the same sync resumed (cut short by shutdown
// or a lost lease, its job runs again): its started event was appended,
// and is not again; the sync's end closes it.
func (db Mirrors) StartMirrorSync(ctx context.Context, repo, message string) (Mirror, error) {
	var m Mirror
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.mirrorRepoState(ctx, tx, repo); err != nil {
			return err
		}
		var err error
		m, err = scanMirror(tx.QueryRowContext(ctx, db.q("SELECT "+mirrorColumns+" FROM repository_mirrors WHERE repository = ?"), repo))
		if err != nil {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.q("UPDATE repository_mirrors SET sync_status = 'SYNCING', sync_now_requested = 0 WHERE repository = ?"), repo); err != nil {
			return fmt.Errorf("start mirror sync: %w", err)
		}
		if m.Status == MirrorSyncing {
			return nil
		}
		return db.appendEvent(ctx, tx, Event{Kind: EventMirrorSyncStarted, Repository: repo, Actor: m.RobotUsername,
			Data: mustJSON(map[string]string{"message": message})})
	})
	return m, err
}

// FinishMirrorSync records a sync's outcome, status SUCCESS, FAIL or
// CANCEL, with its event (none for CANCEL: a sync cancelled before
// StartMirrorSync opened it; see CancelStartedMirrorSync), and schedules
// the next sync with Quay's retry rule: a failure retries at once while
// retries remain, decrementing them; at none it waits an interval and
// resets them. The message of a FAIL, or of a CANCEL that has one (why the
// sync stopped), is the mirror's last_error.
func (db Mirrors) FinishMirrorSync(ctx context.Context, repo, status, message string) error {
	return db.finishMirrorSync(ctx, repo, status, message, "")
}

// CancelStartedMirrorSync records the cancel of a sync StartMirrorSync
// opened, as FinishMirrorSync records a CANCEL (reason, if any, is the
// mirror's last_error), and appends the repo_mirror_sync_failed event
// that closes its repo_mirror_sync_started, with message, as Quay does: a
// started sync always ends with _success or _failed.
func (db Mirrors) CancelStartedMirrorSync(ctx context.Context, repo, reason, message string) error {
	return db.finishMirrorSync(ctx, repo, MirrorCancel, reason, message)
}

// finishMirrorSync is FinishMirrorSync; a CANCEL with a closing message
// appends repo_mirror_sync_failed with it.
func (db Mirrors) finishMirrorSync(ctx context.Context, repo, status, message, closing string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		m, err := scanMirror(tx.QueryRowContext(ctx, db.q("SELECT "+mirrorColumns+" FROM repository_mirrors WHERE repository = ?"), repo))
		if err != nil {
			return err
		}
		ts := db.now()
		// A mirror stored before intervals had a floor syncs no more often.
		interval := max(m.SyncInterval, MinMirrorInterval)
		next, retries, kind, lastErr := ts+interval.Microseconds(), MirrorRetries, EventMirrorSyncSuccess, ""
		switch status {
		case MirrorFail:
			kind, lastErr = EventMirrorSyncFailed, message
			if m.RetriesRemaining > 0 {
				next, retries = ts, m.RetriesRemaining-1
			}
		case MirrorCancel:
			kind, lastErr = "", message
			if closing != "" {
				kind, message = EventMirrorSyncFailed, closing
			}
		}
		var requested int
		if err := tx.QueryRowContext(ctx, db.q("SELECT sync_now_requested FROM repository_mirrors WHERE repository = ?"), repo).Scan(&requested); err != nil {
			return fmt.Errorf("finish mirror sync: %w", err)
		}
		if status != MirrorCancel && requested == 1 {
			// A sync-now while it ran (upstream may have changed after
			// this sync read it): sync again at once.
			next = ts
		}
		// A NUL (an upstream's binary error body) is refused by
		// PostgreSQL, in the column and in the event's JSON.
		lastErr, message = cleanJobError(lastErr), cleanJobError(message)
		if _, err := tx.ExecContext(ctx, db.q(`UPDATE repository_mirrors SET sync_status = ?, sync_retries_remaining = ?, next_sync_at = ?,
			last_error = ?, cancel_requested = 0, sync_now_requested = 0, last_sync_at = ? WHERE repository = ?`), status, retries, next, lastErr, ts, repo); err != nil {
			return fmt.Errorf("finish mirror sync: %w", err)
		}
		if kind == "" {
			return nil
		}
		return db.appendEvent(ctx, tx, Event{Kind: kind, Repository: repo, Actor: m.RobotUsername,
			Data: mustJSON(map[string]string{"message": message})})
	})
}

// DeleteMirroredTag deletes a tag as Manifests.DeleteTag does, for a sync
// of the repository's mirror: in the same transaction it checks that the
// repository is still in state MIRROR (*MirrorInactiveError if not), so a
// sync that raced a change of state never deletes a tag pushed after it.
func (db Mirrors) DeleteMirroredTag(ctx context.Context, repo, tag, actor string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.mirrorRepoState(ctx, tx, repo); err != nil {
			return err
		}
		return db.deleteTag(ctx, tx, repo, tag, actor)
	})
}
