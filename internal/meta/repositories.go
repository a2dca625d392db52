package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Writer is who writes content: the actor named in events and audit, and,
// for a push that may create its repository, how to create it.
type Writer struct {
	Actor  string
	Create *RepoCreate
}

// RepoCreate is how a push creates the repository it writes to, decided by
// the authorizer and applied in the push's own transaction, so that a
// refused or aborted push leaves nothing behind (no repository, no
// organization, no permission, no repo_created event).
//
// A repository always lives in a namespace that exists (a user's or an
// organization): when the namespace is missing, the push creates it as an
// organization only if the plan says so (OrgOwnerID or OwnerlessOrg), and
// is refused with a *NamespaceMissingError otherwise. A nil plan (writers
// that decide nothing: auth mode "none", tests) creates it as an
// organization without owners.
type RepoCreate struct {
	// Visibility of the new repository: "private" or "public".
	Visibility string
	// AdminUserID, if set, is given the admin role on the new repository
	// (whoever creates a repository by pushing administers it).
	AdminUserID int64
	// OrgOwnerID, if set, creates the repository's namespace as an
	// organization owned by that user when the namespace does not exist
	// (CREATE_NAMESPACE_ON_PUSH).
	OrgOwnerID int64
	// OwnerlessOrg creates a missing namespace as an organization with no
	// owner: auth mode "none", where there is no account to own it (a
	// superuser can add owners later).
	OwnerlessOrg bool
	// MustExist refuses to create anything: the repository exists
	// already, and a write into it after it was deleted (an import or a
	// mirror sync that outlived its repository) fails with
	// ErrRepositoryNotFound rather than making it, or its namespace,
	// again without owners.
	MustExist bool
}

// NamespaceMissingError refuses a push that would create a repository in
// a namespace that does not exist and that the push may not create.
type NamespaceMissingError struct {
	Namespace string
}

func (e *NamespaceMissingError) Error() string {
	return fmt.Sprintf("namespace %s does not exist (create it, or enable CREATE_NAMESPACE_ON_PUSH)", e.Namespace)
}

// Unwrap makes errors.Is(err, ErrNamespaceNotFound) true.
func (e *NamespaceMissingError) Unwrap() error { return ErrNamespaceNotFound }

// ensureRepository returns the id of the repository, creating it (and its
// repo_created event, and what w.Create asks for) if needed.
func (db *core) ensureRepository(ctx context.Context, tx *sql.Tx, name string, w Writer) (int64, error) {
	var id int64
	// On PostgreSQL the row is held FOR KEY SHARE, as the foreign keys of
	// what the writer inserts next would hold it: a repository delete
	// (which locks the row first, quotaUnrefRepository) waits for this
	// write or this write for it, rather than each for the other's rows.
	lock := ""
	if db.dialect == postgres {
		lock = " FOR KEY SHARE"
	}
	err := tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"+lock), name).Scan(&id)
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("look up repository: %w", err)
	}
	c := w.Create
	if c == nil {
		c = &RepoCreate{OwnerlessOrg: true}
	}
	if c.MustExist {
		return 0, fmt.Errorf("%s: %w", name, ErrRepositoryNotFound)
	}
	if err := db.ensureNamespace(ctx, tx, name, c); err != nil {
		return 0, err
	}
	visibility := c.Visibility
	if visibility == "" {
		visibility = "private"
	}
	res, err := tx.ExecContext(ctx, db.q("INSERT INTO repositories (name, created_at, visibility) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING"), name, db.now(), visibility)
	if err != nil {
		return 0, fmt.Errorf("create repository: %w", err)
	}
	created := false
	if n, _ := res.RowsAffected(); n == 1 {
		created = true
		if err := db.appendEvent(ctx, tx, Event{Kind: EventRepoCreated, Repository: name, Actor: w.Actor}); err != nil {
			return 0, err
		}
	}
	if err := tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), name).Scan(&id); err != nil {
		return 0, fmt.Errorf("look up repository: %w", err)
	}
	if created && c.AdminUserID != 0 {
		if err := db.grantCreator(ctx, tx, id, c.AdminUserID); err != nil {
			return 0, err
		}
	}
	return id, nil
}

