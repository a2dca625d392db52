package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Retention says how long finished bookkeeping rows are kept.
type Retention struct {
	// Events: outbox events, once every live subscriber of the feed has
	// handled them and no delivery still needs them. A subscriber not
	// seen for longer than this and at least subscriberGone (its feature
	// turned off) no longer holds events back.
	Events   time.Duration
	DoneJobs time.Duration // completed jobs
	DeadJobs time.Duration // dead-lettered jobs
	Attempts time.Duration // notification delivery attempts
	Audit    time.Duration // audit log entries
}

// PruneCounts says how many rows a prune removed (or, dry, would remove).
type PruneCounts struct {
	Events   int64 `json:"events"`
	Jobs     int64 `json:"jobs"`
	Attempts int64 `json:"attempts"`
	Audit    int64 `json:"audit"`
	// Logins: counters of failed logins whose window ended over
	// loginCounterAge ago (kept whatever the retention settings).
	Logins int64 `json:"login_counters"`
	// TagHistory: periods of tags that ended before the time machine's
	// window (Collector.WithTimeMachine); ExpiryNotices: the records of
	// repo_image_expiry notices sent for expirations long past. Both are
	// pruned whatever the retention settings.
	TagHistory    int64 `json:"tag_history"`
	ExpiryNotices int64 `json:"expiry_notices"`
}

// loginCounterAge is how long after its window started a failed-login
// counter is pruned: far past any throttling window (5 minutes), when the
// row counts for nothing (the next failure starts a new window). Every
// made-up name an unauthenticated client tries leaves one.
const loginCounterAge = time.Hour

// pruneBatch is how many rows one prune statement removes, so that a long
// backlog never holds SQLite's write lock for long.
const pruneBatch = 1000

// Prune removes bookkeeping rows older than their retention: outbox
// events that every live subscriber of the feed has handled and no live
// delivery job still needs, completed and
// dead-lettered jobs, notification attempts and audit entries. A zero
// duration keeps that kind forever. Periods of tags that ended before the
// time machine's window, and dead records of expiry notices, go whatever
// the retention. Oldest rows go first, walked by
// primary key; with dry set nothing is deleted and the counts say what
// would be.
func (db Collector) Prune(ctx context.Context, r Retention, dry bool) (PruneCounts, error) {
	var c PruneCounts
	var err error
	ts := db.nowTime()
	if r.Events > 0 {
		if c.Events, err = db.pruneEvents(ctx, ts.Add(-r.Events), dry); err != nil {
			return c, err
		}
	}
	for _, j := range []struct {
		status string
		keep   time.Duration
	}{{JobDone, r.DoneJobs}, {JobDead, r.DeadJobs}} {
		if j.keep <= 0 {
			continue
		}
		// The newest job of each queue stays, whatever its age: schedulers
		// (the vulnerability-data update) read when they last ran from it.
		cond := "status = '" + j.status + "' AND id NOT IN (SELECT MAX(id) FROM jobs GROUP BY queue)"
		n, err := db.pruneByID(ctx, "jobs", "updated_at", cond, ts.Add(-j.keep), dry, nil)
		c.Jobs += n
		if err != nil {
			return c, err
		}
	}
	if r.Attempts > 0 {
		if c.Attempts, err = db.pruneByID(ctx, "notification_attempts", "attempted_at", "", ts.Add(-r.Attempts), dry, nil); err != nil {
			return c, err
		}
	}
	if r.Audit > 0 {
		if c.Audit, err = db.pruneByID(ctx, "audit_log", "created_at", "", ts.Add(-r.Audit), dry, nil); err != nil {
			return c, err
		}
	}
	if c.Logins, err = db.pruneLoginCounters(ctx, ts.Add(-loginCounterAge), dry); err != nil {
		return c, err
	}
	// The time machine's window bounds the tags' history, as Quay's
	// garbage collection deletes the tags whose lifetime ended before the
	// namespace's window: a tag moved back and forth adds a period per
	// move, and Quay's tag list, the activity page and restore read them.
	if c.TagHistory, err = db.pruneBatched(ctx, "tag_history", "id", "until_at > 0 AND until_at < ?", "until_at", ts.Add(-db.timeMachine), dry); err != nil {
		return c, err
	}
	if c.ExpiryNotices, err = db.pruneBatched(ctx, "expiry_notices", "notification_uuid, repository_id, tag, expires_at", "expires_at < ?", "expires_at",
		ts.Add(-expiryNoticeAge), dry); err != nil {
		return c, err
	}
	return c, nil
}

