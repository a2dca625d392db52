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

// TagsPage lists a repository's tags, most recently changed first, or
// ErrRepositoryNotFound; expired tags are left out. With q.History it
// lists the tags' periods instead (Quay's tag list without
// onlyActiveTags): every digest each tag pointed to whose manifest is
// still stored, ended periods with Until set (a live period of an expired
// tag with ExpiresAt, when it ended), the most recently started first.
func (db Manifests) TagsPage(ctx context.Context, repo string, q TagQuery) ([]TagInfo, error) {
	var repoID int64
	if err := db.read.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), repo).Scan(&repoID); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrRepositoryNotFound
		}
		return nil, fmt.Errorf("look up repository: %w", err)
	}
	// The page is chosen first, then described: the manifest's media
	// type, the sum of its blobs, whether the tag's live period began with
	// a restore (so that the sorter carries narrow rows, and the sums are
	// computed for the page only).
	page := `SELECT t.name AS tag, t.manifest_digest AS digest, t.updated_at AS from_at, 0 AS until_at, t.expires_at, 0 AS id
		FROM tags t WHERE t.repository_id = ? AND ` + liveTag("t")
	name, order, outer := "t.name", " ORDER BY t.updated_at DESC, t.name", "p.from_at DESC, p.tag"
	reversion := `(SELECT MAX(h.reversion) FROM tag_history h WHERE h.repository_id = m.repository_id AND h.tag = p.tag AND h.until_at = 0)`
	if q.History {
		page = `SELECT h.tag, h.digest, h.from_at, h.until_at, COALESCE(t.expires_at, 0) AS expires_at, h.id
		FROM tag_history h LEFT JOIN tags t ON h.until_at = 0 AND t.repository_id = h.repository_id AND t.name = h.tag AND t.manifest_digest = h.digest
		WHERE h.repository_id = ? AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = h.repository_id AND m.digest = h.digest)`
		// Newest first, in the order of tag_history_from (or, for one tag,
		// of tag_history_tag: its periods were recorded in time order).
		name, order, outer = "h.tag", " ORDER BY h.from_at DESC, h.id DESC", "p.from_at DESC, p.id DESC"
		if q.Name != "" {
			order, outer = " ORDER BY h.id DESC", "p.id DESC"
		}
		reversion = `(SELECT h.reversion FROM tag_history h WHERE h.id = p.id)`
	}
	args := []any{repoID}
	if !q.History {
		args = append(args, db.now()) // expired tags are gone (liveTag)
	}
	if q.Name != "" {
		page += " AND " + name + " = ?"
		args = append(args, q.Name)
	}
	if q.Contains != "" {
		page += " AND lower(" + name + `) LIKE CAST(? AS TEXT) ESCAPE '\'`
		args = append(args, "%"+likePrefix(strings.ToLower(q.Contains)))
	}
	args = append(args, q.Limit, q.Offset, repoID)
	query := `SELECT p.tag, p.digest, m.media_type, p.from_at, p.until_at, p.expires_at,
		COALESCE((SELECT SUM(b.size) FROM manifest_references mr JOIN blobs b ON b.digest = mr.ref_digest
			WHERE mr.repository_id = m.repository_id AND mr.manifest_digest = m.digest AND mr.is_manifest = 0), 0),
		COALESCE(` + reversion + `, 0)
		FROM (` + page + order + ` LIMIT CAST(? AS BIGINT) OFFSET CAST(? AS BIGINT)) p JOIN manifests m ON m.repository_id = ? AND m.digest = p.digest
		ORDER BY ` + outer
	rows, err := db.read.QueryContext(ctx, db.q(query), args...)
	if err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	defer rows.Close()
	out := []TagInfo{}
	for rows.Next() {
		var ti TagInfo
		var dg string
		var updated, until, expires int64
		var reversion int
		if err := rows.Scan(&ti.Name, &dg, &ti.MediaType, &updated, &until, &expires, &ti.Size, &reversion); err != nil {
			return nil, fmt.Errorf("read tags: %w", err)
		}
		ti.Digest, ti.UpdatedAt, ti.Reversion = digest.Digest(dg), fromMicros(updated), reversion != 0
		if until > 0 {
			ti.Until = fromMicros(until)
		}
		if expires > 0 {
			ti.ExpiresAt = fromMicros(expires)
		}
		out = append(out, ti)
	}
	return out, rows.Err()
}