// grantCreator gives the user who created a repository the admin role on
// it: a member of a creator team has no role on the organization's other
// repositories. A creator deleted since the write was authorized is
// ErrCreatorGone, and the transaction creates nothing.
func (db *core) grantCreator(ctx context.Context, tx *sql.Tx, repoID, userID int64) error {
	_, err := tx.ExecContext(ctx, db.q("INSERT INTO repository_permissions (repository_id, user_id, role) VALUES (?, ?, 'admin')"), repoID, userID)
	if foreignKeyViolation(err) {
		// The repository is this transaction's own: the creator's
		// account was deleted since the push was authorized.
		return fmt.Errorf("creator %d: %w", userID, ErrCreatorGone)
	}
	if err != nil {
		return fmt.Errorf("grant the creator admin: %w", err)
	}
	return nil
}

// ensureNamespace makes sure the namespace of a repository about to be
// created exists: it creates it as an organization if the plan allows,
// and refuses with *NamespaceMissingError otherwise. No repository is ever
// created in a namespace that is neither a user nor an organization.
func (db *core) ensureNamespace(ctx context.Context, tx *sql.Tx, repo string, c *RepoCreate) error {
	ns, _, _ := strings.Cut(repo, "/")
	found, err := db.holdNamespace(ctx, tx, ns)
	if err != nil || found {
		return err
	}
	if c.OrgOwnerID == 0 && !c.OwnerlessOrg {
		return &NamespaceMissingError{Namespace: ns}
	}
	if _, err := db.createOrganization(ctx, tx, ns, c.OrgOwnerID); errors.Is(err, ErrExists) {
		return errRetry // a concurrent push created it: start over
	} else if err != nil {
		return err
	}
	return nil
}

// holdNamespace reports whether the namespace exists, for a repository
// about to be created in it in tx. On PostgreSQL its row is held FOR KEY
// SHARE until tx ends: the namespace's deletion (DeleteOrganization, which
// locks the row and then counts its repositories; DeleteUser) waits for
// the repository's commit and sees it, or this waits for the deletion and
// finds the namespace gone; neither leaves a repository without its
// namespace, for whoever creates the name next to inherit. SQLite runs
// one write transaction at a time already.
func (db *core) holdNamespace(ctx context.Context, tx *sql.Tx, ns string) (bool, error) {
	lock := ""
	if db.dialect == postgres {
		lock = " FOR KEY SHARE"
	}
	var id int64
	err := tx.QueryRowContext(ctx, db.q("SELECT id FROM namespaces WHERE name = ?"+lock), ns).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up namespace: %w", err)
	}
	return true, nil
}

// EnsureRepository creates a repository as a push would (w.Create says
// how, its namespace included) unless it exists, in one transaction.
func (db Repositories) EnsureRepository(ctx context.Context, name string, w Writer) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		_, err := db.ensureRepository(ctx, tx, name, w)
		return err
	})
}

// ListRepositories returns up to n repository names after last, in lexical
// order.
func (db Repositories) ListRepositories(ctx context.Context, last string, n int) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT CAST(? AS BIGINT)"), last, n)
	if err != nil {
		return nil, fmt.Errorf("list repositories: %w", err)
	}
	return scanStrings(rows)
}

func scanStrings(rows *sql.Rows) ([]string, error) {
	defer rows.Close()
	out := []string{}
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, rows.Err()
}

