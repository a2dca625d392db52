package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/google/uuid"
)

// Event kinds appended by the registry core.
const (
	EventRepoPush        = "repo_push"
	EventTagDeleted      = "tag_deleted"
	EventManifestDeleted = "manifest_deleted"
	EventRepoCreated     = "repo_created"
	EventRepoDeleted     = "repo_deleted"
)

// Event is an entry of the outbox: it is appended in the same transaction as
// the change it announces, and delivered later by the dispatcher.
type Event struct {
	ID         int64
	UUID       string
	Kind       string
	Repository string
	Actor      string
	Data       json.RawMessage
	CreatedAt  time.Time
}

func (db *core) appendEvent(ctx context.Context, tx *sql.Tx, e Event) error {
	if e.UUID == "" {
		e.UUID = uuid.NewString()
	}
	if e.Data == nil {
		e.Data = json.RawMessage("{}")
	}
	ts := now()
	_, err := tx.ExecContext(ctx, db.q("INSERT INTO events (uuid, kind, repository, actor, payload, created_at) VALUES (?, ?, ?, ?, ?, ?)"),
		e.UUID, e.Kind, e.Repository, e.Actor, string(e.Data), ts)
	if err != nil {
		return fmt.Errorf("append %s event: %w", e.Kind, err)
	}
	// Content changes are security-relevant too: the audit log records
	// who pushed and deleted what, in the same transaction.
	ns, _, _ := strings.Cut(e.Repository, "/")
	_, err = tx.ExecContext(ctx, db.q("INSERT INTO audit_log (kind, actor, namespace, repository, metadata, created_at) VALUES (?, ?, ?, ?, ?, ?)"),
		e.Kind, e.Actor, ns, e.Repository, string(e.Data), ts)
	if err != nil {
		return fmt.Errorf("audit %s: %w", e.Kind, err)
	}
	return nil
}

// EventsAfter returns up to n events with an id above after, oldest first.
func (db Outbox) EventsAfter(ctx context.Context, after int64, n int) ([]Event, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT id, uuid, kind, repository, actor, payload, created_at FROM events WHERE id > ? ORDER BY id LIMIT ?"), after, n)
	if err != nil {
		return nil, fmt.Errorf("list events: %w", err)
	}
	defer rows.Close()
	var out []Event
	for rows.Next() {
		var e Event
		var payload string
		var created int64
		if err := rows.Scan(&e.ID, &e.UUID, &e.Kind, &e.Repository, &e.Actor, &payload, &created); err != nil {
			return nil, fmt.Errorf("scan event: %w", err)
		}
		e.Data = json.RawMessage(payload)
		e.CreatedAt = fromMicros(created)
		out = append(out, e)
	}
	return out, rows.Err()
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("marshal event data: %v", err)) // only plain structs are passed
	}
	return b
}

// EventByID returns an outbox event.
func (db Outbox) EventByID(ctx context.Context, id int64) (Event, error) {
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
