package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"
)

// setTag points a tag at a manifest and reports whether it moved. The
// tag's row is read locked, and a new one is created only if no
// transaction made it meanwhile: on PostgreSQL two pushes that both found
// no tag would otherwise both write it, and the second would move a tag
// an immutability policy keeps from the first one's digest. A tag past
// its expiration is gone (liveTag): its row, which no pass has deleted
// yet, is taken over as a new tag, even for the digest it held, and the
// tag_deleted the pass would have announced comes first.
func (db *core) setTag(ctx context.Context, tx *sql.Tx, repoID int64, tag string, d digest.Digest) (string, bool, error) {
	return db.setTagAs(ctx, tx, repoID, tag, d, false)
}

// setTagAs is setTag for a push: with renew (a client's push), a tag
// that points at d already starts a new life, as in Quay (retarget_tag
// ends the tag and makes it anew, whatever it pointed at): it starts now
// (a creation_date policy judges it, and number_of_tags ranks it, by this
// push), its expiration is cleared (the push's quay.expires-after label
// sets one after, expireFromLabel) and its history has a new period. It
// did not move (no repo_push, nothing for the base-image graph). An
// immutable tag pushed its own image again stays as it is, and the push
// is accepted, as without renew.
func (db *core) setTagAs(ctx context.Context, tx *sql.Tx, repoID int64, tag string, d digest.Digest, renew bool) (string, bool, error) {
	ts := db.now()
	for range 3 {
		var current string
		var expires int64
		err := tx.QueryRowContext(ctx, db.q("SELECT manifest_digest, expires_at FROM tags WHERE repository_id = ? AND name = ?"+db.lockSuffix()), repoID, tag).
			Scan(&current, &expires)
		switch {
		case err == nil && expires > 0 && expires <= ts:
			// An immutable tag does not expire (its expiration was set
			// before the policy covered it): it stays, and moves no more
			// than any immutable tag.
			if err := db.immutable(ctx, tx, repoID, tag); err != nil {
				var ie *ImmutableTagError
				if errors.As(err, &ie) && current == d.String() {
					return current, false, nil
				}
				return "", false, err
			}
			if err := db.replaceExpiredTag(ctx, tx, repoID, tag, current, expires, d, ts); err != nil {
				return "", false, err
			}
			current = ""
		case err == nil && current == d.String():
			if renew {
				return current, false, db.renewTag(ctx, tx, repoID, tag, d, ts)
			}
			return current, false, nil
		case err == nil:
			if err := db.immutable(ctx, tx, repoID, tag); err != nil {
				return "", false, err
			}
			// A moved tag starts a new life: no expiration until one is set.
			if _, err := tx.ExecContext(ctx, db.q("UPDATE tags SET manifest_digest = ?, updated_at = ?, expires_at = 0 WHERE repository_id = ? AND name = ?"),
				d.String(), ts, repoID, tag); err != nil {
				return "", false, fmt.Errorf("set tag: %w", err)
			}
		case errors.Is(err, sql.ErrNoRows):
			created, err := db.createTag(ctx, tx, repoID, tag, d, ts)
			if err != nil {
				return "", false, err
			}
			if !created {
				continue // made by another transaction since: read it
			}
		default:
			return "", false, fmt.Errorf("read tag: %w", err)
		}
		if err := db.recordTagHistory(ctx, tx, repoID, tag, d.String(), ts); err != nil {
			return "", false, err
		}
		return current, true, nil
	}
	return "", false, fmt.Errorf("set tag %q: other transactions keep creating and deleting it", tag)
}

// createTag makes a tag that does not exist, and reports false, without
// changing anything, if it does (on PostgreSQL, after the transaction
// that made it commits).
func (db *core) createTag(ctx context.Context, tx *sql.Tx, repoID int64, tag string, d digest.Digest, ts int64) (bool, error) {
	res, err := tx.ExecContext(ctx, db.q(`INSERT INTO tags (repository_id, name, manifest_digest, updated_at, expires_at) VALUES (?, ?, ?, ?, 0)
		ON CONFLICT (repository_id, name) DO NOTHING`), repoID, tag, d.String(), ts)
	if err != nil {
		return false, fmt.Errorf("create tag: %w", err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		return false, fmt.Errorf("create tag: %w", err)
	}
	return n == 1, nil
}

// renewTag restarts the life of a tag pushed again with the digest it
// points at (setTagAs), unless it is immutable.
func (db *core) renewTag(ctx context.Context, tx *sql.Tx, repoID int64, tag string, d digest.Digest, ts int64) error {
	if err := db.immutable(ctx, tx, repoID, tag); err != nil {
		var ie *ImmutableTagError
		if errors.As(err, &ie) {
			return nil
		}
		return err
	}
	if _, err := tx.ExecContext(ctx, db.q("UPDATE tags SET updated_at = ?, expires_at = 0 WHERE repository_id = ? AND name = ?"), ts, repoID, tag); err != nil {
		return fmt.Errorf("renew tag: %w", err)
	}
	return db.recordTagHistory(ctx, tx, repoID, tag, d.String(), ts)
}
