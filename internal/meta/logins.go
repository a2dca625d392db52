package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"
)

// LoginLimit is one counter of login attempts: at most Limit attempts are
// counted under Key in a window. A window starts at the first attempt
// counted after the previous one has passed.
type LoginLimit struct {
	Key   string
	Limit int
}

// LoginThrottle reads the counters of limits and changes nothing. It
// returns how long until every counter that has reached its limit starts a
// new window: zero when none has.
func (db Access) LoginThrottle(ctx context.Context, window time.Duration, limits ...LoginLimit) (time.Duration, error) {
	if len(limits) == 0 {
		return 0, nil
	}
	args := make([]any, len(limits))
	for i, l := range limits {
		args[i] = l.Key
	}
	marks := strings.TrimSuffix(strings.Repeat("?, ", len(limits)), ", ")
	rows, err := db.read.QueryContext(ctx, db.q("SELECT key, failures, window_start FROM login_failures WHERE key IN ("+marks+")"), args...)
	if err != nil {
		return 0, fmt.Errorf("read login attempts: %w", err)
	}
	defer rows.Close()
	ts := db.now()
	var wait time.Duration
	for rows.Next() {
		var key string
		var n int
		var start int64
		if err := rows.Scan(&key, &n, &start); err != nil {
			return 0, fmt.Errorf("read login attempts: %w", err)
		}
		for _, l := range limits {
			if l.Key == key && n >= l.Limit {
				wait = max(wait, remaining(start, ts, window))
			}
		}
	}
	if err := rows.Err(); err != nil {
		return 0, fmt.Errorf("read login attempts: %w", err)
	}
	return wait, nil
}

// remaining is how long the window that started at start (micros) has to
// run at ts: zero when it has passed, at most window (a concurrent attempt
// may have started it after ts was read).
func remaining(start, ts int64, window time.Duration) time.Duration {
	return min(window, max(0, time.Duration(start+window.Microseconds()-ts)*time.Microsecond))
}

// ReserveLoginAttempt counts one attempt under every key of limits, all or
// none, if each has fewer than its limit counted in its current window (a
// window older than window starts again at this attempt). Each counter is
// tested and incremented in one statement, so concurrent callers never
// count more than the limit between them. When a counter is full nothing
// is counted, and the answer is false with how long until that window ends.
func (db Access) ReserveLoginAttempt(ctx context.Context, window time.Duration, limits ...LoginLimit) (bool, time.Duration, error) {
	// One order of keys for every caller: on PostgreSQL the row locks of
	// two reservations sharing keys are then never taken crosswise.
	sorted := slices.Clone(limits)
	slices.SortFunc(sorted, func(a, b LoginLimit) int { return strings.Compare(a.Key, b.Key) })
	var ok bool
	var wait time.Duration
	err := db.tx(ctx, func(tx *sql.Tx) error {
		ok, wait = false, 0
		ts := db.now()
		cutoff := ts - window.Microseconds()
		for _, l := range sorted {
			var n int
			err := tx.QueryRowContext(ctx, db.q(`INSERT INTO login_failures (key, failures, window_start) VALUES (?, 1, ?)
				ON CONFLICT (key) DO UPDATE SET
					failures = CASE WHEN login_failures.window_start < ? THEN 1 ELSE login_failures.failures + 1 END,
					window_start = CASE WHEN login_failures.window_start < ? THEN excluded.window_start ELSE login_failures.window_start END
				WHERE login_failures.window_start < ? OR login_failures.failures < ?
				RETURNING failures`), l.Key, ts, cutoff, cutoff, cutoff, l.Limit).Scan(&n)
			if errors.Is(err, sql.ErrNoRows) {
				// Full: the row exists and its window is current.
				var start int64
				if err := tx.QueryRowContext(ctx, db.q("SELECT window_start FROM login_failures WHERE key = ?"), l.Key).Scan(&start); err != nil {
					return err
				}
				wait = max(remaining(start, db.now(), window), time.Microsecond)
				return errFull
			}
			if err != nil {
				return err
			}
		}
		ok = true
		return nil
	})
	if errors.Is(err, errFull) {
		return false, wait, nil
	}
	if err != nil {
		return false, 0, fmt.Errorf("reserve login attempt: %w", err)
	}
	return ok, 0, nil
}

// errFull rolls back a reservation that found a counter full.
var errFull = errors.New("login attempts: limit reached")

// ReleaseLoginAttempt gives attempts back under key: its whole count when
// all is set, else one.
func (db Access) ReleaseLoginAttempt(ctx context.Context, key string, all bool) error {
	query := "UPDATE login_failures SET failures = failures - 1 WHERE key = ? AND failures > 0"
	if all {
		query = "DELETE FROM login_failures WHERE key = ?"
	}
	if _, err := db.write.ExecContext(ctx, db.q(query), key); err != nil {
		return fmt.Errorf("release login attempt: %w", err)
	}
	return nil
}
