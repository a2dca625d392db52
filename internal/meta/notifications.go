package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"
)

// Notification scopes: one repository, every repository of an
// organization, or the whole registry.
const (
	ScopeRepository   = "repository"
	ScopeOrganization = "organization"
	ScopeRegistry     = "registry"
)

// NotifyQueue is the job queue of notification deliveries.
const NotifyQueue = "notify"

// MaxNotificationFailures disables a notification: at 3 consecutive
// failed events it stops firing (Quay's rule), until it is reset, or for a
// while when the receiver's failures look temporary (see
// NotificationFailed).
const MaxNotificationFailures = 3

// NotifyTries is how many attempts make a failed event (Quay tries 5
// times); the delivery itself goes on being retried with backoff, so an
// outage of the receiver costs no event.
const NotifyTries = 5

// Notification is a configured notification.
type Notification struct {
	ID               int64
	UUID             string
	Scope            string
	Target           string // repository or organization name; "" for the registry
	Event            string
	Method           string
	Title            string
	Config           json.RawMessage // method config, secrets sealed
	EventConfig      json.RawMessage
	Format           string // quay or cloudevents
	NumberOfFailures int
	CreatedBy        string
	CreatedAt        time.Time
	// While Disabled: when the next trial delivery may go (zero: not
	// before a reset), how long the current disable lasts, and why (the
	// error of the failure that disabled it or renewed the disable).
	DisabledUntil  time.Time
	DisabledFor    time.Duration
	DisabledReason string
}

// Disabled reports whether the notification has stopped firing: its
// deliveries are held until DisabledUntil, or until a reset when that is
// zero.
func (n Notification) Disabled() bool { return n.NumberOfFailures >= MaxNotificationFailures }

// DisabledUntilReset reports whether the notification has stopped firing
// until it is reset (its receiver refused): as in Quay, it hears no events
// meanwhile, and the deliveries it had queued end undelivered.
func (n Notification) DisabledUntilReset() bool { return n.Disabled() && n.DisabledUntil.IsZero() }

// ErrNotificationNotFound is returned for an unknown notification.
var ErrNotificationNotFound = fmt.Errorf("notification %w", ErrNotFound)

const notificationColumns = "id, uuid, scope, target, event, method, title, config, event_config, format, number_of_failures, created_by, created_at, disabled_until, disabled_for, disabled_reason"

func scanNotification(row interface{ Scan(...any) error }) (Notification, error) {
	var n Notification
	var cfg, ecfg string
	var created, until, dfor int64
	if err := row.Scan(&n.ID, &n.UUID, &n.Scope, &n.Target, &n.Event, &n.Method, &n.Title, &cfg, &ecfg, &n.Format, &n.NumberOfFailures, &n.CreatedBy, &created,
		&until, &dfor, &n.DisabledReason); err != nil {
		return Notification{}, err
	}
	n.Config, n.EventConfig, n.CreatedAt = json.RawMessage(cfg), json.RawMessage(ecfg), fromMicros(created)
	if until != 0 {
		n.DisabledUntil = fromMicros(until)
	}
	n.DisabledFor = time.Duration(dfor) * time.Microsecond
	return n, nil
}

// MaxNotificationsPerScope caps the notifications of one repository, one
// organization, or the registry.
const MaxNotificationsPerScope = 100

// ErrTooManyNotifications refuses a notification past
// MaxNotificationsPerScope.
var ErrTooManyNotifications = errors.New("too many notifications")

// notificationScopeLockClass is the first key of the two-key PostgreSQL
// advisory locks that serialize the creations of notifications of one
// scope and target ("noti"), so that concurrent creations cannot both find
// room under MaxNotificationsPerScope (see jobKeyLockClass).
const notificationScopeLockClass = 0x6e6f7469

// CreateNotification stores a notification without looking at its target
// (those created through the API go through CreateNotificationForTarget).
func (db Notifications) CreateNotification(ctx context.Context, n Notification) (Notification, error) {
	return db.createNotification(ctx, n, false)
}

