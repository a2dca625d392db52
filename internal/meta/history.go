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

// TagPeriod is one stretch of a tag's history: the digest it pointed to,
// from when until when (Until is zero while it still does).
type TagPeriod struct {
	Tag    string
	Digest digest.Digest
	From   time.Time
	Until  time.Time
}

// recordTagHistory ends the tag's current period and starts one for
// digest, in the transaction that moved the tag.
func (db *core) recordTagHistory(ctx context.Context, tx *sql.Tx, repoID int64, tag, digest string, at int64) error {
	if err := db.endTagHistoryAt(ctx, tx, repoID, at, tag); err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, db.q("INSERT INTO tag_history (repository_id, tag, digest, from_at, until_at) VALUES (?, ?, ?, ?, 0)"),
		repoID, tag, digest, at); err != nil {
		return fmt.Errorf("record tag history: %w", err)
	}
	return nil
}

// endTagHistory ends the current periods of deleted tags.
func (db *core) endTagHistory(ctx context.Context, tx *sql.Tx, repoID int64, tags ...string) error {
	return db.endTagHistoryAt(ctx, tx, repoID, db.now(), tags...)
}

func (db *core) endTagHistoryAt(ctx context.Context, tx *sql.Tx, repoID int64, at int64, tags ...string) error {
	for start := 0; start < len(tags); start += 200 {
		batch := tags[start:min(start+200, len(tags))]
		args := []any{at, repoID}
		for _, t := range batch {
			args = append(args, t)
		}
		q := "UPDATE tag_history SET until_at = ? WHERE repository_id = ? AND until_at = 0 AND tag IN (?" + strings.Repeat(", ?", len(batch)-1) + ")"
		if _, err := tx.ExecContext(ctx, db.q(q), args...); err != nil {
			return fmt.Errorf("end tag history: %w", err)
		}
	}
	return nil
}

// TagHistory returns a tag's periods, newest first, up to n.
func (db Manifests) TagHistory(ctx context.Context, repo, tag string, n int) ([]TagPeriod, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT h.tag, h.digest, h.from_at, h.until_at FROM tag_history h
		JOIN repositories r ON r.id = h.repository_id WHERE r.name = ? AND h.tag = ? ORDER BY h.id DESC LIMIT CAST(? AS BIGINT)`), repo, tag, n)
	if err != nil {
		return nil, fmt.Errorf("tag history: %w", err)
	}
	return scanPeriods(rows)
}

// scanPeriods reads rows of (tag, digest, from_at, until_at).
func scanPeriods(rows *sql.Rows) ([]TagPeriod, error) {
	defer rows.Close()
	var out []TagPeriod
	for rows.Next() {
		var p TagPeriod
		var d string
		var from, until int64
		if err := rows.Scan(&p.Tag, &d, &from, &until); err != nil {
			return nil, fmt.Errorf("read tag periods: %w", err)
		}
		p.Digest, p.From = digest.Digest(d), fromMicros(from)
		if until != 0 {
			p.Until = fromMicros(until)
		}
		out = append(out, p)
	}
	return out, rows.Err()
}

// DeletedTags returns the tags of a repository that no longer exist and
// whose last manifest is still stored (so RestoreTag can put them back),
// each with its last period, the most recently deleted first, up to n. A
// tag past its expiration that no pass has deleted yet is gone too (as
// for a pull, liveTag), and listed, ended at its expiration.
func (db Manifests) DeletedTags(ctx context.Context, repo string, n int) ([]TagPeriod, error) {
	return db.deletedTags(ctx, repo, n, 0)
}

// DeletedTags is Manifests.DeletedTags within the window: the tags
// RestoreTag puts back (restorable), none that ended before it.
func (t TimeMachine) DeletedTags(ctx context.Context, repo string, n int) ([]TagPeriod, error) {
	return t.m.deletedTags(ctx, repo, n, t.m.now()-t.window.Microseconds())
}

// deletedTags lists the deleted tags whose last period ended at or after
// since (microseconds; 0: any), as restorable reads the window, and the
// expired tags no pass has deleted (their period has not ended: a
// restore takes them whatever since). The first are found through
// tag_history_repository_ended, the second through tags_expires.
func (db Manifests) deletedTags(ctx context.Context, repo string, n int, since int64) ([]TagPeriod, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT tag, digest, from_at, ended FROM (
		SELECT h.id, h.tag, h.digest, h.from_at, h.until_at AS ended FROM tag_history h
			JOIN repositories r ON r.id = h.repository_id
			WHERE r.name = ? AND h.until_at > 0 AND h.until_at >= ?
			AND h.id = (SELECT MAX(h2.id) FROM tag_history h2 WHERE h2.repository_id = h.repository_id AND h2.tag = h.tag)
			AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = h.repository_id AND m.digest = h.digest)
		UNION ALL
		SELECT h.id, h.tag, h.digest, h.from_at, t.expires_at FROM tags t
			JOIN repositories r ON r.id = t.repository_id
			JOIN tag_history h ON h.repository_id = t.repository_id AND h.tag = t.name AND h.until_at = 0
			WHERE r.name = ? AND t.expires_at > 0 AND t.expires_at <= ?
			AND EXISTS (SELECT 1 FROM manifests m WHERE m.repository_id = h.repository_id AND m.digest = h.digest)
		) d ORDER BY ended DESC, id DESC LIMIT CAST(? AS BIGINT)`), repo, since, repo, db.now(), n)
	if err != nil {
		return nil, fmt.Errorf("deleted tags: %w", err)
	}
	return scanPeriods(rows)
}

