package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
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

// MaxNotificationFailures disables a notification (Quay's rule: it stops
// firing after 3 consecutive failed events, until reset).
const MaxNotificationFailures = 3

// NotifyTries is how many attempts make a failed event (Quay tries 5
// times); the delivery itself goes on being retried with backoff, so an
// outage of the receiver costs no event.
const NotifyTries = 5

// notifyMaxAttempts bounds the retries of one delivery: with backoff capped
// at 5 minutes, days.
const notifyMaxAttempts = 1000

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
}

// ErrNotificationNotFound is returned for an unknown notification.
var ErrNotificationNotFound = fmt.Errorf("notification %w", ErrNotFound)

const notificationColumns = "id, uuid, scope, target, event, method, title, config, event_config, format, number_of_failures, created_by, created_at"

func scanNotification(row interface{ Scan(...any) error }) (Notification, error) {
	var n Notification
	var cfg, ecfg string
	var created int64
	if err := row.Scan(&n.ID, &n.UUID, &n.Scope, &n.Target, &n.Event, &n.Method, &n.Title, &cfg, &ecfg, &n.Format, &n.NumberOfFailures, &n.CreatedBy, &created); err != nil {
		return Notification{}, err
	}
	n.Config, n.EventConfig, n.CreatedAt = json.RawMessage(cfg), json.RawMessage(ecfg), fromMicros(created)
	return n, nil
}

// CreateNotification stores a notification.
func (db *DB) CreateNotification(ctx context.Context, n Notification) (Notification, error) {
	if n.EventConfig == nil {
		n.EventConfig = json.RawMessage("{}")
	}
	if n.Format == "" {
		n.Format = "quay"
	}
	ts := now()
	err := db.write.QueryRowContext(ctx, db.q(`INSERT INTO notifications (uuid, scope, target, event, method, title, config, event_config, format, created_by, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING id`), n.UUID, n.Scope, n.Target, n.Event, n.Method, n.Title,
		string(n.Config), string(n.EventConfig), n.Format, n.CreatedBy, ts).Scan(&n.ID)
	if err != nil {
		return Notification{}, fmt.Errorf("create notification: %w", err)
	}
	n.CreatedAt = fromMicros(ts)
	return n, nil
}

// Notifications lists the notifications of a scope and target.
func (db *DB) Notifications(ctx context.Context, scope, target string) ([]Notification, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT "+notificationColumns+" FROM notifications WHERE scope = ? AND target = ? ORDER BY id"), scope, target)
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

// NotificationByID returns a notification by id.
func (db *DB) NotificationByID(ctx context.Context, id int64) (Notification, error) {
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
func (db *DB) NotificationByUUID(ctx context.Context, scope, target, uuid string) (Notification, error) {
	n, err := scanNotification(db.read.QueryRowContext(ctx, db.q("SELECT "+notificationColumns+" FROM notifications WHERE uuid = ? AND scope = ? AND target = ?"), uuid, scope, target))
	if errors.Is(err, sql.ErrNoRows) {
		return Notification{}, ErrNotificationNotFound
	}
	if err != nil {
		return Notification{}, fmt.Errorf("get notification: %w", err)
	}
	return n, nil
}

// DeleteNotification deletes a notification; its pending deliveries are
// dropped when they run.
func (db *DB) DeleteNotification(ctx context.Context, id int64) error {
	if _, err := db.write.ExecContext(ctx, db.q("DELETE FROM notifications WHERE id = ?"), id); err != nil {
		return fmt.Errorf("delete notification: %w", err)
	}
	return nil
}

// ResetNotificationFailures sets the failure count to 0 (re-enabling it).
func (db *DB) ResetNotificationFailures(ctx context.Context, id int64) error {
	if _, err := db.write.ExecContext(ctx, db.q("UPDATE notifications SET number_of_failures = 0 WHERE id = ?"), id); err != nil {
		return fmt.Errorf("reset notification: %w", err)
	}
	return nil
}

// NotificationFailed counts a failed event (all retries exhausted) and
// returns the new count.
func (db *DB) NotificationFailed(ctx context.Context, id int64) (int, error) {
	var n int
	err := db.write.QueryRowContext(ctx, db.q("UPDATE notifications SET number_of_failures = number_of_failures + 1 WHERE id = ? RETURNING number_of_failures"), id).Scan(&n)
	if err != nil {
		return 0, fmt.Errorf("count notification failure: %w", err)
	}
	return n, nil
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

// RecordAttempt stores a delivery attempt; a success resets the
// notification's failure count in the same transaction.
func (db *DB) RecordAttempt(ctx context.Context, a Attempt, success bool) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO notification_attempts (notification_id, event_uuid, job_id, attempt, status_code, latency_ms, error, attempted_at)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?)`), a.NotificationID, a.EventUUID, a.JobID, a.Attempt, a.StatusCode, a.LatencyMS, a.Error, now()); err != nil {
			return fmt.Errorf("record attempt: %w", err)
		}
		if success {
			if _, err := tx.ExecContext(ctx, db.q("UPDATE notifications SET number_of_failures = 0 WHERE id = ?"), a.NotificationID); err != nil {
				return fmt.Errorf("reset failures: %w", err)
			}
		}
		return nil
	})
}

// Attempts lists a notification's attempts, newest first.
func (db *DB) Attempts(ctx context.Context, notificationID int64, n int) ([]Attempt, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT id, event_uuid, job_id, attempt, status_code, latency_ms, error, attempted_at
		FROM notification_attempts WHERE notification_id = ? ORDER BY id DESC LIMIT ?`), notificationID, n)
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

