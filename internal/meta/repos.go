package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"strings"
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
func (db *DB) ensureRepository(ctx context.Context, tx *sql.Tx, name string, w Writer) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), name).Scan(&id)
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
	if err := db.ensureNamespace(ctx, tx, name, c); err != nil {
		return 0, err
	}
	visibility := c.Visibility
	if visibility == "" {
		visibility = "private"
	}
	res, err := tx.ExecContext(ctx, db.q("INSERT INTO repositories (name, created_at, visibility) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING"), name, now(), visibility)
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
		if _, err := tx.ExecContext(ctx, db.q("INSERT INTO repository_permissions (repository_id, user_id, role) VALUES (?, ?, 'admin')"), id, c.AdminUserID); err != nil {
			return 0, fmt.Errorf("grant the creator admin: %w", err)
		}
	}
	return id, nil
}

// ensureNamespace makes sure the namespace of a repository about to be
// created exists: it creates it as an organization if the plan allows,
// and refuses with *NamespaceMissingError otherwise. No repository is ever
// created in a namespace that is neither a user nor an organization.
func (db *DB) ensureNamespace(ctx context.Context, tx *sql.Tx, repo string, c *RepoCreate) error {
	ns, _, _ := strings.Cut(repo, "/")
	var nsID int64
	err := tx.QueryRowContext(ctx, db.q("SELECT id FROM namespaces WHERE name = ?"), ns).Scan(&nsID)
	if err == nil {
		return nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("look up namespace: %w", err)
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

// EnsureRepository creates a repository as a push would (w.Create says
// how, its namespace included) unless it exists, in one transaction.
func (db *DB) EnsureRepository(ctx context.Context, name string, w Writer) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		_, err := db.ensureRepository(ctx, tx, name, w)
		return err
	})
}

// RepositoryExists reports whether a repository exists.
func (db *DB) RepositoryExists(ctx context.Context, name string) (bool, error) {
	var id int64
	err := db.read.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), name).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look up repository: %w", err)
	}
	return true, nil
}

// ListRepositories returns up to n repository names after last, in lexical
// order.
func (db *DB) ListRepositories(ctx context.Context, last string, n int) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT name FROM repositories WHERE name > ? ORDER BY name LIMIT ?"), last, n)
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