// expiryNoticeAge is how long after the expiration it announced a
// repo_image_expiry notice's record is pruned. Passes announce only
// expirations still ahead of them, so the record is dead once its
// expiration has passed; the margin covers a pass of another replica
// that started (and read the time) before it did.
const expiryNoticeAge = time.Hour

// pruneBatched deletes the rows of table that match cond (one ?, cutoff),
// a batch at a time, in the order of column: key is the table's primary
// key (one column, or several for a row value).
func (db *core) pruneBatched(ctx context.Context, table, key, cond, column string, cutoff time.Time, dry bool) (int64, error) {
	if dry {
		var n int64
		if err := db.read.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM "+table+" WHERE "+cond), cutoff.UnixMicro()).Scan(&n); err != nil {
			return 0, fmt.Errorf("count %s to prune: %w", table, err)
		}
		return n, nil
	}
	keyExpr := key
	if strings.Contains(key, ",") {
		keyExpr = "(" + key + ")" // a row value
	}
	query := "DELETE FROM " + table + " WHERE " + cond + " AND " + keyExpr + " IN (SELECT " + key + " FROM " + table +
		" WHERE " + cond + " ORDER BY " + column + " LIMIT CAST(? AS BIGINT))"
	var total int64
	for {
		res, err := db.write.ExecContext(ctx, db.q(query), cutoff.UnixMicro(), cutoff.UnixMicro(), pruneBatch)
		if err != nil {
			return total, fmt.Errorf("prune %s: %w", table, err)
		}
		n, err := res.RowsAffected()
		if err != nil {
			return total, fmt.Errorf("prune %s: %w", table, err)
		}
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}

// pruneLoginCounters deletes failed-login counters whose window started
// before cutoff, a batch at a time.
func (db *core) pruneLoginCounters(ctx context.Context, cutoff time.Time, dry bool) (int64, error) {
	if dry {
		var n int64
		err := db.read.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM login_failures WHERE window_start < ?"), cutoff.UnixMicro()).Scan(&n)
		if err != nil {
			return 0, fmt.Errorf("count login counters: %w", err)
		}
		return n, nil
	}
	var total int64
	for {
		res, err := db.write.ExecContext(ctx, db.q(`DELETE FROM login_failures WHERE window_start < ? AND key IN
			(SELECT key FROM login_failures WHERE window_start < ? ORDER BY window_start LIMIT CAST(? AS BIGINT))`), cutoff.UnixMicro(), cutoff.UnixMicro(), pruneBatch)
		if err != nil {
			return total, fmt.Errorf("prune login counters: %w", err)
		}
		n, _ := res.RowsAffected()
		total += n
		if n < pruneBatch {
			return total, nil
		}
	}
}

// pruneByID deletes the rows of table whose time column is before cutoff
// (and that match cond), oldest id first, a batch at a time, walking the
// primary key; rows for which spare (if set) is true stay.
func (db *core) pruneByID(ctx context.Context, table, column, cond string, cutoff time.Time, dry bool, spare func(id int64) bool) (int64, error) {
	where := column + " < ?"
	if cond != "" {
		where += " AND " + cond
	}
	var total int64
	after := int64(0)
	for {
		rows, err := db.read.QueryContext(ctx, db.q("SELECT id FROM "+table+" WHERE id > ? AND "+where+" ORDER BY id LIMIT CAST(? AS BIGINT)"),
			after, cutoff.UnixMicro(), pruneBatch)
		if err != nil {
			return total, fmt.Errorf("prune %s: %w", table, err)
		}
		ids, err := scanInt64s(rows)
		if err != nil {
			return total, fmt.Errorf("prune %s: %w", table, err)
		}
		if len(ids) == 0 {
			return total, nil
		}
		after = ids[len(ids)-1]
		if spare != nil {
			ids = slices.DeleteFunc(ids, spare)
			if len(ids) == 0 {
				continue
			}
		}
		if dry {
			total += int64(len(ids))
			continue
		}
		n, err := db.deleteIDs(ctx, table, where, cutoff, ids)
		total += n
		if err != nil {
			return total, err
		}
	}
}