// MoveTag points a tag at a manifest already stored in the repository
// (creating the tag if needed) and, if the tag moved, appends the repo_push
// event naming it in the same transaction. It returns
// ErrRepositoryNotFound or ErrManifestNotFound.
func (db Manifests) MoveTag(ctx context.Context, repo, tag string, d digest.Digest, actor string) error {
	guardedTag := false
	err := db.tx(ctx, func(tx *sql.Tx) error {
		guardedTag = false
		var repoID int64
		if err := tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), repo).Scan(&repoID); err != nil {
			if errors.Is(err, sql.ErrNoRows) {
				return ErrRepositoryNotFound
			}
			return fmt.Errorf("look up repository: %w", err)
		}
		// The gate, then the tag's lock if it is guarded, before the
		// manifest: the lock order at gateLockClass.
		guarded, gated, err := db.guardedTags(ctx, tx, repoID, tag)
		if err != nil {
			return err
		}
		// A concurrent manifest delete waits for this tag; gated, locked
		// as releasing the manifest would (manifestLock).
		var mediaType string
		var size int64
		err = tx.QueryRowContext(ctx, db.q("SELECT media_type, size FROM manifests WHERE repository_id = ? AND digest = ?"+db.manifestLock(gated)), repoID, d.String()).
			Scan(&mediaType, &size)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrManifestNotFound
		}
		if err != nil {
			return fmt.Errorf("look up manifest: %w", err)
		}
		guards := gated && GuardsTag(guarded, tag)
		if gated && !guards && isCosignTag(tag) && matchesTag(guarded, tag) {
			var content []byte
			if err := tx.QueryRowContext(ctx, db.q("SELECT content FROM manifests WHERE repository_id = ? AND digest = ?"), repoID, d.String()).Scan(&content); err != nil {
				return fmt.Errorf("read manifest: %w", err)
			}
			guards = guardsFor(guarded, tag, mediaType, content)
		}
		if guards {
			// A retag onto a guarded tag is new content for it: a
			// candidate, like a push.
			id, err := db.addCandidate(ctx, tx, repoID, tag, d, actor)
			if err != nil {
				return err
			}
			if id == 0 {
				// Already the tag's target (nothing to say), or already
				// its candidate, or rolled back from.
				current, err := db.liveTarget(ctx, tx, repoID, tag)
				if err != nil {
					return err
				}
				if current == d.String() {
					return nil
				}
				// Not proposed because the tag was rolled back from it once
				// (proposeCandidate's rule), or already its live candidate.
				var live, rejected int
				err = tx.QueryRowContext(ctx, db.q(`SELECT
					COALESCE(SUM(CASE WHEN state IN ('pending', 'blocked') THEN 1 ELSE 0 END), 0),
					COALESCE(SUM(CASE WHEN state = 'rejected' THEN 1 ELSE 0 END), 0)
					FROM gate_candidates WHERE repository_id = ? AND tag = ? AND digest = ?`), repoID, tag, d.String()).Scan(&live, &rejected)
				if err != nil {
					return fmt.Errorf("read candidates: %w", err)
				}
				if live == 0 && rejected > 0 {
					return ErrRolledBack
				}
				guardedTag = true
				return nil
			}
			guardedTag = true
			return db.appendEvent(ctx, tx, Event{Kind: EventPromotionPending, Repository: repo, Actor: actor,
				Data: mustJSON(pendingEvent{Digest: d.String(), MediaType: mediaType, Size: size, Tag: tag, Tags: []string{tag}, Candidate: id})})
		}
		prev, moved, err := db.setTag(ctx, tx, repoID, tag, d)
		if err != nil || !moved {
			return err
		}
		if gated {
			if err := db.release(ctx, tx, repoID, d); err != nil {
				return err
			}
		}
		ev := pushEvent{Digest: d.String(), MediaType: mediaType, Size: size, UpdatedTags: []string{tag}}
		if prev != "" {
			ev.Previous = map[string]string{tag: prev}
		}
		return db.appendEvent(ctx, tx, Event{Kind: EventRepoPush, Repository: repo, Actor: actor, Data: mustJSON(ev)})
	})
	if err == nil && guardedTag {
		return ErrGuardedTag
	}
	return err
}

