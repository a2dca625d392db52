package meta

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"

	"github.com/opencontainers/go-digest"
)

// gateLockClass is the first key of the PostgreSQL advisory lock that
// serializes candidates and promotions of one guarded tag.
//
// Lock order in a gated repository (PostgreSQL): every transaction that
// touches its candidates or held manifests takes its locks in this order,
// so that no two of them deadlock:
//
//  1. the gate's row: FOR SHARE (guardedTags, gateUnchanged), or written
//     by PutGate and DeleteGate, which then take the repository's row,
//     the held manifests and the live candidates;
//  2. the locks of the guarded tags it touches (lockGuardedTag), in tag
//     order: guardedTags takes those of a push or retag, lockCandidatesOf
//     those of a manifest's live candidates for its delete;
//  3. rows of manifests, tags and candidates (those of one tag's
//     candidates under its lock).
//
// No manifest row before a tag's lock: a promotion releases its manifest
// (UPDATE manifests SET held = 0) holding its tag's lock, and a push that
// had locked the manifest FOR SHARE before waiting for that tag's lock
// deadlocked with it. And a manifest the transaction may release is
// locked as the update locks it from the start (manifestLock).
const gateLockClass = 0x67617465 // "gate"

func (db *core) lockGuardedTag(ctx context.Context, tx *sql.Tx, repoID int64, tag string) error {
	if db.dialect != postgres {
		return nil // SQLite serializes writers
	}
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1, hashtext($2))", gateLockClass, fmt.Sprintf("%d\n%s", repoID, tag)); err != nil {
		return fmt.Errorf("lock guarded tag: %w", err)
	}
	return nil
}

// guardedTags returns the tag patterns of the repository's gate (nil if
// the repository has none), in a push's transaction, and takes the locks
// of the tags of touch that the gate guards, in tag order, before the
// caller locks any manifest (the lock order above).
func (db *core) guardedTags(ctx context.Context, tx *sql.Tx, repoID int64, touch ...string) ([]string, bool, error) {
	var tags string
	lock := ""
	if db.dialect == postgres {
		// Held until the transaction ends: a gate deleted or replaced
		// meanwhile waits, and then sees (releases, withdraws or
		// re-evaluates) what this transaction held or proposed; before,
		// a push racing a DeleteGate left its manifest held for ever.
		lock = " FOR SHARE"
	}
	err := tx.QueryRowContext(ctx, db.q("SELECT tags FROM gates WHERE repository_id = ?"+lock), repoID).Scan(&tags)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("read gate: %w", err)
	}
	var out []string
	if err := json.Unmarshal([]byte(tags), &out); err != nil {
		return nil, false, fmt.Errorf("read gate tags: %w", err)
	}
	for _, tag := range slices.Compact(slices.Sorted(slices.Values(touch))) {
		if tag != "" && matchesTag(out, tag) {
			if err := db.lockGuardedTag(ctx, tx, repoID, tag); err != nil {
				return nil, false, err
			}
		}
	}
	return out, true, nil
}

// manifestLock is the lock (PostgreSQL) of a manifest's row that a
// transaction reads before it may release the manifest (release: an
// update): FOR NO KEY UPDATE, as the update would take, rather than FOR
// SHARE, since two transactions that hold the row FOR SHARE and then both
// update it deadlock (a promotion and a push publishing the manifest).
// Elsewhere (mayRelease false) FOR SHARE: a delete of the manifest waits.
func (db *core) manifestLock(mayRelease bool) string {
	switch {
	case db.dialect != postgres:
		return ""
	case mayRelease:
		return " FOR NO KEY UPDATE"
	}
	return " FOR SHARE"
}

// lockCandidatesOf takes, on PostgreSQL in a gated repository, the locks
// that go before the row of manifest d in a transaction deleting it (the
// lock order above): the gate's row FOR SHARE, then the locks of the tags
// of d's live candidates, which the delete withdraws, in tag order. A
// promotion of one of them holds its tag's lock and its row, and then
// locks the manifest: a delete that locked the manifest first, then
// waited for the candidate's row, deadlocked with it; it now waits for
// the promotion. In an ungated repository it does nothing.
func (db *core) lockCandidatesOf(ctx context.Context, tx *sql.Tx, repoID int64, gated bool, d digest.Digest) error {
	if db.dialect != postgres || !gated {
		return nil // SQLite serializes writers
	}
	if _, gated, err := db.guardedTags(ctx, tx, repoID); err != nil || !gated {
		return err // a gate deleted meanwhile withdrew its candidates
	}
	rows, err := tx.QueryContext(ctx, db.q("SELECT DISTINCT tag FROM gate_candidates WHERE repository_id = ? AND digest = ? AND state IN ('pending', 'blocked')"),
		repoID, d.String())
	if err != nil {
		return fmt.Errorf("list tags of live candidates: %w", err)
	}
	tags, err := scanStrings(rows)
	if err != nil {
		return fmt.Errorf("list tags of live candidates: %w", err)
	}
	slices.Sort(tags) // in Go's order, as guardedTags (not the database's collation)
	for _, tag := range tags {
		if err := db.lockGuardedTag(ctx, tx, repoID, tag); err != nil {
			return err
		}
	}
	return nil
}