// ErrTagHistoryNotFound is returned when a tag never pointed at a digest,
// or not within the time machine's window.
var ErrTagHistoryNotFound = fmt.Errorf("tag history entry %w", ErrNotFound)

// TimeMachine restores tags within the time machine's window
// (gc.timeMachine), as Quay's restore does: a digest the tag left longer
// ago than the window is past restoring, whether or not garbage
// collection has pruned that period of the tag's history yet.
type TimeMachine struct {
	m      Manifests
	window time.Duration
}

// WithTimeMachine returns the tag restorer bounded by window: a period of
// the tag that ended more than window ago is not restored (0: none that
// ended is).
func (db Manifests) WithTimeMachine(window time.Duration) TimeMachine {
	return TimeMachine{m: db, window: max(window, 0)}
}

// RestoreTag is Manifests.RestoreTag within the window, except that a
// gate's guarded tag may always be rolled back to a digest it was
// promoted to (its rollback tags keep those, for ever).
func (t TimeMachine) RestoreTag(ctx context.Context, repo, tag string, d digest.Digest, actor string) error {
	return t.m.restoreTag(ctx, repo, tag, d, actor, t.m.now()-t.window.Microseconds())
}

// RestoreTag puts a tag back on a digest it pointed at before (Quay's
// restore; a gate's rollback): the digest must be in the tag's history
// (any period garbage collection has not pruned yet: TimeMachine.RestoreTag
// also refuses one past the window) and still stored. The move is a
// repo_push like any other, with an audit entry; an immutable tag is
// refused (*ImmutableTagError).
func (db Manifests) RestoreTag(ctx context.Context, repo, tag string, d digest.Digest, actor string) error {
	return db.restoreTag(ctx, repo, tag, d, actor, 0)
}

// restoreTag restores a period of the tag that lasts or ended at or after
// since (microseconds; 0: any), or a promotion of a guarded tag.
func (db Manifests) restoreTag(ctx context.Context, repo, tag string, d digest.Digest, actor string, since int64) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		repoID, err := db.repoID(ctx, tx, repo)
		if err != nil {
			return err
		}
		// The gate first, then the tag's lock, before the manifest: the
		// lock order at gateLockClass.
		guarded, gated, err := db.guardedTags(ctx, tx, repoID)
		if err != nil {
			return err
		}
		if err := db.lockGuardedTag(ctx, tx, repoID, tag); err != nil {
			return err
		}
		if err := db.restorable(ctx, tx, repoID, tag, d, since, gated && GuardsTag(guarded, tag)); err != nil {
			return err
		}
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
		prev, moved, err := db.setTag(ctx, tx, repoID, tag, d)
		if err != nil || !moved {
			return err
		}
		if _, err := tx.ExecContext(ctx, db.q("UPDATE tag_history SET reversion = 1 WHERE repository_id = ? AND tag = ? AND until_at = 0"), repoID, tag); err != nil {
			return fmt.Errorf("mark the restore in the tag's history: %w", err)
		}
		if err := db.release(ctx, tx, repoID, d); err != nil {
			return err
		}
		// A restore decides the tag: its live candidates are superseded,
		// and, for a guarded tag, the digest it left is rejected: pushes
		// and mirror syncs do not propose it again (a manual promotion
		// may).
		ts := db.now()
		if _, err := tx.ExecContext(ctx, db.q(`UPDATE gate_candidates SET state = ?, decided_at = ? WHERE repository_id = ? AND tag = ? AND state IN ('pending', 'blocked')`),
			CandidateSuperseded, ts, repoID, tag); err != nil {
			return fmt.Errorf("supersede candidates: %w", err)
		}
		if gated && prev != "" && GuardsTag(guarded, tag) {
			reasons := mustJSON([]string{fmt.Sprintf("rolled back by %s: %s restored to %s", actor, tag, d)})
			if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO gate_candidates (repository_id, tag, digest, state, reasons, actor, created_at, decided_at)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?)`), repoID, tag, prev, CandidateRejected, string(reasons), actor, ts, ts); err != nil {
				return fmt.Errorf("reject rolled-back digest: %w", err)
			}
		}
		ev := pushEvent{Digest: d.String(), MediaType: mediaType, Size: size, UpdatedTags: []string{tag}}
		if prev != "" {
			ev.Previous = map[string]string{tag: prev}
		}
		return db.appendEvent(ctx, tx, Event{Kind: EventRepoPush, Repository: repo, Actor: actor, Data: mustJSON(ev)})
	})
}

// restorable reports (nil) whether the tag may go back to d: a period of
// the tag on d lasts or ended at or after since, or, for a guarded tag, d
// was promoted to it (a rollback, whatever its age).
func (db *core) restorable(ctx context.Context, tx *sql.Tx, repoID int64, tag string, d digest.Digest, since int64, guarded bool) error {
	var one int
	err := tx.QueryRowContext(ctx, db.q("SELECT 1 FROM tag_history WHERE repository_id = ? AND tag = ? AND digest = ? AND (until_at = 0 OR until_at >= ?) LIMIT 1"),
		repoID, tag, d.String(), since).Scan(&one)
	if err == nil {
		return nil
	}
	if !errors.Is(err, sql.ErrNoRows) {
		return fmt.Errorf("read tag history: %w", err)
	}
	if guarded {
		err := tx.QueryRowContext(ctx, db.q("SELECT 1 FROM gate_candidates WHERE repository_id = ? AND tag = ? AND digest = ? AND state = ? LIMIT 1"),
			repoID, tag, d.String(), CandidatePromoted).Scan(&one)
		if err == nil {
			return nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("read promotions: %w", err)
		}
	}
	return ErrTagHistoryNotFound
}
