package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// Blob is a stored blob.
type Blob struct {
	Digest digest.Digest
	Size   int64
}

// ErrBlobNotFound is returned when a blob is not linked to a repository.
var ErrBlobNotFound = fmt.Errorf("blob %w", ErrNotFound)

// RepositoryBlob returns the blob if the repository may serve it.
func (db *DB) RepositoryBlob(ctx context.Context, repo string, d digest.Digest) (Blob, error) {
	var b Blob
	err := db.read.QueryRowContext(ctx, db.q(`SELECT b.size FROM repositories r
		JOIN repository_blobs rb ON rb.repository_id = r.id
		JOIN blobs b ON b.digest = rb.digest
		WHERE r.name = ? AND rb.digest = ?`), repo, d.String()).Scan(&b.Size)
	if errors.Is(err, sql.ErrNoRows) {
		return Blob{}, ErrBlobNotFound
	}
	if err != nil {
		return Blob{}, fmt.Errorf("look up blob: %w", err)
	}
	b.Digest = d
	return b, nil
}

// StoredBlob returns a blob known to the registry, in any repository.
func (db *DB) StoredBlob(ctx context.Context, d digest.Digest) (Blob, error) {
	var b Blob
	err := db.read.QueryRowContext(ctx, db.q("SELECT size FROM blobs WHERE digest = ?"), d.String()).Scan(&b.Size)
	if errors.Is(err, sql.ErrNoRows) {
		return Blob{}, ErrBlobNotFound
	}
	if err != nil {
		return Blob{}, fmt.Errorf("look up blob: %w", err)
	}
	b.Digest = d
	return b, nil
}

// RepositoriesWithBlob returns up to n repositories that link the blob.
func (db *DB) RepositoriesWithBlob(ctx context.Context, d digest.Digest, n int) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT r.name FROM repository_blobs rb
		JOIN repositories r ON r.id = rb.repository_id WHERE rb.digest = ? ORDER BY r.name LIMIT ?`), d.String(), n)
	if err != nil {
		return nil, fmt.Errorf("repositories with blob: %w", err)
	}
	return scanStrings(rows)
}

// LinkBlob records a stored blob and links it to the repository, creating
// the repository (as w.Create says) if needed. If uploadID is set, the
// upload session is removed in the same transaction.
func (db *DB) LinkBlob(ctx context.Context, repo string, b Blob, uploadID string, w Writer) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		return db.linkBlob(ctx, tx, repo, b, uploadID, w)
	})
}

func (db *DB) linkBlob(ctx context.Context, tx *sql.Tx, repo string, b Blob, uploadID string, w Writer) error {
	id, err := db.ensureRepository(ctx, tx, repo, w)
	if err != nil {
		return err
	}
	ts := now()
	if _, err := tx.ExecContext(ctx, db.q("INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?) ON CONFLICT (digest) DO NOTHING"), b.Digest.String(), b.Size, ts); err != nil {
		return fmt.Errorf("record blob: %w", err)
	}
	if _, err := tx.ExecContext(ctx, db.q("INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (?, ?, ?) ON CONFLICT (repository_id, digest) DO NOTHING"), id, b.Digest.String(), ts); err != nil {
		return fmt.Errorf("link blob: %w", err)
	}
	if uploadID != "" {
		if _, err := tx.ExecContext(ctx, db.q("DELETE FROM uploads WHERE id = ?"), uploadID); err != nil {
			return fmt.Errorf("finish upload: %w", err)
		}
	}
	return nil
}

// UnlinkBlob removes a blob from a repository. The bytes stay until garbage
// collection finds nothing referencing them. A blob that a manifest of the
// repository references is not unlinked: an *InUseError names the
// manifests. On PostgreSQL the link row is deleted (and so locked) before
// the references are read: a push that holds the link FOR SHARE while it
// stores a manifest naming the blob makes the delete wait for its commit,
// and the check then sees the new manifest; a push that comes later finds
// the link gone and is refused with MANIFEST_BLOB_UNKNOWN.
func (db *DB) UnlinkBlob(ctx context.Context, repo string, d digest.Digest) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var repoID int64
		err := tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), repo).Scan(&repoID)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrBlobNotFound
		}
		if err != nil {
			return fmt.Errorf("look up repository: %w", err)
		}
		res, err := tx.ExecContext(ctx, db.q("DELETE FROM repository_blobs WHERE repository_id = ? AND digest = ?"), repoID, d.String())
		if err != nil {
			return fmt.Errorf("unlink blob: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrBlobNotFound
		}
		return db.refusedIfReferenced(ctx, tx, repoID, d, "blob")
	})
}
