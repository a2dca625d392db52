package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/oci"
)

// WebSessions are the web UI's sign-in sessions (web_schema.go).
type WebSessions struct{ *core }

// WebSessions returns the store of the web UI's sessions.
func (db *DB) WebSessions() WebSessions { return WebSessions{db.core} }

// WebSession is a signed-in browser: the hash of its cookie's id, its
// user and the session's CSRF token.
type WebSession struct {
	IDHash    string
	UserID    int64
	CSRF      string
	ExpiresAt time.Time
	// SecretFingerprint, when set, is the SecretFingerprint of the
	// secret hash the sign-in verified: CreateWebSession stores the
	// session only while the user is enabled and its hash still has it.
	SecretFingerprint string
	// The user, read with the session.
	Username  string
	Superuser bool
	Enabled   bool
}

// ErrSessionNotFound is a session that does not exist or has expired.
var ErrSessionNotFound = fmt.Errorf("web session %w", ErrNotFound)

// ErrStaleSignIn refuses the session of a sign-in whose user was
// disabled, deleted or given a new secret since its secret was checked.
var ErrStaleSignIn = errors.New("the user was disabled, deleted or given a new password since the sign-in checked it")

// CreateWebSession stores a session, deleting the expired ones first.
// With a SecretFingerprint it stores it only while the user is enabled
// and its secret hash still has that fingerprint (else ErrStaleSignIn): a
// sign-in that checked the password before a reset or a disable, which
// end the user's sessions (Users.UpdateUser), stores none after them. The
// user's row is read FOR SHARE on PostgreSQL, so that UpdateUser's
// change waits for this session, which it then ends, or this read waits
// for the change, and sees it (SQLite serializes the two already).
func (db WebSessions) CreateWebSession(ctx context.Context, s WebSession) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		if s.SecretFingerprint != "" {
			lock := ""
			if db.dialect == postgres {
				lock = " FOR SHARE"
			}
			var hash string
			var enabled int
			err := tx.QueryRowContext(ctx, db.q("SELECT secret_hash, enabled FROM users WHERE id = ?"+lock), s.UserID).Scan(&hash, &enabled)
			if errors.Is(err, sql.ErrNoRows) {
				return ErrStaleSignIn
			}
			if err != nil {
				return fmt.Errorf("look up the session's user: %w", err)
			}
			if enabled != 1 || SecretFingerprint(hash) != s.SecretFingerprint {
				return ErrStaleSignIn
			}
		}
		n := db.now()
		if _, err := tx.ExecContext(ctx, db.q("DELETE FROM web_sessions WHERE expires_at < ?"), n); err != nil {
			return fmt.Errorf("delete expired sessions: %w", err)
		}
		_, err := tx.ExecContext(ctx, db.q("INSERT INTO web_sessions (id_hash, user_id, csrf, created_at, expires_at) VALUES (?, ?, ?, ?, ?)"),
			s.IDHash, s.UserID, s.CSRF, n, micros(s.ExpiresAt))
		if err != nil {
			return fmt.Errorf("create session: %w", err)
		}
		return nil
	})
}

// WebSession returns the session of an id hash with its user, or
// ErrSessionNotFound when there is none or it expired before at.
func (db WebSessions) WebSession(ctx context.Context, idHash string, at time.Time) (WebSession, error) {
	s := WebSession{IDHash: idHash}
	var expires int64
	var super, enabled int
	err := db.read.QueryRowContext(ctx, db.q(`SELECT s.user_id, s.csrf, s.expires_at, u.username, u.superuser, u.enabled
		FROM web_sessions s JOIN users u ON u.id = s.user_id WHERE s.id_hash = ? AND s.expires_at > ?`), idHash, micros(at)).
		Scan(&s.UserID, &s.CSRF, &expires, &s.Username, &super, &enabled)
	if errors.Is(err, sql.ErrNoRows) {
		return WebSession{}, ErrSessionNotFound
	}
	if err != nil {
		return WebSession{}, fmt.Errorf("look up session: %w", err)
	}
	s.ExpiresAt, s.Superuser, s.Enabled = fromMicros(expires), super == 1, enabled == 1
	return s, nil
}

// DeleteWebSession ends a session (sign-out); ending one that does not
// exist is no error.
func (db WebSessions) DeleteWebSession(ctx context.Context, idHash string) error {
	if _, err := db.write.ExecContext(ctx, db.q("DELETE FROM web_sessions WHERE id_hash = ?"), idHash); err != nil {
		return fmt.Errorf("delete session: %w", err)
	}
	return nil
}

// RepoCard is a repository as the web UI lists it.
type RepoCard struct {
	Name        string
	Visibility  string
	State       string
	Description string
	LastPush    time.Time // latest change of a tag that has not expired; zero without one
	Tags        int       // tags that have not expired
	Size        int64     // bytes of the blobs linked to the repository
	Gated       bool
	Mirror      bool
	ProxyCache  bool // its namespace is a pull-through cache
}

// Sort orders of BrowseRepositories and TagRows.
const (
	SortName   = "name"
	SortPushed = "pushed"
	SortSize   = "size"
)

