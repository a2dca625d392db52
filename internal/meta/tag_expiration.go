package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/opencontainers/go-digest"
)

// Tag expirations: Quay's, set through the API or by a push's
// quay.expires-after label (bounded as Quay bounds them), the passes that
// end the tags past theirs, and the repo_image_expiry notices before.

// boundExpiration is when a tag that started at start (Unix
// microseconds: its updated_at, the tag list's start_ts, when it was last
// pushed or moved) expires when asked to at at: no sooner than the
// minimum after its start and no later than the maximum after its start
// (but not sooner than the minimum from now, for a tag about that old or
// older), as Quay's change_tag_expiration has it, for the API and the
// label alike.
func (db *core) boundExpiration(start int64, at time.Time) int64 {
	lo, hi := DefaultExpirationMinimum, DefaultExpirationMaximum
	if db.expiry != nil {
		lo, hi = db.expiry[0], db.expiry[1]
	}
	us := at.UnixMicro()
	if lo > 0 {
		us = max(us, start+lo.Microseconds())
	}
	if hi > 0 {
		// From the tag's start, as Quay, but never sooner than the
		// minimum from now: a tag that started about the maximum ago
		// or longer is not ended at once (or in the past, outside the
		// time machine) by a future expiration asked for.
		us = min(us, max(start+hi.Microseconds(), db.now()+lo.Microseconds()))
	}
	return us
}

// SetTagExpiration sets (or, with a zero time, clears) when a tag
// expires, as Quay's PUT .../tag/{tag} {"expiration"} does, bounded
// (boundExpiration). An immutable tag cannot expire (*ImmutableTagError).
func (db Manifests) SetTagExpiration(ctx context.Context, repo, tag string, at time.Time) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		// Before the policies are read: one created meanwhile waits, and
		// then clears this expiration (lockTagPolicies).
		if err := db.lockTagPolicies(ctx, tx, repo, false); err != nil {
			return err
		}
		repoID, err := db.repoID(ctx, tx, repo)
		if errors.Is(err, ErrRepositoryNotFound) {
			return ErrManifestNotFound
		}
		if err != nil {
			return err
		}
		// A tag past its expiration is gone (a pass deletes its row); on
		// PostgreSQL the row is locked, so a pass or a delete that goes
		// first is seen.
		var start int64
		err = tx.QueryRowContext(ctx, db.q("SELECT updated_at FROM tags WHERE repository_id = ? AND name = ? AND "+liveTag("")+db.lockSuffix()),
			repoID, tag, db.now()).Scan(&start)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrManifestNotFound
		}
		if err != nil {
			return fmt.Errorf("read tag: %w", err)
		}
		var us int64
		if !at.IsZero() {
			if err := db.immutable(ctx, tx, repoID, tag); err != nil {
				return err
			}
			us = db.boundExpiration(start, at)
		}
		if _, err := tx.ExecContext(ctx, db.q("UPDATE tags SET expires_at = ? WHERE repository_id = ? AND name = ?"), us, repoID, tag); err != nil {
			return fmt.Errorf("set tag expiration: %w", err)
		}
		return nil
	})
}

// expireFromLabel gives a pushed tag the expiration its image's
// quay.expires-after label asks for, bounded (boundExpiration), unless the
// tag is immutable (an immutable tag takes no expiration, as
// SetTagExpiration refuses one). The push holds the shared lock of the
// tag policies (lockTagPolicies), taken before any tag's row, and the
// tag's, which it has just set.
func (db *core) expireFromLabel(ctx context.Context, tx *sql.Tx, repoID int64, tag string, at time.Time) error {
	if err := db.immutable(ctx, tx, repoID, tag); err != nil {
		var imm *ImmutableTagError
		if errors.As(err, &imm) {
			return nil
		}
		return err
	}
	var start int64
	if err := tx.QueryRowContext(ctx, db.q("SELECT updated_at FROM tags WHERE repository_id = ? AND name = ?"), repoID, tag).Scan(&start); err != nil {
		return fmt.Errorf("read tag: %w", err)
	}
	if _, err := tx.ExecContext(ctx, db.q("UPDATE tags SET expires_at = ? WHERE repository_id = ? AND name = ?"), db.boundExpiration(start, at), repoID, tag); err != nil {
		return fmt.Errorf("set tag expiration: %w", err)
	}
	return nil
}

