package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
)

// ensureRepository returns the id of the repository, creating it (and its
// repo_created event) if needed.
func (db *DB) ensureRepository(ctx context.Context, tx *sql.Tx, name, actor string) (int64, error) {
	var id int64
	err := tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), name).Scan(&id)
	if err == nil {
		return id, nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return 0, fmt.Errorf("look up repository: %w", err)
	}
	res, err := tx.ExecContext(ctx, db.q("INSERT INTO repositories (name, created_at) VALUES (?, ?) ON CONFLICT (name) DO NOTHING"), name, now())
	if err != nil {
		return 0, fmt.Errorf("create repository: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		if err := db.appendEvent(ctx, tx, Event{Kind: EventRepoCreated, Repository: name, Actor: actor}); err != nil {
			return 0, err
		}
	}
	if err := tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), name).Scan(&id); err != nil {
		return 0, fmt.Errorf("look up repository: %w", err)
	}
	return id, nil
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
