package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"
)

// Queries and changes the /api/v1 API needs beyond the registry's.

// ErrUsersExist is returned by CreateFirstUser once any user exists.
var ErrUsersExist = errors.New("a user exists already")

// CreateFirstUser creates the first user, and optionally an API token it
// owns (tok.OwnerID is set to the new user), in one transaction that fails
// with ErrUsersExist if any user exists. Concurrent calls are serialized
// (SQLite: one writer; PostgreSQL: an advisory lock), so at most one
// succeeds.
func (db *DB) CreateFirstUser(ctx context.Context, u User, tok *AccessToken) (User, error) {
	err := db.tx(ctx, func(tx *sql.Tx) error {
		if db.dialect == postgres {
			if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", migrationLockID+2); err != nil {
				return fmt.Errorf("lock: %w", err)
			}
		}
		var n int
		if err := tx.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM users WHERE kind = ?"), UserKindUser).Scan(&n); err != nil {
			return fmt.Errorf("count users: %w", err)
		}
		if n > 0 {
			return ErrUsersExist
		}
		nsID, err := db.createNamespace(ctx, tx, u.Username, NamespaceUser)
		if err != nil {
			return err
		}
		u.Kind, u.NamespaceID, u.Enabled = UserKindUser, nsID, true
		if err := db.insertUser(ctx, tx, &u); err != nil {
			return err
		}
		if tok == nil {
			return nil
		}
		tok.OwnerID, tok.CreatedAt = u.ID, fromMicros(now())
		if tok.Scopes == nil {
			tok.Scopes = []byte("[]")
		}
		err = tx.QueryRowContext(ctx, db.q(`INSERT INTO access_tokens (name, secret_hash, scopes, owner_id, created_by, expires_at, created_at)
			VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id`), tok.Name, tok.SecretHash, string(tok.Scopes), tok.OwnerID, tok.CreatedBy,
			micros(tok.ExpiresAt), micros(tok.CreatedAt)).Scan(&tok.ID)
		if err != nil {
			return fmt.Errorf("create access token: %w", err)
		}
		return nil
	})
	if err != nil {
		return User{}, err
	}
	return u, nil
}

