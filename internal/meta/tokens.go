package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// AccessToken is a scoped access token (Scopes is the JSON list of
// {repository, actions}), or, with an OwnerID, a user's API token that acts
// as its owner.
type AccessToken struct {
	ID         int64
	Name       string
	SecretHash string
	Scopes     json.RawMessage
	OwnerID    int64
	CreatedBy  string
	ExpiresAt  time.Time // zero: never
	RevokedAt  time.Time // zero: not revoked
	LastUsedAt time.Time
	CreatedAt  time.Time
}

// ErrTokenNotFound is returned for an unknown access token.
var ErrTokenNotFound = fmt.Errorf("access token %w", ErrNotFound)

func micros(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixMicro()
}

func timeOrZero(us int64) time.Time {
	if us == 0 {
		return time.Time{}
	}
	return fromMicros(us)
}

// MaxAccessTokensPerCreator caps the unrevoked access tokens one caller
// may have issued through the API (CreateAccessTokenCapped): each is
// listed to its creator on every GET /api/v1/tokens.
const MaxAccessTokensPerCreator = 100

// ErrTooManyTokens refuses a token past MaxAccessTokensPerCreator.
var ErrTooManyTokens = errors.New("too many access tokens")

// tokenCreatorLockClass is the first key of the two-key PostgreSQL
// advisory locks that serialize one creator's capped token creations
// ("toks"), so that concurrent creations cannot both find room under
// MaxAccessTokensPerCreator (see notificationScopeLockClass).
const tokenCreatorLockClass = 0x746f6b73

// CreateAccessToken stores a new access token. Its name doubles as the
// username clients log in with, so it must not collide with a user's.
func (db Access) CreateAccessToken(ctx context.Context, t AccessToken) (AccessToken, error) {
	return db.createAccessToken(ctx, t, false)
}

// CreateAccessTokenCapped stores a new access token as CreateAccessToken
// does, unless its creator (t.CreatedBy) already has
// MaxAccessTokensPerCreator unrevoked tokens: ErrTooManyTokens.
func (db Access) CreateAccessTokenCapped(ctx context.Context, t AccessToken) (AccessToken, error) {
	return db.createAccessToken(ctx, t, true)
}

func (db Access) createAccessToken(ctx context.Context, t AccessToken, capped bool) (AccessToken, error) {
	if _, err := Users(db).UserByName(ctx, t.Name); err == nil {
		return AccessToken{}, fmt.Errorf("name %q is a user's: %w", t.Name, ErrExists)
	}
	ts := db.now()
	var owner any
	if t.OwnerID != 0 {
		owner = t.OwnerID
	}
	if t.Scopes == nil {
		t.Scopes = json.RawMessage("[]")
	}
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if capped {
			if db.dialect == postgres {
				// SQLite's one writer already serializes the count and
				// the insert; PostgreSQL's READ COMMITTED would not.
				if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1, hashtext($2))", tokenCreatorLockClass, t.CreatedBy); err != nil {
					return fmt.Errorf("create access token: lock its creator: %w", err)
				}
			}
			var n int
			if err := tx.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM access_tokens WHERE created_by = ? AND revoked_at = 0"), t.CreatedBy).Scan(&n); err != nil {
				return fmt.Errorf("create access token: count its creator's: %w", err)
			}
			if n >= MaxAccessTokensPerCreator {
				return fmt.Errorf("%w: %s has %d unrevoked", ErrTooManyTokens, t.CreatedBy, n)
			}
		}
		return tx.QueryRowContext(ctx, db.q(`INSERT INTO access_tokens (name, secret_hash, scopes, owner_id, created_by, expires_at, created_at)
		VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`), t.Name, t.SecretHash, string(t.Scopes), owner, t.CreatedBy, micros(t.ExpiresAt), ts).Scan(&t.ID)
	})
	if err != nil {
		if errors.Is(err, ErrTooManyTokens) {
			return AccessToken{}, err
		}
		if isUnique(err) {
			return AccessToken{}, fmt.Errorf("access token %q %w", t.Name, ErrExists)
		}
		return AccessToken{}, fmt.Errorf("create access token: %w", err)
	}
	t.CreatedAt = fromMicros(ts)
	return t, nil
}

const tokenColumns = "id, name, secret_hash, scopes, COALESCE(owner_id, 0), created_by, expires_at, revoked_at, last_used_at, created_at"

