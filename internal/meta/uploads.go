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

// ErrUploadBusy is returned when another request is writing the upload.
var ErrUploadBusy = errors.New("another request is writing to this upload")

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

// ClaimUpload gives the caller exclusive write access to an upload for the
// lease, across every process sharing the database: two requests writing
// one upload at once would interleave bytes that the saved hash state does
// not describe. AdvanceUpload or ReleaseUpload ends the claim; a crashed
// writer's claim expires with its lease.
func (db *DB) ClaimUpload(ctx context.Context, repo, id string, lease time.Duration) (Upload, error) {
	u := Upload{ID: id, Repository: repo}
	var started int64
	ts := now()
	err := db.write.QueryRowContext(ctx, db.q(`UPDATE uploads SET locked_until = ? WHERE id = ? AND repository = ? AND locked_until < ?
		RETURNING size, hash_state, started_at`), ts+lease.Microseconds(), id, repo, ts).Scan(&u.Size, &u.HashState, &started)
	if errors.Is(err, sql.ErrNoRows) {
		if _, gerr := db.GetUpload(ctx, repo, id); gerr != nil {
			return Upload{}, gerr
		}
		return Upload{}, ErrUploadBusy
	}
	if err != nil {
		return Upload{}, fmt.Errorf("claim upload: %w", err)
	}
	u.StartedAt = fromMicros(started)
	return u, nil
}

// ReleaseUpload ends a claim without changing the upload.
func (db *DB) ReleaseUpload(ctx context.Context, id string) error {
	if _, err := db.write.ExecContext(ctx, db.q("UPDATE uploads SET locked_until = 0 WHERE id = ?"), id); err != nil {
		return fmt.Errorf("release upload: %w", err)
	}
	return nil
}

// AdvanceUpload records that the upload grew from oldSize to newSize and
// ends the caller's claim. It fails with ErrUploadConflict if another
// request moved it meanwhile.
func (db *DB) AdvanceUpload(ctx context.Context, id string, oldSize, newSize int64, hashState []byte) error {
	res, err := db.write.ExecContext(ctx, db.q("UPDATE uploads SET size = ?, hash_state = ?, updated_at = ?, locked_until = 0 WHERE id = ? AND size = ?"),
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