// CreateNotificationForTarget stores a notification whose target must
// exist: a repository-scope notification only while its repository does,
// an organization-scope one only while its organization does, checked
// (and on PostgreSQL share-locked) in the transaction that inserts it, or
// ErrRepositoryNotFound, ErrNamespaceNotFound. DeleteRepository and
// DeleteOrganization delete the target's notifications in their own
// transaction, after locking its row, so a creation racing the deletion
// either sees no target or is deleted with it: none is left behind to
// fire for a repository or organization created later under the name.
func (db Notifications) CreateNotificationForTarget(ctx context.Context, n Notification) (Notification, error) {
	return db.createNotification(ctx, n, true)
}

func (db Notifications) createNotification(ctx context.Context, n Notification, checkTarget bool) (Notification, error) {
	if n.EventConfig == nil {
		n.EventConfig = json.RawMessage("{}")
	}
	if n.Format == "" {
		n.Format = "quay"
	}
	ts := db.now()
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if db.dialect == postgres {
			// SQLite's one writer already serializes the count and the
			// insert; PostgreSQL's READ COMMITTED would let two creations
			// both count 99.
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1, hashtext($2))", notificationScopeLockClass, n.Scope+"\n"+n.Target); err != nil {
				return fmt.Errorf("create notification: lock its scope: %w", err)
			}
		}
		if checkTarget && n.Scope == ScopeRepository {
			lock := ""
			if db.dialect == postgres {
				lock = " FOR KEY SHARE" // DeleteRepository waits, or has committed; updates of the row do not
			}
			var id int64
			err := tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"+lock), n.Target).Scan(&id)
			if errors.Is(err, sql.ErrNoRows) {
				return ErrRepositoryNotFound
			}
			if err != nil {
				return fmt.Errorf("create notification: look up its repository: %w", err)
			}
		}
		if checkTarget && n.Scope == ScopeOrganization {
			// As for a repository: DeleteOrganization locks the row FOR
			// UPDATE before it deletes the organization's notifications,
			// so it waits for this creation to commit (and deletes its
			// notification), or this waits for the deletion and finds no
			// organization.
			lock := ""
			if db.dialect == postgres {
				lock = " FOR KEY SHARE"
			}
			var kind string
			err := tx.QueryRowContext(ctx, db.q("SELECT kind FROM namespaces WHERE name = ?"+lock), n.Target).Scan(&kind)
			if errors.Is(err, sql.ErrNoRows) || (err == nil && kind != NamespaceOrg) {
				return fmt.Errorf("organization %s: %w", n.Target, ErrNamespaceNotFound)
			}
			if err != nil {
				return fmt.Errorf("create notification: look up its organization: %w", err)
			}
		}
		// At most MaxNotificationsPerScope per repository, organization or
		// the registry: each delivery may hold one of the few shared
		// delivery workers for its timeout, so one scope's admins must not
		// be able to make them all wait on receivers that never answer.
		var count int
		if err := tx.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM notifications WHERE scope = ? AND target = ?"), n.Scope, n.Target).Scan(&count); err != nil {
			return fmt.Errorf("create notification: %w", err)
		}
		if count >= MaxNotificationsPerScope {
			return fmt.Errorf("%w: %s %s has %d already", ErrTooManyNotifications, n.Scope, n.Target, MaxNotificationsPerScope)
		}
		err := tx.QueryRowContext(ctx, db.q(`INSERT INTO notifications (uuid, scope, target, event, method, title, config, event_config, format, created_by, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`),
			n.UUID, n.Scope, n.Target, n.Event, n.Method, n.Title, string(n.Config), string(n.EventConfig), n.Format, n.CreatedBy, ts).Scan(&n.ID)
		if err != nil {
			return fmt.Errorf("create notification: %w", err)
		}
		return nil
	})
	if err != nil {
		return Notification{}, err
	}
	n.CreatedAt = fromMicros(ts)
	return n, nil
}