// EventByID returns an outbox event.
func (db *DB) EventByID(ctx context.Context, id int64) (Event, error) {
	var e Event
	var payload string
	var created int64
	err := db.read.QueryRowContext(ctx, db.q("SELECT id, uuid, kind, repository, actor, payload, created_at FROM events WHERE id = ?"), id).
		Scan(&e.ID, &e.UUID, &e.Kind, &e.Repository, &e.Actor, &payload, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return Event{}, fmt.Errorf("event %w", ErrNotFound)
	}
	if err != nil {
		return Event{}, fmt.Errorf("get event: %w", err)
	}
	e.Data, e.CreatedAt = json.RawMessage(payload), fromMicros(created)
	return e, nil
}

// DeliveryJob is the payload of a notification delivery job.
type DeliveryJob struct {
	NotificationID int64  `json:"notification_id"`
	EventID        int64  `json:"event_id,omitempty"`
	Sample         bool   `json:"sample,omitempty"` // the notification's "test"
	Repository     string `json:"repository,omitempty"`
}

// fanOutLockID serializes fan-out across processes on PostgreSQL, so jobs
// of one stream are enqueued in event order.
const fanOutLockID = migrationLockID + 3

// FanOutEvents turns up to n undispatched outbox events into delivery
// jobs for the notifications that match them (the repository's, its
// organization's, and registry-wide ones, of the event's kind, not
// disabled), marking the events dispatched in the same transaction. Each
// event is fanned out exactly once, whatever the number of processes. It
// returns how many events it handled.
func (db *DB) FanOutEvents(ctx context.Context, n int) (int, error) {
	// A read first: an idle poll must not take the write lock (SQLite has
	// one writer, and pushes need it).
	var pending int
	err := db.read.QueryRowContext(ctx, "SELECT 1 FROM events WHERE dispatched = 0 LIMIT 1").Scan(&pending)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	if err != nil {
		return 0, fmt.Errorf("read outbox: %w", err)
	}
	handled := 0
	err = db.tx(ctx, func(tx *sql.Tx) error {
		if db.dialect == postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", fanOutLockID); err != nil {
				return fmt.Errorf("fan-out lock: %w", err)
			}
		}
		rows, err := tx.QueryContext(ctx, db.q("SELECT id, kind, repository, payload, created_at FROM events WHERE dispatched = 0 ORDER BY id LIMIT ?"), n)
		if err != nil {
			return fmt.Errorf("read outbox: %w", err)
		}
		type ev struct {
			id, created         int64
			kind, repo, payload string
		}
		var evs []ev
		for rows.Next() {
			var e ev
			if err := rows.Scan(&e.id, &e.kind, &e.repo, &e.payload, &e.created); err != nil {
				rows.Close()
				return err
			}
			evs = append(evs, e)
		}
		rows.Close()
		if err := rows.Err(); err != nil {
			return err
		}
		for _, e := range evs {
			ns, _, _ := strings.Cut(e.repo, "/")
			// A disabled notification still gets its events queued: they wait
			// (undelivered) until it is reset, so nothing is lost. A
			// notification hears only events that happened after it existed.
			nrows, err := tx.QueryContext(ctx, db.q(`SELECT id, uuid, event_config FROM notifications WHERE event = ? AND created_at <= ?
				AND ((scope = 'repository' AND target = ?) OR (scope = 'organization' AND target = ?) OR scope = 'registry') ORDER BY id`),
				e.kind, e.created, e.repo, ns)
			if err != nil {
				return fmt.Errorf("match notifications: %w", err)
			}
			type target struct {
				id   int64
				uuid string
			}
			var targets []target
			for nrows.Next() {
				var t target
				var cfg string
				if err := nrows.Scan(&t.id, &t.uuid, &cfg); err != nil {
					nrows.Close()
					return err
				}
				if e.kind == EventVulnerabilityFound && !levelAllows(cfg, e.payload) {
					continue // below the notification's severity threshold
				}
				targets = append(targets, t)
			}
			nrows.Close()
			for _, t := range targets {
				payload, _ := json.Marshal(DeliveryJob{NotificationID: t.id, EventID: e.id, Repository: e.repo})
				// One stream per notification and repository: delivered in
				// order, one at a time.
				if _, err := db.EnqueueJobTx(ctx, tx, Job{Queue: NotifyQueue, OrderingKey: t.uuid + "|" + e.repo, Payload: payload, MaxAttempts: notifyMaxAttempts}); err != nil {
					return err
				}
			}
			if _, err := tx.ExecContext(ctx, db.q("UPDATE events SET dispatched = 1 WHERE id = ?"), e.id); err != nil {
				return fmt.Errorf("mark dispatched: %w", err)
			}
		}
		handled = len(evs)
		return nil
	})
	return handled, err
}

