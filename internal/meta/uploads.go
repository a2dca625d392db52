package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"
)

// Upload is an upload session. HashState is the marshalled state of the
// running digest of the bytes received so far, so that any replica can
// continue the upload without re-reading it.
type Upload struct {
	ID         string
	Repository string
	Size       int64
	HashState  []byte
	StartedAt  time.Time
}

// ErrUploadNotFound is returned for an unknown upload session.
var ErrUploadNotFound = fmt.Errorf("upload %w", ErrNotFound)

// ErrUploadConflict is returned when an upload changed under a writer.
var ErrUploadConflict = errors.New("upload was changed by a concurrent request")

// CreateUpload records a new upload session.
func (db *DB) CreateUpload(ctx context.Context, u Upload) error {
	ts := now()
	_, err := db.write.ExecContext(ctx, db.q("INSERT INTO uploads (id, repository, size, hash_state, started_at, updated_at) VALUES (?, ?, ?, ?, ?, ?)"),
		u.ID, u.Repository, u.Size, u.HashState, ts, ts)
	if err != nil {
		return fmt.Errorf("create upload: %w", err)
	}
	return nil
}

// GetUpload returns an upload session of the repository.
func (db *DB) GetUpload(ctx context.Context, repo, id string) (Upload, error) {
	u := Upload{ID: id, Repository: repo}
	var started int64
	err := db.read.QueryRowContext(ctx, db.q("SELECT size, hash_state, started_at FROM uploads WHERE id = ? AND repository = ?"), id, repo).
		Scan(&u.Size, &u.HashState, &started)
	if errors.Is(err, sql.ErrNoRows) {
		return Upload{}, ErrUploadNotFound
	}
	if err != nil {
		return Upload{}, fmt.Errorf("get upload: %w", err)
	}
	u.StartedAt = fromMicros(started)
	return u, nil
}

// AdvanceUpload records that the upload grew from oldSize to newSize. It
// fails with ErrUploadConflict if another request moved it meanwhile.
func (db *DB) AdvanceUpload(ctx context.Context, id string, oldSize, newSize int64, hashState []byte) error {
	res, err := db.write.ExecContext(ctx, db.q("UPDATE uploads SET size = ?, hash_state = ?, updated_at = ? WHERE id = ? AND size = ?"),
		newSize, hashState, now(), id, oldSize)
	if err != nil {
		return fmt.Errorf("advance upload: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrUploadConflict
	}
	return nil
}

// DeleteUpload removes an upload session.
func (db *DB) DeleteUpload(ctx context.Context, id string) error {
	res, err := db.write.ExecContext(ctx, db.q("DELETE FROM uploads WHERE id = ?"), id)
	if err != nil {
		return fmt.Errorf("delete upload: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrUploadNotFound
	}
	return nil
}