// UserOrganizations lists the organizations in which the user is a member
// of some team.
func (db *DB) UserOrganizations(ctx context.Context, userID int64) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT DISTINCT n.name FROM namespaces n
		JOIN teams t ON t.namespace_id = n.id JOIN team_members m ON m.team_id = t.id
		WHERE m.user_id = ? AND n.kind = ? ORDER BY n.name`), userID, NamespaceOrg)
	if err != nil {
		return nil, fmt.Errorf("list user organizations: %w", err)
	}
	return scanStrings(rows)
}

// RepositoryAuditLog returns up to n audit entries of one repository
// before id "before" (0: newest), newest first.
func (db *DB) RepositoryAuditLog(ctx context.Context, repo string, before int64, n int) ([]AuditEntry, error) {
	ns, _, _ := strings.Cut(repo, "/")
	return db.auditLog(ctx, ns, repo, before, n)
}

// RepoSummary is a repository as the API lists it.
type RepoSummary struct {
	Name         string
	Visibility   string
	State        string
	Description  string
	LastModified time.Time // latest tag change; zero if it has no tags
}

// RepoQuery selects repositories for RepositoriesPage.
type RepoQuery struct {
	Namespace  string // only repositories under "namespace/"; empty: all
	PublicOnly bool   // only public repositories
	After      string // names after this one
	Limit      int
}

// RepositoriesPage lists repositories in name order. The namespace filter
// is a range on the name index (bytewise, like a LIKE 'ns/%' that can use
// the index on both dialects).
func (db *DB) RepositoriesPage(ctx context.Context, q RepoQuery) ([]RepoSummary, error) {
	query := `SELECT r.name, r.visibility, r.state, r.description,
		COALESCE((SELECT MAX(t.updated_at) FROM tags t WHERE t.repository_id = r.id), 0)
		FROM repositories r WHERE r.name > ?`
	args := []any{q.After}
	if q.Namespace != "" {
		// '0' is the byte after '/'.
		query += " AND r.name > ? AND r.name < ?"
		args = append(args, q.Namespace+"/", q.Namespace+"0")
	}
	if q.PublicOnly {
		query += " AND r.visibility = 'public'"
	}
	args = append(args, q.Limit)
	rows, err := db.read.QueryContext(ctx, db.q(query+" ORDER BY r.name LIMIT ?"), args...)
	if err != nil {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	defer rows.Close()
	out := []RepoSummary{}
	for rows.Next() {
		var s RepoSummary
		var last int64
		if err := rows.Scan(&s.Name, &s.Visibility, &s.State, &s.Description, &last); err != nil {
			return nil, err
		}
		s.LastModified = timeOrZero(last)
		out = append(out, s)
	}
	return out, rows.Err()
}

// TagInfo is a tag with what the API shows of its manifest.
type TagInfo struct {
	Name      string
	Digest    digest.Digest
	MediaType string
	Size      int64 // the sum of the manifest's blobs (config and layers)
	UpdatedAt time.Time
}

// TagQuery selects tags for TagsPage.
type TagQuery struct {
	Name   string // only this tag
	Offset int
	Limit  int
}

// TagsPage lists a repository's tags, most recently changed first, or
// ErrRepositoryNotFound.
func (db *DB) TagsPage(ctx context.Context, repo string, q TagQuery) ([]TagInfo, error) {
	var repoID int64
	if err := db.read.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), repo).Scan(&repoID); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrRepositoryNotFound
		}
		return nil, fmt.Errorf("look up repository: %w", err)
	}
	query := `SELECT t.name, t.manifest_digest, m.media_type, t.updated_at,
		COALESCE((SELECT SUM(b.size) FROM manifest_references mr JOIN blobs b ON b.digest = mr.ref_digest
			WHERE mr.repository_id = t.repository_id AND mr.manifest_digest = t.manifest_digest AND mr.is_manifest = 0), 0)
		FROM tags t JOIN manifests m ON m.repository_id = t.repository_id AND m.digest = t.manifest_digest
		WHERE t.repository_id = ?`
	args := []any{repoID}
	if q.Name != "" {
		query += " AND t.name = ?"
		args = append(args, q.Name)
	}
	args = append(args, q.Limit, q.Offset)
	rows, err := db.read.QueryContext(ctx, db.q(query+" ORDER BY t.updated_at DESC, t.name LIMIT ? OFFSET ?"), args...)
	if err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	defer rows.Close()
	out := []TagInfo{}
	for rows.Next() {
		var ti TagInfo
		var dg string
		var updated int64
		if err := rows.Scan(&ti.Name, &dg, &ti.MediaType, &updated, &ti.Size); err != nil {
			return nil, err
		}
		ti.Digest, ti.UpdatedAt = digest.Digest(dg), fromMicros(updated)
		out = append(out, ti)
	}
	return out, rows.Err()
}

// MoveTag points a tag at a manifest already stored in the repository
// (creating the tag if needed) and, if the tag moved, appends the repo_push
// event naming it in the same transaction. It returns
// ErrRepositoryNotFound or ErrManifestNotFound.
func (db *DB) MoveTag(ctx context.Context, repo, tag string, d digest.Digest, actor string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var repoID int64
		if err := tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), repo).Scan(&repoID); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrRepositoryNotFound
			}
			return fmt.Errorf("look up repository: %w", err)
		}
		lock := ""
		if db.dialect == postgres {
			lock = " FOR SHARE" // a concurrent manifest delete waits for this tag
		}
		var mediaType string
		var size int64
		err := tx.QueryRowContext(ctx, db.q("SELECT media_type, size FROM manifests WHERE repository_id = ? AND digest = ?"+lock), repoID, d.String()).
			Scan(&mediaType, &size)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrManifestNotFound
		}
		if err != nil {
			return fmt.Errorf("look up manifest: %w", err)
		}
		moved, err := db.setTag(ctx, tx, repoID, tag, d)
		if err != nil || !moved {
			return err
		}
		return db.appendEvent(ctx, tx, Event{Kind: EventRepoPush, Repository: repo, Actor: actor,
			Data: mustJSON(pushEvent{Digest: d.String(), MediaType: mediaType, Size: size, UpdatedTags: []string{tag}})})
	})
}

// RepoPermission is a permission on a repository as the API shows it.
type RepoPermission struct {
	Name        string
	Role        string
	IsRobot     bool
	IsOrgMember bool // a robot of the namespace, or a user in a team of it
}

// RepoPermissions lists a repository's permissions of one kind ("user",
// which includes robots, or "team"), optionally only the one of name.
// namespace is the repository's.
func (db *DB) RepoPermissions(ctx context.Context, repoID int64, namespace, kind, name string) ([]RepoPermission, error) {
	query := `SELECT t.name, p.role, 0, 1 FROM repository_permissions p JOIN teams t ON t.id = p.team_id WHERE p.repository_id = ?`
	args := []any{repoID}
	col := "t.name"
	if kind == "user" {
		query = `SELECT u.username, p.role, CASE WHEN u.kind = 'robot' THEN 1 ELSE 0 END,
			CASE WHEN u.kind = 'robot' THEN CASE WHEN u.namespace_id = (SELECT id FROM namespaces WHERE name = ?) THEN 1 ELSE 0 END
			WHEN EXISTS (SELECT 1 FROM team_members m JOIN teams t ON t.id = m.team_id JOIN namespaces n ON n.id = t.namespace_id
				WHERE m.user_id = u.id AND n.name = ?) THEN 1 ELSE 0 END
			FROM repository_permissions p JOIN users u ON u.id = p.user_id WHERE p.repository_id = ?`
		args, col = []any{namespace, namespace, repoID}, "u.username"
	}
	if name != "" {
		query += " AND " + col + " = ?"
		args = append(args, name)
	}
	rows, err := db.read.QueryContext(ctx, db.q(query+" ORDER BY 1"), args...)
	if err != nil {
		return nil, fmt.Errorf("list permissions: %w", err)
	}
	defer rows.Close()
	out := []RepoPermission{}
	for rows.Next() {
		var p RepoPermission
		var robot, member int
		if err := rows.Scan(&p.Name, &p.Role, &robot, &member); err != nil {
			return nil, err
		}
		p.IsRobot, p.IsOrgMember = robot == 1, member == 1
		out = append(out, p)
	}
	return out, rows.Err()
}