// deleteIDs deletes the listed rows, re-checking the condition.
func (db *core) deleteIDs(ctx context.Context, table, where string, cutoff time.Time, ids []int64) (int64, error) {
	args := make([]any, 0, len(ids)+1)
	args = append(args, cutoff.UnixMicro())
	for _, id := range ids {
		args = append(args, id)
	}
	res, err := db.write.ExecContext(ctx, db.q("DELETE FROM "+table+" WHERE "+where+" AND id IN ("+placeholders(len(ids))+")"), args...)
	if err != nil {
		return 0, fmt.Errorf("prune %s: %w", table, err)
	}
	return res.RowsAffected()
}

// subscriberGone is the least time a feed subscriber must go unseen
// (Outbox.Subscribe marks it alive every minute while it runs) before
// pruning stops waiting for it: a feature turned off (scanning, say) must
// not keep the outbox growing forever, and a process down for a while
// must find its events when it comes back.
const subscriberGone = 7 * 24 * time.Hour

// pruneEvents deletes events created before cutoff that every live
// subscriber of the feed has handled (one not seen since cutoff, nor for
// subscriberGone, is not waited for), except those a live notification
// delivery still needs (a held delivery reads its event when it finally
// runs). Events not numbered yet are never pruned.
func (db *core) pruneEvents(ctx context.Context, cutoff time.Time, dry bool) (int64, error) {
	needed, err := db.liveDeliveryEvents(ctx)
	if err != nil {
		return 0, err
	}
	seen := db.nowTime().Add(-subscriberGone)
	if cutoff.Before(seen) {
		seen = cutoff
	}
	var floor sql.NullInt64
	if err := db.read.QueryRowContext(ctx, db.q("SELECT MIN(position) FROM feed_cursors WHERE seen_at >= ?"), seen.UnixMicro()).Scan(&floor); err != nil {
		return 0, fmt.Errorf("prune events: read cursors: %w", err)
	}
	if !floor.Valid {
		if err := db.read.QueryRowContext(ctx, "SELECT position FROM feed_head WHERE id = 1").Scan(&floor); err != nil {
			return 0, fmt.Errorf("prune events: read feed head: %w", err)
		}
	}
	cond := "position <= " + strconv.FormatInt(floor.Int64, 10)
	return db.pruneByID(ctx, "events", "created_at", cond, cutoff, dry, func(id int64) bool { return needed[id] })
}

// liveDeliveryEvents returns the events that pending or running
// notification deliveries refer to. Deliveries are enqueued only for
// events that exist, so an event missing from this set when it is pruned
// can never be asked for again.
func (db *core) liveDeliveryEvents(ctx context.Context) (map[int64]bool, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT payload FROM jobs WHERE queue = ? AND status IN ('pending', 'running')"), NotifyQueue)
	if err != nil {
		return nil, fmt.Errorf("live deliveries: %w", err)
	}
	defer rows.Close()
	out := map[int64]bool{}
	for rows.Next() {
		var payload string
		if err := rows.Scan(&payload); err != nil {
			return nil, fmt.Errorf("live deliveries: %w", err)
		}
		var dj DeliveryJob
		if json.Unmarshal([]byte(payload), &dj) == nil && dj.EventID != 0 {
			out[dj.EventID] = true
		}
	}
	return out, rows.Err()
}

func scanInt64s(rows *sql.Rows) ([]int64, error) {
	defer rows.Close()
	var out []int64
	for rows.Next() {
		var v int64
		if err := rows.Scan(&v); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}