// DeleteTag removes a tag; the manifest stays. A tag past its expiration
// is ErrManifestNotFound, as for reads by it.
func (db Manifests) DeleteTag(ctx context.Context, repo, tag, actor string) error {
	return db.tx(ctx, func(tx *sql.Tx) error { return db.deleteTag(ctx, tx, repo, tag, actor) })
}

// deleteTag is DeleteTag in the caller's transaction.
func (db *core) deleteTag(ctx context.Context, tx *sql.Tx, repo, tag, actor string) error {
	var d string
	var repoID, expires int64
	// The tag row is locked (PostgreSQL): a push moving it, or another
	// delete, waits; the event names the digest deleted.
	lock := ""
	if db.dialect == postgres {
		lock = " FOR UPDATE OF t"
	}
	err := tx.QueryRowContext(ctx, db.q(`SELECT t.manifest_digest, t.repository_id, t.expires_at FROM tags t JOIN repositories r ON r.id = t.repository_id
		WHERE r.name = ? AND t.name = ?`+lock), repo, tag).Scan(&d, &repoID, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrManifestNotFound
	}
	if err != nil {
		return fmt.Errorf("read tag: %w", err)
	}
	// An immutable tag does not expire (a push to its name is refused, the
	// pass keeps it), so it is refused as immutable whatever its expiration.
	if err := db.immutable(ctx, tx, repoID, tag); err != nil {
		return err
	}
	if expires > 0 && expires <= db.now() {
		// Expired: gone, as for a pull by it (liveTag). Its end is not this
		// delete's: the expiry pass, or a push to its name, ends its
		// history at its expiration and announces it (ExpireTag,
		// replaceExpiredTag).
		return ErrManifestNotFound
	}
	res, err := tx.ExecContext(ctx, db.q(`DELETE FROM tags WHERE name = ? AND repository_id = ? AND manifest_digest = ?`), tag, repoID, d)
	if err != nil {
		return fmt.Errorf("delete tag: %w", err)
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return ErrManifestNotFound // deleted meanwhile
	}
	if err := db.endTagHistory(ctx, tx, repoID, tag); err != nil {
		return err
	}
	return db.appendEvent(ctx, tx, Event{Kind: EventTagDeleted, Repository: repo, Actor: actor,
		Data: mustJSON(map[string]any{"tag": tag, "digest": d})})
}

// liveTag is the condition that a row of tags (alias t, or none) has not
// expired, with one argument: now (microseconds). A tag is gone the moment
// its expiration passes, as in Quay: reads by tag do not see it, though its
// row stays until a garbage-collection pass deletes it (and announces
// tag_deleted), and a push to its name gives the tag a new life (setTag).
//
// It compares expires_at - now with 0, not expires_at with now: SQLite
// checks whether a query's terms imply the WHERE of the partial index
// tags_expires (expires_at > 0), and a term "expires_at > ?" makes it
// read the bound value to decide, which marks the prepared statement as
// depending on that value. Bound with a new now on every run, such a
// statement is prepared again (parsed and planned) on every step, and
// the connection's statement cache (stmtcache.go) saves nothing: a
// manifest GET by tag cost twice the CPU. The difference is an
// expression the partial index's WHERE cannot match, so the plan does
// not depend on now.
func liveTag(alias string) string {
	if alias != "" {
		alias += "."
	}
	return "(" + alias + "expires_at = 0 OR " + alias + "expires_at - ? > 0)"
}

