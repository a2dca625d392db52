package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// authorizedEmailsSchema is migration 33: Quay's authorized e-mail
// addresses. An email notification of a repository or organization mails
// only the addresses confirmed for it (target is the repository's or the
// organization's name). code_hash is the SHA-256 (hex) of the
// confirmation code last mailed, "" once used; requested_at is when it
// was mailed (0: never, or the mail failed).
const authorizedEmailsSchema = `CREATE TABLE authorized_emails (
	id {{serial}},
	scope TEXT NOT NULL,
	target {{text}} NOT NULL,
	email {{text}} NOT NULL,
	code_hash TEXT NOT NULL DEFAULT '',
	confirmed SMALLINT NOT NULL DEFAULT 0,
	created_at BIGINT NOT NULL,
	requested_at BIGINT NOT NULL DEFAULT 0,
	confirmed_at BIGINT NOT NULL DEFAULT 0,
	mails INTEGER NOT NULL DEFAULT 0,
	UNIQUE (scope, target, email)
);
CREATE INDEX authorized_emails_code ON authorized_emails(code_hash) WHERE code_hash <> '';
CREATE INDEX authorized_emails_address ON authorized_emails(email, requested_at)`

// Bounds of the authorization requests.
const (
	// EmailAuthorizationInterval is how often one address may be mailed a
	// confirmation for one target.
	EmailAuthorizationInterval = 10 * time.Minute
	// EmailAuthorizationValid is how long a confirmation code is valid.
	EmailAuthorizationValid = 7 * 24 * time.Hour
	// MaxPendingEmailAuthorizations bounds the unconfirmed addresses of
	// one target whose code is still valid.
	MaxPendingEmailAuthorizations = 100
	// MaxEmailAuthorizationMails bounds the confirmations mailed to one
	// unconfirmed address for one target: the request is forgotten
	// EmailAuthorizationValid after its last mail, and may be made anew.
	MaxEmailAuthorizationMails = 3
)

// Errors of the authorized e-mail addresses.
var (
	ErrEmailAuthorizationNotFound = errors.New("no authorization of this e-mail address was asked for")
	ErrEmailAuthorizationTooSoon  = errors.New("a confirmation was mailed to this address less than 10 minutes ago (for this or another repository or organization), or 3 times already for this one in the last 7 days")
	ErrTooManyEmailAuthorizations = errors.New("too many unconfirmed e-mail addresses")
	ErrEmailAuthorizationInvalid  = errors.New("the confirmation code is wrong, used or expired")
)

// emailLockClass is the first key of the PostgreSQL advisory lock that
// serializes the authorization requests of one target (see
// notificationScopeLockClass).
const emailLockClass = 0x656d6c61

// AuthorizedEmail is an address asked for, or confirmed, as a receiver of
// a target's email notifications.
type AuthorizedEmail struct {
	ID          int64
	Scope       string
	Target      string
	Email       string
	Confirmed   bool
	CreatedAt   time.Time
	RequestedAt time.Time // when the last confirmation was mailed
	ConfirmedAt time.Time
	mails       int // confirmations mailed for this request
}

// NormalEmail is how an address is stored and compared: lower case.
func NormalEmail(addr string) string { return strings.ToLower(strings.TrimSpace(addr)) }

const authorizedEmailCols = "id, scope, target, email, confirmed, created_at, requested_at, confirmed_at, mails"

func scanAuthorizedEmail(row interface{ Scan(...any) error }) (AuthorizedEmail, error) {
	var a AuthorizedEmail
	var confirmed int
	var created, requested, confirmedAt int64
	if err := row.Scan(&a.ID, &a.Scope, &a.Target, &a.Email, &confirmed, &created, &requested, &confirmedAt, &a.mails); err != nil {
		return a, err
	}
	a.Confirmed = confirmed != 0
	a.CreatedAt = fromMicros(created)
	if requested > 0 {
		a.RequestedAt = fromMicros(requested)
	}
	if confirmedAt > 0 {
		a.ConfirmedAt = fromMicros(confirmedAt)
	}
	return a, nil
}