// BrowseQuery selects repositories for BrowseRepositories.
type BrowseQuery struct {
	Search     string // a substring of the name, any case (longer than a name: none)
	Sort       string // SortName (default), SortPushed (latest first), SortSize (largest first)
	PublicOnly bool
	// After, when its Name is set, continues a listing past a row (keyset
	// pagination): only the rows that sort after it are returned.
	After  BrowseKey
	Offset int
	Limit  int
}

// BrowseKey is a row's position in a BrowseRepositories listing: its name
// and, sorted by last push or size, that value (Unix microseconds, bytes).
type BrowseKey struct {
	Name  string
	Value int64
}

// Key is the card's position in a listing sorted by sort.
func (c RepoCard) Key(sort string) BrowseKey {
	switch sort {
	case SortPushed:
		return BrowseKey{Name: c.Name, Value: micros(c.LastPush)}
	case SortSize:
		return BrowseKey{Name: c.Name, Value: c.Size}
	}
	return BrowseKey{Name: c.Name}
}

// BrowseRepositories lists repositories for the web UI, with what its
// badges show: two queries (the repositories with correlated, indexed
// sub-selects per row, and the proxy-cache namespaces). Sorted by name,
// the sub-selects run for the rows of the page only; sorted by last push
// or size, for every repository the search matches, before the database
// can order them (no stored column holds either): that costs in
// proportion to the registry's repositories, tags and blob links.
func (db Repositories) BrowseRepositories(ctx context.Context, q BrowseQuery) ([]RepoCard, error) {
	if len(q.Search) > oci.MaxNameLength {
		// No name holds it (and its LIKE pattern could pass SQLite's
		// limit of 50,000 bytes).
		return []RepoCard{}, nil
	}
	query := `SELECT r.name AS name, r.visibility, r.state, r.description, r.gated,
		COALESCE((SELECT MAX(t.updated_at) FROM tags t WHERE t.repository_id = r.id AND ` + liveTag("t") + `), 0) AS pushed,
		(SELECT COUNT(*) FROM tags t WHERE t.repository_id = r.id AND ` + liveTag("t") + `) AS tag_count,
		COALESCE((SELECT SUM(b.size) FROM repository_blobs rb JOIN blobs b ON b.digest = rb.digest WHERE rb.repository_id = r.id), 0) AS bytes,
		EXISTS (SELECT 1 FROM repository_mirrors m WHERE m.repository = r.name) AS mirrored
		FROM repositories r WHERE 1 = 1`
	// An expired tag is gone (liveTag), as for a pull.
	n := db.now()
	args := []any{n, n}
	if q.After.Name != "" && q.Sort != SortPushed && q.Sort != SortSize {
		query += " AND r.name > ?"
		args = append(args, q.After.Name)
	}
	if q.Search != "" {
		query += ` AND lower(r.name) LIKE CAST(? AS TEXT) ESCAPE '\'`
		args = append(args, "%"+strings.TrimSuffix(likePrefix(strings.ToLower(q.Search)), "%")+"%")
	}
	if q.PublicOnly {
		query += " AND r.visibility = 'public'"
	}
	switch q.Sort {
	case SortPushed, SortSize:
		col := map[string]string{SortPushed: "pushed", SortSize: "bytes"}[q.Sort]
		if q.After.Name != "" {
			// The sort value is computed: compare it outside.
			query = "SELECT * FROM (" + query + ") c WHERE (c." + col + " < ? OR (c." + col + " = ? AND c.name > ?))"
			args = append(args, q.After.Value, q.After.Value, q.After.Name)
		}
		query += " ORDER BY " + col + " DESC, name"
	default:
		query += " ORDER BY r.name"
	}
	args = append(args, q.Limit, q.Offset)
	rows, err := db.read.QueryContext(ctx, db.q(query+" LIMIT CAST(? AS BIGINT) OFFSET CAST(? AS BIGINT)"), args...)
	if err != nil {
		return nil, fmt.Errorf("browse repositories: %w", err)
	}
	defer rows.Close()
	out := []RepoCard{}
	for rows.Next() {
		var c RepoCard
		var pushed int64
		if err := rows.Scan(&c.Name, &c.Visibility, &c.State, &c.Description, &c.Gated, &pushed, &c.Tags, &c.Size, &c.Mirror); err != nil {
			return nil, err
		}
		c.LastPush = timeOrZero(pushed)
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	rows.Close()
	if len(out) == 0 {
		return out, nil
	}
	proxies, err := db.read.QueryContext(ctx, "SELECT n.name FROM proxy_caches pc JOIN namespaces n ON n.id = pc.namespace_id")
	if err != nil {
		return nil, fmt.Errorf("proxy-cache namespaces: %w", err)
	}
	names, err := scanStrings(proxies)
	if err != nil {
		return nil, err
	}
	for i := range out {
		ns, _, _ := strings.Cut(out[i].Name, "/")
		for _, n := range names {
			out[i].ProxyCache = out[i].ProxyCache || n == ns
		}
	}
	return out, nil
}