// severityIndex is Quay's level index of a severity name: 0 is Critical,
// 5 Unknown.
var severityIndex = map[string]int{"critical": 0, "high": 1, "medium": 2, "low": 3, "negligible": 4, "unknown": 5}

// VulnLevel reads a vulnerability_found notification's eventConfig.level:
// Quay's index (0 Critical .. 5 Unknown) as a number or digits, or a
// severity name.
func VulnLevel(v any) (int, bool) {
	level := -1
	switch x := v.(type) {
	case float64:
		if x == float64(int(x)) {
			level = int(x)
		}
	case string:
		if i, ok := severityIndex[strings.ToLower(x)]; ok {
			level = i
		} else if n, err := strconv.Atoi(x); err == nil {
			level = n
		}
	}
	return level, level >= 0 && level <= 5
}

// levelAllows applies Quay's rule for vulnerability_found: a notification
// with eventConfig.level L hears a vulnerability whose priority index is
// at most L. No level (or one that does not parse) hears everything.
func levelAllows(eventConfig, payload string) bool {
	var cfg struct {
		Level any `json:"level"`
	}
	if json.Unmarshal([]byte(eventConfig), &cfg) != nil || cfg.Level == nil {
		return true
	}
	level, ok := VulnLevel(cfg.Level)
	if !ok {
		return true
	}
	var p struct {
		Vulnerability struct {
			Priority string `json:"priority"`
		} `json:"vulnerability"`
	}
	_ = json.Unmarshal([]byte(payload), &p)
	idx, ok := severityIndex[strings.ToLower(p.Vulnerability.Priority)]
	if !ok {
		idx = severityIndex["unknown"]
	}
	return idx <= level
}