// ExpiredTag is a tag past its expiration.
type ExpiredTag struct {
	Repository string
	Tag        string
	Digest     digest.Digest
	ExpiresAt  time.Time
}

// ExpiredTags lists up to n tags whose expiration is before now.
func (db Manifests) ExpiredTags(ctx context.Context, now time.Time, n int) ([]ExpiredTag, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT r.name, t.name, t.manifest_digest, t.expires_at FROM tags t JOIN repositories r ON r.id = t.repository_id
		WHERE t.expires_at > 0 AND t.expires_at <= ? ORDER BY t.expires_at LIMIT CAST(? AS BIGINT)`), now.UnixMicro(), n)
	if err != nil {
		return nil, fmt.Errorf("list expired tags: %w", err)
	}
	defer rows.Close()
	var out []ExpiredTag
	for rows.Next() {
		var e ExpiredTag
		var d string
		var at int64
		if err := rows.Scan(&e.Repository, &e.Tag, &d, &at); err != nil {
			return nil, fmt.Errorf("list expired tags: %w", err)
		}
		e.Digest, e.ExpiresAt = digest.Digest(d), fromMicros(at)
		out = append(out, e)
	}
	return out, rows.Err()
}

// ExpireTag deletes a tag whose expiration has passed, if it still
// points where it did and is not immutable: its history ends (the time
// machine can restore it) and tag_deleted is appended with
// "expired": true. It reports whether it deleted the tag.
func (db Manifests) ExpireTag(ctx context.Context, e ExpiredTag, now time.Time, actor string) (bool, error) {
	deleted := false
	err := db.tx(ctx, func(tx *sql.Tx) error {
		deleted = false
		repoID, err := db.repoID(ctx, tx, e.Repository)
		if errors.Is(err, ErrRepositoryNotFound) {
			return nil
		}
		if err != nil {
			return err
		}
		if err := db.immutable(ctx, tx, repoID, e.Tag); err != nil {
			var imm *ImmutableTagError
			if !errors.As(err, &imm) {
				return err
			}
			// Immutable since: it stays, and its expiration goes (else
			// such tags would head the expired list for ever, and once a
			// batch of them filled it no other tag would expire).
			if _, err := tx.ExecContext(ctx, db.q("UPDATE tags SET expires_at = 0 WHERE repository_id = ? AND name = ? AND expires_at > 0 AND expires_at <= ?"),
				repoID, e.Tag, now.UnixMicro()); err != nil {
				return fmt.Errorf("clear the expiration of an immutable tag: %w", err)
			}
			return nil
		}
		// The expiration read is the one deleted (its period ends then, as
		// when a push replaces the expired tag); one changed meanwhile is
		// left to the next pass.
		expires := e.ExpiresAt.UnixMicro()
		res, err := tx.ExecContext(ctx, db.q(`DELETE FROM tags WHERE repository_id = ? AND name = ? AND manifest_digest = ? AND expires_at = ? AND expires_at > 0 AND expires_at <= ?`),
			repoID, e.Tag, e.Digest.String(), expires, now.UnixMicro())
		if err != nil {
			return fmt.Errorf("expire tag: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return nil
		}
		deleted = true
		if err := db.endTagHistoryAt(ctx, tx, repoID, expires, e.Tag); err != nil {
			return err
		}
		return db.appendEvent(ctx, tx, Event{Kind: EventTagDeleted, Repository: e.Repository, Actor: actor,
			Data: mustJSON(map[string]any{"tag": e.Tag, "digest": e.Digest.String(), "expired": true})})
	})
	return deleted, err
}

// ExpiryNotice is a repo_image_expiry event to append for one
// notification and repository.
type expiryNotification struct {
	uuid, scope, target string
	days                int
}

// NoticeExpiringTags appends a repo_image_expiry event, per notification
// of that kind and repository in its scope, for the tags that expire
// within the notification's eventConfig.days (Quay's) and were not
// announced to it yet; each tag and expiration is announced once per
// notification. It returns how many events it appended.
func (db Manifests) NoticeExpiringTags(ctx context.Context, now time.Time) (int, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT uuid, scope, target, event_config FROM notifications WHERE event = ?`), "repo_image_expiry")
	if err != nil {
		return 0, fmt.Errorf("list expiry notifications: %w", err)
	}
	var ns []expiryNotification
	for rows.Next() {
		var n expiryNotification
		var cfg string
		if err := rows.Scan(&n.uuid, &n.scope, &n.target, &cfg); err != nil {
			rows.Close()
			return 0, fmt.Errorf("list expiry notifications: %w", err)
		}
		var c struct {
			Days any `json:"days"`
		}
		json.Unmarshal([]byte(cfg), &c)
		n.days = 7
		switch d := c.Days.(type) {
		case float64:
			n.days = int(d)
		case string:
			if v, err := strconv.Atoi(d); err == nil {
				n.days = v
			}
		}
		if n.days > 0 {
			ns = append(ns, n)
		}
	}
	rows.Close()
	appended := 0
	for _, n := range ns {
		err := db.tx(ctx, func(tx *sql.Tx) error {
			query := `SELECT r.id, r.name, t.name, t.manifest_digest, t.expires_at FROM tags t JOIN repositories r ON r.id = t.repository_id
				WHERE t.expires_at > 0 AND t.expires_at > CAST(? AS BIGINT) AND t.expires_at <= ?
				AND NOT EXISTS (SELECT 1 FROM expiry_notices x WHERE x.notification_uuid = ? AND x.repository_id = t.repository_id AND x.tag = t.name AND x.expires_at = t.expires_at)`
			args := []any{now.UnixMicro(), now.Add(time.Duration(n.days) * 24 * time.Hour).UnixMicro(), n.uuid}
			switch n.scope {
			case "repository":
				query += " AND r.name = ?"
				args = append(args, n.target)
			case "organization":
				query += " AND substr(r.name, 1, ?) = ?"
				args = append(args, len(n.target)+1, n.target+"/")
			}
			rows, err := tx.QueryContext(ctx, db.q(query+" ORDER BY r.name, t.name"), args...)
			if err != nil {
				return fmt.Errorf("list expiring tags: %w", err)
			}
			type hit struct {
				repoID  int64
				repo    string
				tag, dg string
				at      int64
			}
			var hits []hit
			for rows.Next() {
				var h hit
				if err := rows.Scan(&h.repoID, &h.repo, &h.tag, &h.dg, &h.at); err != nil {
					rows.Close()
					return fmt.Errorf("list expiring tags: %w", err)
				}
				hits = append(hits, h)
			}
			rows.Close()
			byRepo := map[string][]hit{}
			var repos []string
			for _, h := range hits {
				// Only the notices this transaction records are announced:
				// another replica's pass may have recorded the same ones
				// since the read (the event would go out twice).
				res, err := tx.ExecContext(ctx, db.q(`INSERT INTO expiry_notices (notification_uuid, repository_id, tag, expires_at) VALUES (?, ?, ?, ?) ON CONFLICT DO NOTHING`),
					n.uuid, h.repoID, h.tag, h.at)
				if err != nil {
					return fmt.Errorf("record expiry notice: %w", err)
				}
				if k, err := res.RowsAffected(); err != nil {
					return fmt.Errorf("record expiry notice: %w", err)
				} else if k == 0 {
					continue
				}
				if _, ok := byRepo[h.repo]; !ok {
					repos = append(repos, h.repo)
				}
				byRepo[h.repo] = append(byRepo[h.repo], h)
			}
			for _, repo := range repos {
				var tags []string
				for _, h := range byRepo[repo] {
					tags = append(tags, h.tag)
				}
				first := byRepo[repo][0]
				if err := db.appendEvent(ctx, tx, Event{Kind: "repo_image_expiry", Repository: repo, Actor: "berth-expiry",
					Data: mustJSON(map[string]any{"tags": tags, "expiring_in": fmt.Sprintf("%d days", n.days), "digest": first.dg,
						"expires_at": fromMicros(first.at).Format(time.RFC3339), "notification_uuid": n.uuid})}); err != nil {
					return err
				}
				appended++
			}
			return nil
		})
		if err != nil {
			return appended, err
		}
	}
	return appended, nil
}