// Notifications lists the notifications of a scope and target.
func (db Notifications) Notifications(ctx context.Context, scope, target string) ([]Notification, error) {
	return db.listNotifications(ctx, "WHERE scope = ? AND target = ?", scope, target)
}

// AllNotifications lists every notification, of every scope.
func (db Notifications) AllNotifications(ctx context.Context) ([]Notification, error) {
	return db.listNotifications(ctx, "")
}

// listNotifications lists the notifications matching where, oldest first.
func (db *core) listNotifications(ctx context.Context, where string, args ...any) ([]Notification, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT "+notificationColumns+" FROM notifications "+where+" ORDER BY id"), args...)
	if err != nil {
		return nil, fmt.Errorf("list notifications: %w", err)
	}
	defer rows.Close()
	out := []Notification{}
	for rows.Next() {
		n, err := scanNotification(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	return out, rows.Err()
}

// ReplaceNotificationConfig stores config as the notification's method
// config if it is still old (compare and set) and reports whether it did.
func (db Notifications) ReplaceNotificationConfig(ctx context.Context, id int64, old, config json.RawMessage) (bool, error) {
	res, err := db.write.ExecContext(ctx, db.q("UPDATE notifications SET config = ? WHERE id = ? AND config = ?"), string(config), id, string(old))
	if err != nil {
		return false, fmt.Errorf("update notification config: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("update notification config: %w", err)
	}
	return n == 1, nil
}

// NotificationByID returns a notification by id.
func (db Notifications) NotificationByID(ctx context.Context, id int64) (Notification, error) {
	n, err := scanNotification(db.read.QueryRowContext(ctx, db.q("SELECT "+notificationColumns+" FROM notifications WHERE id = ?"), id))
	if errors.Is(err, sql.ErrNoRows) {
		return Notification{}, ErrNotificationNotFound
	}
	if err != nil {
		return Notification{}, fmt.Errorf("get notification: %w", err)
	}
	return n, nil
}

// NotificationByUUID returns a notification of a scope and target.
func (db Notifications) NotificationByUUID(ctx context.Context, scope, target, uuid string) (Notification, error) {
	n, err := scanNotification(db.read.QueryRowContext(ctx, db.q("SELECT "+notificationColumns+" FROM notifications WHERE uuid = ? AND scope = ? AND target = ?"), uuid, scope, target))
	if errors.Is(err, sql.ErrNoRows) {
		return Notification{}, ErrNotificationNotFound
	}
	if err != nil {
		return Notification{}, fmt.Errorf("get notification: %w", err)
	}
	return n, nil
}

// ErrTestDeliveryPending refuses a test delivery while an earlier one of
// the same notification is still queued or running.
var ErrTestDeliveryPending = errors.New("a test delivery of this notification is already queued or running")

// EnqueueTestDelivery queues j, a notification's test delivery, unless a
// job of its queue and ordering key (one per notification) is still live
// (pending or running): then it returns ErrTestDeliveryPending. So a
// notification has at most one test delivery under way, however often
// its admins ask: tests cannot pile up on the shared delivery workers.
func (db Notifications) EnqueueTestDelivery(ctx context.Context, j Job) (int64, error) {
	if j.OrderingKey == "" {
		return 0, errors.New("enqueue test delivery: no ordering key")
	}
	var id int64
	err := db.tx(ctx, func(tx *sql.Tx) error {
		// The key's enqueue lock (PostgreSQL; SQLite's one writer already
		// serializes): two tests at once cannot both find none live.
		if err := db.lockJobKey(ctx, tx, j.Queue, j.OrderingKey); err != nil {
			return err
		}
		var one int
		err := tx.QueryRowContext(ctx, db.q(`SELECT 1 FROM jobs WHERE queue = ? AND ordering_key = ? AND status IN ('pending', 'running') LIMIT 1`),
			j.Queue, j.OrderingKey).Scan(&one)
		switch {
		case err == nil:
			return ErrTestDeliveryPending
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("look for a live test delivery: %w", err)
		}
		id, err = db.enqueueJob(ctx, tx, j)
		return err
	})
	return id, err
}

// DeleteNotification deletes a notification; its pending deliveries are
// dropped when they run.
func (db Notifications) DeleteNotification(ctx context.Context, id int64) error {
	if _, err := db.write.ExecContext(ctx, db.q("DELETE FROM notifications WHERE id = ?"), id); err != nil {
		return fmt.Errorf("delete notification: %w", err)
	}
	return nil
}

// ResetNotificationFailures sets the failure count to 0, re-enabling a
// disabled notification, and releases its held deliveries (ReleaseJobs):
// they go at once, in order per repository.
func (db Notifications) ResetNotificationFailures(ctx context.Context, id int64) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var uuid string
		err := tx.QueryRowContext(ctx, db.q(`UPDATE notifications SET number_of_failures = 0, disabled_until = 0, disabled_for = 0, disabled_reason = ''
			WHERE id = ? RETURNING uuid`), id).Scan(&uuid)
		if errors.Is(err, sql.ErrNoRows) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reset notification: %w", err)
		}
		if _, err := db.releaseJobsTx(ctx, tx, NotifyQueue, uuid+"|"); err != nil {
			return fmt.Errorf("reset notification: %w", err)
		}
		return nil
	})
}