// RepositoriesPage lists repositories in name order. The namespace filter
// is a range on the name index (bytewise, like a LIKE 'ns/%' that can use
// the index on both dialects).
func (db Repositories) RepositoriesPage(ctx context.Context, q RepoQuery) ([]RepoSummary, error) {
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
	rows, err := db.read.QueryContext(ctx, db.q(query+" ORDER BY r.name LIMIT CAST(? AS BIGINT)"), args...)
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

// Repository returns a repository's settings; Exists is false (and no
// error) for a repository that does not exist.
func (db Repositories) Repository(ctx context.Context, name string) (RepoInfo, error) {
	ri := RepoInfo{Name: name}
	var gated int
	var created int64
	err := db.read.QueryRowContext(ctx, db.q("SELECT id, visibility, state, mirror_robot, description, gated, created_at FROM repositories WHERE name = ?"), name).
		Scan(&ri.ID, &ri.Visibility, &ri.State, &ri.MirrorRobot, &ri.Description, &gated, &created)
	if errors.Is(err, sql.ErrNoRows) {
		return ri, nil
	}
	if err != nil {
		return RepoInfo{}, fmt.Errorf("look up repository: %w", err)
	}
	ri.Exists, ri.Gated, ri.CreatedAt = true, gated == 1, fromMicros(created)
	if ri.Gated {
		if ri.CheckerIDs, err = db.checkerIDs(ctx, ri.ID); err != nil {
			return RepoInfo{}, err
		}
	}
	return ri, nil
}

// checkerIDs are the accounts a gated repository's gate lets check.
func (db Repositories) checkerIDs(ctx context.Context, repoID int64) ([]int64, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT user_id FROM gate_checkers WHERE repository_id = ?"), repoID)
	if err != nil {
		return nil, fmt.Errorf("read gate checkers: %w", err)
	}
	defer rows.Close()
	var ids []int64
	for rows.Next() {
		var id int64
		if err := rows.Scan(&id); err != nil {
			return nil, fmt.Errorf("read gate checkers: %w", err)
		}
		ids = append(ids, id)
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("read gate checkers: %w", err)
	}
	return ids, nil
}

// CreateRepository creates an empty repository with settings (the API's
// create; a push creates repositories implicitly). adminUserID, if set, is
// given the admin role on it, as a push's creator is (grantCreator).
// ErrNamespaceNotFound: its namespace does not exist, or was deleted since
// the caller looked it up (holdNamespace); ErrExists: the name is taken.
func (db Repositories) CreateRepository(ctx context.Context, name, visibility, description, actor string, adminUserID int64) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		ns, _, _ := strings.Cut(name, "/")
		if found, err := db.holdNamespace(ctx, tx, ns); err != nil {
			return err
		} else if !found {
			return fmt.Errorf("%s: %w", ns, ErrNamespaceNotFound)
		}
		var id int64
		err := tx.QueryRowContext(ctx, db.q("INSERT INTO repositories (name, created_at, visibility, description) VALUES (?, ?, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING id"),
			name, db.now(), visibility, description).Scan(&id)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("repository %q %w", name, ErrExists)
		}
		if err != nil {
			return fmt.Errorf("create repository: %w", err)
		}
		if adminUserID != 0 {
			if err := db.grantCreator(ctx, tx, id, adminUserID); err != nil {
				return err
			}
		}
		return db.appendEvent(ctx, tx, Event{Kind: EventRepoCreated, Repository: name, Actor: actor})
	})
}

// UpdateRepository changes a repository's settings; empty arguments keep
// the current value.
func (db Repositories) UpdateRepository(ctx context.Context, name string, visibility, state, mirrorRobot, description *string) error {
	var sets []string
	var args []any
	for col, v := range map[string]*string{"visibility": visibility, "state": state, "mirror_robot": mirrorRobot, "description": description} {
		if v != nil {
			sets = append(sets, col+" = ?")
			args = append(args, *v)
		}
	}
	if len(sets) == 0 {
		return nil
	}
	args = append(args, name)
	res, err := db.write.ExecContext(ctx, db.q("UPDATE repositories SET "+strings.Join(sets, ", ")+" WHERE name = ?"), args...)
	if err != nil {
		return fmt.Errorf("update repository: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrRepositoryNotFound
	}
	return nil
}

// DeleteRepository deletes a repository with its manifests, tags, links,
// permissions and notifications, and appends a repo_deleted event. Bytes are reclaimed by GC.
func (db Repositories) DeleteRepository(ctx context.Context, name, actor string) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		_, err := db.deleteRepository(ctx, tx, name, actor, false)
		return err
	})
}

// DeleteEmptyRepository deletes a repository as DeleteRepository does,
// only if it stores no manifest, has no upload session and links no blob,
// and reports whether it did: an import that failed removes the
// repository it created for the copy, unless a push stored something in
// it meanwhile, is uploading into it, or has uploaded blobs whose
// manifest is still to come. A link records nobody's name, so the
// import's own links keep the repository too: a failed import that linked
// blobs leaves it, and garbage collection removes those links (no
// manifest references them) after gc.delay.
func (db Repositories) DeleteEmptyRepository(ctx context.Context, name, actor string) (bool, error) {
	var deleted bool
	err := db.tx(ctx, func(tx *sql.Tx) error {
		var err error
		deleted, err = db.deleteRepository(ctx, tx, name, actor, true)
		return err
	})
	return deleted, err
}