// liveTarget returns the digest a tag points at, "" if there is no tag:
// a tag past its expiration is gone (liveTag), and a push to its name
// makes it again, even with the digest it held (setTagAs), unless it is
// immutable (an immutable tag does not expire: it stays where it is).
func (db *core) liveTarget(ctx context.Context, tx *sql.Tx, repoID int64, tag string) (string, error) {
	var current string
	var expires int64
	err := tx.QueryRowContext(ctx, db.q("SELECT manifest_digest, expires_at FROM tags WHERE repository_id = ? AND name = ?"), repoID, tag).
		Scan(&current, &expires)
	if errors.Is(err, sql.ErrNoRows) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read tag: %w", err)
	}
	if expires > 0 && expires <= db.now() {
		if err := db.immutable(ctx, tx, repoID, tag); err != nil {
			var ie *ImmutableTagError
			if errors.As(err, &ie) {
				return current, nil
			}
			return "", err
		}
		return "", nil
	}
	return current, nil
}

// replaceExpiredTag ends an expired tag's life (its history at its
// expiration, with the tag_deleted event a pass would append) and points
// its row at d, without an expiration.
func (db *core) replaceExpiredTag(ctx context.Context, tx *sql.Tx, repoID int64, tag, old string, expires int64, d digest.Digest, ts int64) error {
	if err := db.endTagHistoryAt(ctx, tx, repoID, expires, tag); err != nil {
		return err
	}
	var repo string
	if err := tx.QueryRowContext(ctx, db.q("SELECT name FROM repositories WHERE id = ?"), repoID).Scan(&repo); err != nil {
		return fmt.Errorf("look up repository: %w", err)
	}
	if err := db.appendEvent(ctx, tx, Event{Kind: EventTagDeleted, Repository: repo, Actor: expiryActor,
		Data: mustJSON(map[string]any{"tag": tag, "digest": old, "expired": true})}); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, db.q("UPDATE tags SET manifest_digest = ?, updated_at = ?, expires_at = 0 WHERE repository_id = ? AND name = ?"),
		d.String(), ts, repoID, tag); err != nil {
		return fmt.Errorf("set tag: %w", err)
	}
	return nil
}

// expiryActor is the actor of the tag_deleted of an expired tag a push
// replaces (gc.ExpiryActor for those a pass deletes).
const expiryActor = "berth-expiry"

// ListTags returns up to n tags of a repository after last, in lexical
// order, or ErrRepositoryNotFound. Expired tags are left out.
func (db Manifests) ListTags(ctx context.Context, repo, last string, n int) ([]string, error) {
	var repoID int64
	if err := db.read.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), repo).Scan(&repoID); err != nil {
		if errors.Is(err, sql.ErrNoRows) {
			return nil, ErrRepositoryNotFound
		}
		return nil, fmt.Errorf("look up repository: %w", err)
	}
	rows, err := db.read.QueryContext(ctx, db.q("SELECT name FROM tags WHERE repository_id = ? AND name > ? AND "+liveTag("")+" ORDER BY name LIMIT CAST(? AS BIGINT)"),
		repoID, last, db.now(), n)
	if err != nil {
		return nil, fmt.Errorf("list tags: %w", err)
	}
	return scanStrings(rows)
}

// TagInfo is a tag with what the API shows of its manifest.
type TagInfo struct {
	Name      string
	Digest    digest.Digest
	MediaType string
	Size      int64     // the sum of the manifest's blobs (config and layers)
	UpdatedAt time.Time // when the tag (or, in its history, the period) began
	ExpiresAt time.Time // zero: never
	Until     time.Time // in a history: when the period ended; zero while it lasts
	Reversion bool      // the period began with a restore
}

// TagQuery selects tags for TagsPage.
type TagQuery struct {
	Name     string // only this tag
	Contains string // only tags whose names contain this, in any case
	History  bool   // every period of each tag, not the tags that exist now
	Offset   int
	Limit    int
}