// NotificationFailure is a failed event (or trial delivery), for
// NotificationFailed.
type NotificationFailure struct {
	// Reason is the error of the failed attempt (no secrets in it), kept
	// as the reason of a disable.
	Reason string
	// Refused says the receiver refused the delivery for good (for HTTP, a
	// 4xx other than 408 and 429): a disable lasts until a reset.
	Refused bool
	// Trial says the failed attempt was the trial delivery of a
	// notification disabled for a while (ClaimNotificationTrial): the
	// disable is renewed for twice as long as the last one.
	Trial bool
	// DisableFor is how long a notification is first disabled for (zero
	// or less: until reset), MaxDisableFor the longest disable.
	DisableFor, MaxDisableFor time.Duration
}

// NotificationFailed counts a failed event and returns the notification as
// it now is. Reaching MaxNotificationFailures disables it: until reset if
// f.Refused or f.DisableFor is not positive (see DisabledUntilReset),
// otherwise for f.DisableFor, after which one trial delivery goes
// (ClaimNotificationTrial); a trial that fails renews the disable, each
// time twice as long, up to f.MaxDisableFor. The failure of a delivery that was under way when
// another disabled the notification is counted without changing the
// disable (unless refused), so that streams failing together do not
// stretch it.
func (db Notifications) NotificationFailed(ctx context.Context, id int64, f NotificationFailure) (Notification, error) {
	var out Notification
	err := db.tx(ctx, func(tx *sql.Tx) error {
		lock := ""
		if db.dialect == postgres {
			lock = " FOR UPDATE"
		}
		n, err := scanNotification(tx.QueryRowContext(ctx, db.q("SELECT "+notificationColumns+" FROM notifications WHERE id = ?"+lock), id))
		if errors.Is(err, sql.ErrNoRows) {
			return ErrNotificationNotFound
		}
		if err != nil {
			return fmt.Errorf("count notification failure: %w", err)
		}
		was := n.Disabled()
		n.NumberOfFailures++
		if n.Disabled() {
			var dfor time.Duration
			switch {
			case f.Refused || f.DisableFor <= 0:
				// until reset
			case !was:
				dfor = f.DisableFor
			case f.Trial && !n.DisabledUntil.IsZero():
				dfor = max(n.DisabledFor*2, f.DisableFor)
				if f.MaxDisableFor > 0 {
					dfor = min(dfor, f.MaxDisableFor)
				}
			default:
				dfor = -1 // keep the disable as it is
			}
			if dfor >= 0 {
				n.DisabledFor, n.DisabledUntil, n.DisabledReason = dfor, time.Time{}, f.Reason
				if dfor > 0 {
					n.DisabledUntil = fromMicros(db.now() + dfor.Microseconds())
				}
			}
		}
		var until int64
		if !n.DisabledUntil.IsZero() {
			until = n.DisabledUntil.UnixMicro()
		}
		if _, err := tx.ExecContext(ctx, db.q("UPDATE notifications SET number_of_failures = ?, disabled_until = ?, disabled_for = ?, disabled_reason = ? WHERE id = ?"),
			n.NumberOfFailures, until, n.DisabledFor.Microseconds(), cleanJobError(n.DisabledReason), id); err != nil {
			return fmt.Errorf("count notification failure: %w", err)
		}
		out = n
		return nil
	})
	return out, err
}