// deleteRepository is the body of DeleteRepository's transaction; with
// onlyEmpty it deletes nothing (false, nil) if the repository stores a
// manifest, has an upload session or links a blob, checked after its row
// is locked (a push, or a blob's link, holds it FOR KEY SHARE until it
// commits).
func (db *core) deleteRepository(ctx context.Context, tx *sql.Tx, name, actor string, onlyEmpty bool) (bool, error) {
	var id int64
	if err := tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), name).Scan(&id); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return false, ErrRepositoryNotFound
		}
		return false, err
	}
	if onlyEmpty {
		var one int
		if db.dialect == postgres {
			if err := db.lockRepositoryRow(ctx, tx, id); err != nil {
				return false, err
			}
		}
		// A push into it has stored a manifest, is uploading blobs, or
		// has uploaded (or mounted) blobs and not yet pushed the manifest
		// naming them: its links must stay for its manifest, as for
		// collection.
		err := tx.QueryRowContext(ctx, db.q(`SELECT 1 FROM manifests WHERE repository_id = ?
			UNION ALL SELECT 1 FROM uploads WHERE repository = ?
			UNION ALL SELECT 1 FROM repository_blobs WHERE repository_id = ? LIMIT 1`), id, name, id).Scan(&one)
		if err == nil {
			return false, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return false, fmt.Errorf("look for manifests, uploads and blob links: %w", err)
		}
	}
	if err := db.quotaUnrefRepository(ctx, tx, id, name); err != nil { // namespace quota
		return false, err
	}
	for _, stmt := range []string{
		"DELETE FROM tags WHERE repository_id = ?",
		"DELETE FROM manifest_references WHERE repository_id = ?",
		"DELETE FROM manifests WHERE repository_id = ?",
		"DELETE FROM repository_blobs WHERE repository_id = ?",
		"DELETE FROM repository_permissions WHERE repository_id = ?",
		"DELETE FROM repositories WHERE id = ?",
	} {
		if _, err := tx.ExecContext(ctx, db.q(stmt), id); err != nil {
			return false, fmt.Errorf("delete repository: %w", err)
		}
	}
	// Its notifications name it rather than refer to its row: they go
	// with it (as in Quay), or a repository created later under the
	// name would deliver to them. The organization's hear the
	// repo_deleted event.
	if _, err := tx.ExecContext(ctx, db.q("DELETE FROM notifications WHERE scope = ? AND target = ?"), ScopeRepository, name); err != nil {
		return false, fmt.Errorf("delete the repository's notifications: %w", err)
	}
	if _, err := tx.ExecContext(ctx, db.q("DELETE FROM authorized_emails WHERE scope = ? AND target = ?"), ScopeRepository, name); err != nil {
		return false, fmt.Errorf("delete the repository's authorized e-mails: %w", err)
	}
	return true, db.appendEvent(ctx, tx, Event{Kind: EventRepoDeleted, Repository: name, Actor: actor})
}

// lockRepositoryRow locks a repository's row FOR UPDATE (PostgreSQL
// only), after deleteRepository read its id without a lock: a concurrent
// delete that removed the row meanwhile (two DELETEs of one repository at
// once) makes it ErrRepositoryNotFound, as if this delete had come second.
func (db *core) lockRepositoryRow(ctx context.Context, tx *sql.Tx, id int64) error {
	var one int
	err := tx.QueryRowContext(ctx, "SELECT 1 FROM repositories WHERE id = $1 FOR UPDATE", id).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("%w (deleted meanwhile)", ErrRepositoryNotFound)
	}
	if err != nil {
		return fmt.Errorf("lock repository: %w", err)
	}
	return nil
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

// RepoInfo is a repository's access settings.
type RepoInfo struct {
	ID          int64
	Name        string
	Exists      bool
	Visibility  string // public or private
	State       string
	MirrorRobot string
	Description string
	// Gated is true when the repository has a gate; CheckerIDs are the
	// users and robots its gate lets check candidates, by account id.
	Gated      bool
	CheckerIDs []int64
	// CreatedAt is when the repository was created (zero when it does
	// not exist).
	CreatedAt time.Time
}
