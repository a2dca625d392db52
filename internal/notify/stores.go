package notify

import (
	"context"
	"encoding/json"
	"time"

	"github.com/berth-dev/berth/internal/meta"
)

// Stores are the parts of the metadata store notify uses, one small
// interface each (internal/wire builds them).
type Stores struct {
	Notifications Notifications
	Outcomes      Outcomes
	Listeners     Listeners
	Jobs          Jobs
	Outbox        Outbox
	// Emails are the addresses confirmed for email notifications.
	Emails AuthorizedEmails
	// Durable is waited on before an event's delivery goes out (see
	// Deliver); nil waits for nothing (a store whose commits are durable
	// once visible).
	Durable Durability
}

// Durability waits until what the store committed so far would survive a
// power cut (meta.DB.WaitDurable).
type Durability interface {
	WaitDurable(ctx context.Context) error
}

// Notifications are the configured notifications (meta.Notifications).
type Notifications interface {
	CreateNotificationForTarget(ctx context.Context, n meta.Notification) (meta.Notification, error)
	NotificationByID(ctx context.Context, id int64) (meta.Notification, error)
	AllNotifications(ctx context.Context) ([]meta.Notification, error)
	ReplaceNotificationConfig(ctx context.Context, id int64, old, config json.RawMessage) (bool, error)
	EnqueueTestDelivery(ctx context.Context, j meta.Job) (int64, error)
}

// Outcomes record what deliveries did to their notification
// (meta.Notifications).
type Outcomes interface {
	RecordAttempt(ctx context.Context, a meta.Attempt, reset bool) error
	RecordAttemptIn(ctx context.Context, tx meta.Tx, a meta.Attempt, reset bool) error
	ClaimNotificationTrial(ctx context.Context, id int64, seen, until time.Time) (bool, error)
	NotificationFailed(ctx context.Context, id int64, f meta.NotificationFailure) (meta.Notification, error)
}

// Listeners find, inside a feed subscriber's transaction, the
// notifications that may hear an event (meta.Notifications).
type Listeners interface {
	Listening(ctx context.Context, tx meta.Tx, kind, repository, namespace string) ([]meta.Notification, error)
}

// Jobs enqueue deliveries, and release those held (meta.Jobs).
type Jobs interface {
	EnqueueJob(ctx context.Context, j meta.Job) (int64, error)
	EnqueueIn(ctx context.Context, tx meta.Tx, j meta.Job) (int64, error)
	ReleaseJobs(ctx context.Context, queue, keyPrefix string) (int64, error)
}

// Outbox reads the event a delivery carries (meta.Outbox).
type Outbox interface {
	EventByID(ctx context.Context, id int64) (meta.Event, error)
}

// AuthorizedEmails are the addresses asked for, and confirmed, as
// receivers of a repository's or organization's email notifications
// (meta.Notifications).
type AuthorizedEmails interface {
	UnconfirmedEmails(ctx context.Context, scope, target string, addrs []string) ([]string, error)
	RequestEmailAuthorization(ctx context.Context, scope, target, email, codeHash string) (meta.AuthorizedEmail, bool, error)
	WithdrawEmailAuthorizationRequest(ctx context.Context, scope, target, email, codeHash string) error
}