func scanToken(row interface{ Scan(...any) error }) (AccessToken, error) {
	var t AccessToken
	var scopes string
	var exp, rev, used, created int64
	if err := row.Scan(&t.ID, &t.Name, &t.SecretHash, &scopes, &t.OwnerID, &t.CreatedBy, &exp, &rev, &used, &created); err != nil {
		return AccessToken{}, err
	}
	t.Scopes = json.RawMessage(scopes)
	t.ExpiresAt, t.RevokedAt, t.LastUsedAt, t.CreatedAt = timeOrZero(exp), timeOrZero(rev), timeOrZero(used), fromMicros(created)
	return t, nil
}

// AccessTokenByName returns an access token by name.
func (db Access) AccessTokenByName(ctx context.Context, name string) (AccessToken, error) {
	t, err := scanToken(db.read.QueryRowContext(ctx, db.q("SELECT "+tokenColumns+" FROM access_tokens WHERE name = ?"), name))
	if errors.Is(err, sql.ErrNoRows) {
		return AccessToken{}, ErrTokenNotFound
	}
	if err != nil {
		return AccessToken{}, fmt.Errorf("look up access token: %w", err)
	}
	return t, nil
}

// AccessTokenBySecretHash returns the token whose secret hashes to h.
func (db Access) AccessTokenBySecretHash(ctx context.Context, h string) (AccessToken, error) {
	t, err := scanToken(db.read.QueryRowContext(ctx, db.q("SELECT "+tokenColumns+" FROM access_tokens WHERE secret_hash = ?"), h))
	if errors.Is(err, sql.ErrNoRows) {
		return AccessToken{}, ErrTokenNotFound
	}
	if err != nil {
		return AccessToken{}, fmt.Errorf("look up access token: %w", err)
	}
	return t, nil
}

// AccessTokens lists every access token.
func (db Access) AccessTokens(ctx context.Context) ([]AccessToken, error) {
	return db.accessTokens(ctx, "")
}

// AccessTokensCreatedBy lists the access tokens one caller issued.
func (db Access) AccessTokensCreatedBy(ctx context.Context, createdBy string) ([]AccessToken, error) {
	return db.accessTokens(ctx, " WHERE created_by = ?", createdBy)
}

// accessTokens lists the tokens a WHERE clause (or "": all) selects.
func (db Access) accessTokens(ctx context.Context, where string, args ...any) ([]AccessToken, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT "+tokenColumns+" FROM access_tokens"+where+" ORDER BY name"), args...)
	if err != nil {
		return nil, fmt.Errorf("list access tokens: %w", err)
	}
	defer rows.Close()
	out := []AccessToken{}
	for rows.Next() {
		t, err := scanToken(rows)
		if err != nil {
			return nil, fmt.Errorf("list access tokens: %w", err)
		}
		out = append(out, t)
	}
	return out, rows.Err()
}

// RevokeAccessToken revokes a token; it stays listed as revoked.
func (db Access) RevokeAccessToken(ctx context.Context, name string) error {
	res, err := db.write.ExecContext(ctx, db.q("UPDATE access_tokens SET revoked_at = ? WHERE name = ? AND revoked_at = 0"), db.now(), name)
	if err != nil {
		return fmt.Errorf("revoke access token: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrTokenNotFound
	}
	return nil
}

// TouchAccessToken records that a token was used now, if it was last
// recorded before stale (so that a token used with every request writes
// at most once per interval).
func (db Access) TouchAccessToken(ctx context.Context, id int64, stale time.Time) error {
	if _, err := db.write.ExecContext(ctx, db.q("UPDATE access_tokens SET last_used_at = ? WHERE id = ? AND last_used_at < ?"),
		db.now(), id, stale.UnixMicro()); err != nil {
		return fmt.Errorf("record access token use: %w", err)
	}
	return nil
}

// SigningKeyRow is a persisted token-signing key.
type SigningKeyRow struct {
	KID        string
	PrivatePEM []byte
}

// SigningKeys returns the token-signing keys, oldest first.
func (db Access) SigningKeys(ctx context.Context) ([]SigningKeyRow, error) {
	rows, err := db.read.QueryContext(ctx, "SELECT kid, private_pem FROM signing_keys ORDER BY id")
	if err != nil {
		return nil, fmt.Errorf("list signing keys: %w", err)
	}
	defer rows.Close()
	var out []SigningKeyRow
	for rows.Next() {
		var k SigningKeyRow
		var p string
		if err := rows.Scan(&k.KID, &p); err != nil {
			return nil, err
		}
		k.PrivatePEM = []byte(p)
		out = append(out, k)
	}
	return out, rows.Err()
}

// AddSigningKeyIfNone stores k unless a key exists already (replicas
// starting together agree on the oldest key) and returns all keys.
func (db Access) AddSigningKeyIfNone(ctx context.Context, k SigningKeyRow) ([]SigningKeyRow, error) {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if db.dialect == postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockID+1); err != nil {
				return err
			}
		}
		var n int
		if err := tx.QueryRowContext(ctx, "SELECT COUNT(*) FROM signing_keys").Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return nil
		}
		_, err := tx.ExecContext(ctx, db.q("INSERT INTO signing_keys (kid, private_pem, created_at) VALUES (?, ?, ?)"), k.KID, string(k.PrivatePEM), db.now())
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("add signing key: %w", err)
	}
	return Access(db).SigningKeys(ctx)
}