// ClaimNotificationTrial lets one delivery of a notification disabled for
// a while try its receiver once the disable has run out: if the
// notification is still disabled until seen (the DisabledUntil its caller
// read), its DisabledUntil becomes until, which holds the other
// deliveries while the trial runs, and it reports true. A trial that
// succeeds re-enables the notification (RecordAttempt); one that fails
// renews the disable (NotificationFailed).
func (db Notifications) ClaimNotificationTrial(ctx context.Context, id int64, seen, until time.Time) (bool, error) {
	if seen.IsZero() {
		return false, nil // disabled until reset: no trial
	}
	res, err := db.write.ExecContext(ctx, db.q("UPDATE notifications SET disabled_until = ? WHERE id = ? AND disabled_until = ? AND number_of_failures >= ?"),
		until.UnixMicro(), id, seen.UnixMicro(), MaxNotificationFailures)
	if err != nil {
		return false, fmt.Errorf("claim notification trial: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("claim notification trial: %w", err)
	}
	return n == 1, nil
}

// Attempt is one delivery attempt, kept so operators can see why a
// receiver missed something.
type Attempt struct {
	ID             int64     `json:"id"`
	NotificationID int64     `json:"-"`
	EventUUID      string    `json:"event_id"`
	JobID          int64     `json:"-"`
	Attempt        int       `json:"attempt"`
	StatusCode     int       `json:"status_code"`
	LatencyMS      int64     `json:"latency_ms"`
	Error          string    `json:"error"`
	AttemptedAt    time.Time `json:"attempted_at"`
}

// RecordAttempt stores a delivery attempt, its error cleaned as a job's is
// (it carries the receiver's text, its status line: a NUL or invalid
// UTF-8, which PostgreSQL refuses, is dropped or replaced, and the length
// bounded). With reset (a delivery of an
// event that succeeded; not a test delivery, which leaves the count alone
// as in Quay) it also resets the notification's failure count in the same
// transaction; if it was disabled, that re-enables it and releases its
// held deliveries, as ResetNotificationFailures does. The attempt of a
// notification deleted meanwhile is not stored, and is no error.
func (db Notifications) RecordAttempt(ctx context.Context, a Attempt, reset bool) error {
	return db.tx(ctx, func(tx *sql.Tx) error { return db.RecordAttemptIn(ctx, Tx{tx}, a, reset) })
}

// RecordAttemptIn is RecordAttempt in tx: the transaction that completes
// the delivery's job (jobs.OnComplete), which must not fail because the
// notification was deleted while its delivery was under way.
func (db Notifications) RecordAttemptIn(ctx context.Context, t Tx, a Attempt, reset bool) error {
	tx := t.tx
	lock := ""
	if db.dialect == postgres {
		// Waits for a deletion under way: once it commits, the row is
		// gone and nothing is inserted (rather than the foreign key
		// failing the transaction).
		lock = " FOR KEY SHARE"
	}
	if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO notification_attempts (notification_id, event_uuid, job_id, attempt, status_code, latency_ms, error, attempted_at)
		SELECT id, ?, CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), CAST(? AS BIGINT), ?, CAST(? AS BIGINT) FROM notifications WHERE id = ?`+lock),
		a.EventUUID, a.JobID, a.Attempt, a.StatusCode, a.LatencyMS, cleanJobError(a.Error), db.now(), a.NotificationID); err != nil {
		return fmt.Errorf("record attempt: %w", err)
	}
	if !reset {
		return nil
	}
	var uuid string
	err := tx.QueryRowContext(ctx, db.q(`UPDATE notifications SET number_of_failures = 0, disabled_until = 0, disabled_for = 0, disabled_reason = ''
		WHERE id = ? AND number_of_failures >= ? RETURNING uuid`), a.NotificationID, MaxNotificationFailures).Scan(&uuid)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		if _, err := tx.ExecContext(ctx, db.q("UPDATE notifications SET number_of_failures = 0 WHERE id = ? AND number_of_failures > 0"), a.NotificationID); err != nil {
			return fmt.Errorf("reset failures: %w", err)
		}
	case err != nil:
		return fmt.Errorf("reset failures: %w", err)
	default:
		if _, err := db.releaseJobsTx(ctx, tx, NotifyQueue, uuid+"|"); err != nil {
			return fmt.Errorf("re-enable notification: %w", err)
		}
	}
	return nil
}

// Attempts lists a notification's attempts, newest first.
func (db Notifications) Attempts(ctx context.Context, notificationID int64, n int) ([]Attempt, error) {
	return db.AttemptsBefore(ctx, notificationID, 0, n)
}

// AttemptsBefore lists at most n of a notification's attempts whose id is
// below before (all of them if before is 0 or less), newest first: a page
// that continues before the last attempt of the previous one.
func (db Notifications) AttemptsBefore(ctx context.Context, notificationID, before int64, n int) ([]Attempt, error) {
	if before <= 0 {
		before = math.MaxInt64
	}
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT id, event_uuid, job_id, attempt, status_code, latency_ms, error, attempted_at
		FROM notification_attempts WHERE notification_id = ? AND id < ? ORDER BY id DESC LIMIT CAST(? AS BIGINT)`), notificationID, before, n)
	if err != nil {
		return nil, fmt.Errorf("list attempts: %w", err)
	}
	defer rows.Close()
	out := []Attempt{}
	for rows.Next() {
		a := Attempt{NotificationID: notificationID}
		var at int64
		if err := rows.Scan(&a.ID, &a.EventUUID, &a.JobID, &a.Attempt, &a.StatusCode, &a.LatencyMS, &a.Error, &at); err != nil {
			return nil, err
		}
		a.AttemptedAt = fromMicros(at)
		out = append(out, a)
	}
	return out, rows.Err()
}