// AuthorizedEmail returns the authorization of an address for a target,
// or ErrEmailAuthorizationNotFound.
func (db Notifications) AuthorizedEmail(ctx context.Context, scope, target, email string) (AuthorizedEmail, error) {
	a, err := scanAuthorizedEmail(db.read.QueryRowContext(ctx, db.q("SELECT "+authorizedEmailCols+
		" FROM authorized_emails WHERE scope = ? AND target = ? AND email = ?"), scope, target, NormalEmail(email)))
	if errors.Is(err, sql.ErrNoRows) {
		return a, ErrEmailAuthorizationNotFound
	}
	if err != nil {
		return a, fmt.Errorf("read authorized e-mail: %w", err)
	}
	return a, nil
}

// RequestEmailAuthorization records that a confirmation with the code of
// codeHash is being mailed to an address for a target, and returns the
// authorization with mail true. An address already confirmed is returned
// as it is, with mail false (nothing to mail). It refuses with
// ErrEmailAuthorizationTooSoon when the address was mailed for the target
// within EmailAuthorizationInterval, and with
// ErrTooManyEmailAuthorizations when the target has
// MaxPendingEmailAuthorizations other unconfirmed addresses.
func (db Notifications) RequestEmailAuthorization(ctx context.Context, scope, target, email, codeHash string) (a AuthorizedEmail, mail bool, err error) {
	email = NormalEmail(email)
	err = db.tx(ctx, func(tx *sql.Tx) error {
		if db.dialect == postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1, hashtext($2))", emailLockClass, scope+"\n"+target); err != nil {
				return fmt.Errorf("lock authorized e-mails: %w", err)
			}
		}
		ts := db.now()
		// Unconfirmed requests whose last code expired are forgotten: they
		// no longer count against the target's pending ones, nor their
		// mails against the address.
		if _, err := tx.ExecContext(ctx, db.q("DELETE FROM authorized_emails WHERE scope = ? AND target = ? AND confirmed = 0 AND requested_at < ?"),
			scope, target, ts-EmailAuthorizationValid.Microseconds()); err != nil {
			return fmt.Errorf("forget expired e-mail authorizations: %w", err)
		}
		old, err := scanAuthorizedEmail(tx.QueryRowContext(ctx, db.q("SELECT "+authorizedEmailCols+
			" FROM authorized_emails WHERE scope = ? AND target = ? AND email = ?"), scope, target, email))
		switch {
		case err == nil && old.Confirmed:
			a = old
			return nil
		case err == nil:
			if !old.RequestedAt.IsZero() && time.Since(old.RequestedAt) < EmailAuthorizationInterval || old.mails >= MaxEmailAuthorizationMails {
				return ErrEmailAuthorizationTooSoon
			}
			if err := db.addressMailedRecently(ctx, tx, email, ts); err != nil {
				return err
			}
			if _, err := tx.ExecContext(ctx, db.q("UPDATE authorized_emails SET code_hash = ?, requested_at = ?, mails = mails + 1 WHERE id = ?"), codeHash, ts, old.ID); err != nil {
				return fmt.Errorf("refresh authorized e-mail: %w", err)
			}
			a, mail = old, true
			a.RequestedAt = fromMicros(ts)
			return nil
		case !errors.Is(err, sql.ErrNoRows):
			return fmt.Errorf("read authorized e-mail: %w", err)
		}
		if err := db.addressMailedRecently(ctx, tx, email, ts); err != nil {
			return err
		}
		var pending int
		if err := tx.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM authorized_emails WHERE scope = ? AND target = ? AND confirmed = 0"),
			scope, target).Scan(&pending); err != nil {
			return fmt.Errorf("count unconfirmed e-mails: %w", err)
		}
		if pending >= MaxPendingEmailAuthorizations {
			return fmt.Errorf("%w: %s %s has %d", ErrTooManyEmailAuthorizations, scope, target, pending)
		}
		res, err := tx.ExecContext(ctx, db.q(`INSERT INTO authorized_emails (scope, target, email, code_hash, created_at, requested_at, mails)
			VALUES (?, ?, ?, ?, ?, ?, 1) ON CONFLICT (scope, target, email) DO NOTHING`), scope, target, email, codeHash, ts, ts)
		if err != nil {
			return fmt.Errorf("add authorized e-mail: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("add authorized e-mail: %w", err)
		} else if n == 0 { // asked for at the same moment (SQLite)
			return ErrEmailAuthorizationTooSoon
		}
		a, mail = AuthorizedEmail{Scope: scope, Target: target, Email: email, CreatedAt: fromMicros(ts), RequestedAt: fromMicros(ts)}, true
		return nil
	})
	return a, mail, err
}