// ReplaceSigningKeyPEM replaces the stored private key of kid, if it is
// still old, by replacement (sealing a key stored in clear in place).
// Replicas doing it at once are safe: the first wins, the others change
// nothing and read the winner's value.
func (db Access) ReplaceSigningKeyPEM(ctx context.Context, kid string, old, replacement []byte) error {
	if _, err := db.write.ExecContext(ctx, db.q("UPDATE signing_keys SET private_pem = ? WHERE kid = ? AND private_pem = ?"),
		string(replacement), kid, string(old)); err != nil {
		return fmt.Errorf("replace signing key %s: %w", kid, err)
	}
	return nil
}

// AuditEntry is one security-relevant action.
type AuditEntry struct {
	ID         int64           `json:"id"`
	Kind       string          `json:"kind"`
	Actor      string          `json:"performer"`
	IP         string          `json:"ip"`
	Namespace  string          `json:"namespace,omitempty"`
	Repository string          `json:"repository,omitempty"`
	Metadata   json.RawMessage `json:"metadata"`
	CreatedAt  time.Time       `json:"datetime"`
}

// auditQuery selects audit entries: of one namespace and one repository
// (each optional), before id before (0: newest), at most n. current keeps
// only the entries recorded since the namespace, or the repository, that
// now holds the name was created: entries are stored by name, and a name
// deleted and created again must not show its new holder the old log.
type auditQuery struct {
	namespace, repo string
	before          int64
	n               int
	current         bool
}

// auditLog reads the audit log, newest first.
func (db *core) auditLog(ctx context.Context, aq auditQuery) ([]AuditEntry, error) {
	query := "SELECT id, kind, actor, ip, namespace, repository, metadata, created_at FROM audit_log WHERE 1 = 1"
	var args []any
	if aq.namespace != "" {
		query += " AND namespace = ?"
		args = append(args, aq.namespace)
	}
	if aq.repo != "" {
		query += " AND repository = ?"
		args = append(args, aq.repo)
	}
	if aq.current {
		// A missing namespace or repository compares as NULL: no entry.
		if aq.repo != "" {
			query += " AND created_at >= (SELECT created_at FROM repositories WHERE name = ?)"
			args = append(args, aq.repo)
		} else {
			query += " AND created_at >= (SELECT created_at FROM namespaces WHERE name = ?)"
			args = append(args, aq.namespace)
		}
	}
	if aq.before > 0 {
		query += " AND id < ?"
		args = append(args, aq.before)
	}
	args = append(args, aq.n)
	rows, err := db.read.QueryContext(ctx, db.q(query+" ORDER BY id DESC LIMIT CAST(? AS BIGINT)"), args...)
	if err != nil {
		return nil, fmt.Errorf("read audit log: %w", err)
	}
	defer rows.Close()
	out := []AuditEntry{}
	for rows.Next() {
		var e AuditEntry
		var md string
		var created int64
		if err := rows.Scan(&e.ID, &e.Kind, &e.Actor, &e.IP, &e.Namespace, &e.Repository, &md, &created); err != nil {
			return nil, fmt.Errorf("read audit log: %w", err)
		}
		e.Metadata, e.CreatedAt = json.RawMessage(md), fromMicros(created)
		out = append(out, e)
	}
	return out, rows.Err()
}