// DeliveryJob is the payload of a notification delivery job.
type DeliveryJob struct {
	NotificationID int64  `json:"notification_id"`
	EventID        int64  `json:"event_id,omitempty"`
	Sample         bool   `json:"sample,omitempty"` // the notification's "test"
	Repository     string `json:"repository,omitempty"`
}

// Listening returns, read in tx, the notifications of an event kind that
// hear the events of a repository in a namespace: the repository's own,
// the namespace's (organization scope) and the registry-wide ones,
// disabled or not (notify's subscriber skips those disabled until reset),
// oldest first.
func (db Notifications) Listening(ctx context.Context, tx Tx, kind, repository, namespace string) ([]Notification, error) {
	rows, err := tx.tx.QueryContext(ctx, db.q(`SELECT `+notificationColumns+` FROM notifications WHERE event = ?
		AND ((scope = 'repository' AND target = ?) OR (scope = 'organization' AND target = ?) OR scope = 'registry') ORDER BY id`),
		kind, repository, namespace)
	if err != nil {
		return nil, fmt.Errorf("match notifications: %w", err)
	}
	defer rows.Close()
	var out []Notification
	for rows.Next() {
		n, err := scanNotification(rows)
		if err != nil {
			return nil, fmt.Errorf("match notifications: %w", err)
		}
		out = append(out, n)
	}
	return out, rows.Err()
}