// addressMailedRecently refuses (ErrEmailAuthorizationTooSoon) to mail
// an address a confirmation for any target within
// EmailAuthorizationInterval of the last one: whoever may create
// repositories could otherwise have the registry mail one stranger once
// per repository every 10 minutes.
func (db *core) addressMailedRecently(ctx context.Context, tx *sql.Tx, email string, ts int64) error {
	var one int
	err := tx.QueryRowContext(ctx, db.q("SELECT 1 FROM authorized_emails WHERE email = ? AND requested_at > ? LIMIT 1"),
		email, ts-EmailAuthorizationInterval.Microseconds()).Scan(&one)
	if err == nil {
		return ErrEmailAuthorizationTooSoon
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read authorized e-mails: %w", err)
	}
	return nil
}

// WithdrawEmailAuthorizationRequest undoes a request whose mail could
// not be sent: its code is voided, and the address may be asked for again
// at once.
func (db Notifications) WithdrawEmailAuthorizationRequest(ctx context.Context, scope, target, email, codeHash string) error {
	_, err := db.write.ExecContext(ctx, db.q(`UPDATE authorized_emails SET code_hash = '', requested_at = 0, mails = mails - 1
		WHERE scope = ? AND target = ? AND email = ? AND code_hash = ? AND confirmed = 0`), scope, target, NormalEmail(email), codeHash)
	if err != nil {
		return fmt.Errorf("withdraw e-mail authorization: %w", err)
	}
	return nil
}

// ConfirmEmailAuthorization confirms the address whose code has the hash
// codeHash, mailed less than EmailAuthorizationValid ago; the code is
// used up. Any other code is ErrEmailAuthorizationInvalid.
func (db Notifications) ConfirmEmailAuthorization(ctx context.Context, codeHash string) (AuthorizedEmail, error) {
	var a AuthorizedEmail
	if codeHash == "" {
		return a, ErrEmailAuthorizationInvalid
	}
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var err error
		a, err = scanAuthorizedEmail(tx.QueryRowContext(ctx, db.q("SELECT "+authorizedEmailCols+
			" FROM authorized_emails WHERE code_hash = ? AND confirmed = 0"), codeHash))
		if errors.Is(err, sql.ErrNoRows) || err == nil && (a.RequestedAt.IsZero() || time.Since(a.RequestedAt) > EmailAuthorizationValid) {
			return ErrEmailAuthorizationInvalid
		}
		if err != nil {
			return fmt.Errorf("read authorized e-mail: %w", err)
		}
		ts := db.now()
		res, err := tx.ExecContext(ctx, db.q(`UPDATE authorized_emails SET confirmed = 1, confirmed_at = ?, code_hash = ''
			WHERE id = ? AND code_hash = ? AND confirmed = 0`), ts, a.ID, codeHash)
		if err != nil {
			return fmt.Errorf("confirm e-mail: %w", err)
		}
		if n, err := res.RowsAffected(); err != nil {
			return fmt.Errorf("confirm e-mail: %w", err)
		} else if n == 0 { // used by a concurrent confirmation
			return ErrEmailAuthorizationInvalid
		}
		a.Confirmed, a.ConfirmedAt = true, fromMicros(ts)
		return nil
	})
	return a, err
}

// UnconfirmedEmails returns those of addrs that are not confirmed for the
// target, in their order.
func (db Notifications) UnconfirmedEmails(ctx context.Context, scope, target string, addrs []string) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT email FROM authorized_emails WHERE scope = ? AND target = ? AND confirmed = 1"), scope, target)
	if err != nil {
		return nil, fmt.Errorf("read authorized e-mails: %w", err)
	}
	defer rows.Close()
	ok := map[string]bool{}
	for rows.Next() {
		var e string
		if err := rows.Scan(&e); err != nil {
			return nil, fmt.Errorf("read authorized e-mails: %w", err)
		}
		ok[e] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read authorized e-mails: %w", err)
	}
	var out []string
	for _, a := range addrs {
		if !ok[NormalEmail(a)] {
			out = append(out, a)
		}
	}
	return out, nil
}
