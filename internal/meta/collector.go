package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"hash/fnv"
	"slices"
	"time"

	"github.com/opencontainers/go-digest"
)

// gcSchema is migration 10: blobs garbage collection condemned (their rows
// deleted) whose bytes are still to be deleted from storage.
const gcSchema = `
CREATE TABLE gc_blob_deletes (
	digest TEXT PRIMARY KEY,
	queued_at BIGINT NOT NULL
);
`

// uploadActorSchema is migration 11: who opened each upload session, for
// the per-identity cap on open uploads.
const uploadActorSchema = `
ALTER TABLE uploads ADD COLUMN actor TEXT NOT NULL DEFAULT '';
CREATE INDEX uploads_actor ON uploads(actor);
`

// linkedAtSchema is migration 35: when each repository's link to a blob
// was first made (linked_at; created_at is when it was made or last
// confirmed). 0 is a link made before this migration, or by a binary
// before it (a replica still running during a rolling upgrade):
// linkFirstMade reads its created_at instead (the only time an earlier
// version kept), and its next confirmation or link dates it so. No row is
// rewritten: on PostgreSQL the column with its constant default is a
// change of the catalog, whatever the table's size.
const linkedAtSchema = `
ALTER TABLE repository_blobs ADD COLUMN linked_at BIGINT NOT NULL DEFAULT 0
`

// lockDigest serializes, across processes, everything that places or
// deletes the bytes of one digest: on PostgreSQL a transaction-scoped
// advisory lock keyed by the digest; SQLite serializes all writers.
func (db *core) lockDigest(ctx context.Context, tx *sql.Tx, d digest.Digest) error {
	if db.dialect != postgres {
		return nil
	}
	h := fnv.New64a()
	h.Write([]byte(d.String()))
	if _, err := tx.ExecContext(ctx, "SELECT pg_advisory_xact_lock($1)", int64(h.Sum64())); err != nil {
		return fmt.Errorf("lock digest: %w", err)
	}
	return nil
}

// GCCandidate is something garbage collection may remove.
type GCCandidate struct {
	RepositoryID int64
	Repository   string
	Digest       digest.Digest
	Size         int64
}

// DanglingManifests returns up to n manifests created before cutoff that
// no tag, no manifest of their repository (an index) and no stored
// subject keeps, nor the pull-through cache (proxyKept).
func (db Collector) DanglingManifests(ctx context.Context, cutoff time.Time, n int) ([]GCCandidate, error) {
	now := db.now()
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT m.repository_id, r.name, m.digest, m.size FROM manifests m
		JOIN repositories r ON r.id = m.repository_id
		WHERE m.created_at < ? AND m.confirmed_at < ? AND NOT `+proxyKept+`
		AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.repository_id = m.repository_id AND t.manifest_digest = m.digest)
		AND NOT EXISTS (SELECT 1 FROM manifest_references x WHERE x.repository_id = m.repository_id AND x.ref_digest = m.digest)
		AND (m.subject IS NULL OR NOT EXISTS (SELECT 1 FROM manifests s WHERE s.repository_id = m.repository_id AND s.digest = m.subject))
		AND NOT EXISTS (SELECT 1 FROM gate_candidates c WHERE c.repository_id = m.repository_id AND c.digest = m.digest AND c.state IN ('pending', 'blocked'))
		AND NOT EXISTS (SELECT 1 FROM tag_history h WHERE h.repository_id = m.repository_id AND h.digest = m.digest AND h.until_at > CAST(? AS BIGINT))
		ORDER BY m.created_at LIMIT CAST(? AS BIGINT)`), cutoff.UnixMicro(), cutoff.UnixMicro(), now, now, db.restorableSince(), n)
	if err != nil {
		return nil, fmt.Errorf("dangling manifests: %w", err)
	}
	return scanCandidates(rows)
}

// proxyKept is the condition on a manifest m of repository r for the
// pull-through cache to keep it whatever else: in an organization that is
// a proxy cache, stored or last confirmed less than the organization's
// expiration ago (its arguments: now, twice). A pull by digest stores a
// manifest with no tag to keep it, and each later pull (a GET or HEAD by
// digest) confirms it, every half gc.delay at most: what is pulled by
// digest stays cached for the expiration after its last pull, as a
// cached tag is served for the expiration after its last check (and then
// as long as the delay keeps anything unreferenced).
const proxyKept = `EXISTS (SELECT 1 FROM proxy_caches p JOIN namespaces n ON n.id = p.namespace_id
		WHERE r.name > (n.name || '/') AND r.name < (n.name || '0')
		AND (m.created_at > ? - p.expiration_s * 1000000 OR m.confirmed_at > ? - p.expiration_s * 1000000))`

// CollectManifests deletes, in one transaction, each candidate that,
// locked, is still a dangling manifest (created before cutoff, no tag, no
// parent, no stored subject, not kept by the pull-through cache). It
// returns how many it deleted.
func (db Collector) CollectManifests(ctx context.Context, cands []GCCandidate, cutoff time.Time) (int, error) {
	restorable := db.restorableSince()
	return db.inBatch(ctx, len(cands), func(tx *sql.Tx, i int) error {
		return db.collectManifestTx(ctx, tx, cands[i].RepositoryID, cands[i].Digest, cutoff, restorable)
	})
}

// restorableSince is the time machine's start: a manifest a tag left
// after it (until_at greater) is kept.
func (db Collector) restorableSince() int64 {
	if db.timeMachine <= 0 {
		return 1 << 62 // nothing is kept for restore
	}
	return db.now() - db.timeMachine.Microseconds()
}

// collectManifestTx deletes the manifest or returns errKept.
func (db *core) collectManifestTx(ctx context.Context, tx *sql.Tx, repoID int64, d digest.Digest, cutoff time.Time, restorable int64) error {
	lock := ""
	if db.dialect == postgres {
		lock = " FOR UPDATE"
	}
	var subject sql.NullString
	err := tx.QueryRowContext(ctx, db.q("SELECT subject FROM manifests WHERE repository_id = ? AND digest = ? AND created_at < ? AND confirmed_at < ?"+lock),
		repoID, d.String(), cutoff.UnixMicro(), cutoff.UnixMicro()).Scan(&subject)
	if errors.Is(err, sql.ErrNoRows) {
		return errKept
	}
	if err != nil {
		return fmt.Errorf("lock manifest: %w", err)
	}
	// Re-checked a statement after the lock: a push that tagged it or
	// listed it (and held it FOR SHARE) has committed by now.
	var kept int
	now := db.now()
	if err := tx.QueryRowContext(ctx, db.q(`SELECT
		(SELECT COUNT(*) FROM tags WHERE repository_id = ? AND manifest_digest = ?) +
		(SELECT COUNT(*) FROM manifest_references WHERE repository_id = ? AND ref_digest = ?) +
		(SELECT COUNT(*) FROM gate_candidates WHERE repository_id = ? AND digest = ? AND state IN ('pending', 'blocked')) +
		(SELECT COUNT(*) FROM tag_history WHERE repository_id = ? AND digest = ? AND until_at > CAST(? AS BIGINT)) +
		(SELECT COUNT(*) FROM manifests m JOIN repositories r ON r.id = m.repository_id WHERE m.repository_id = ? AND m.digest = ? AND `+proxyKept+`)`),
		repoID, d.String(), repoID, d.String(), repoID, d.String(), repoID, d.String(), restorable, repoID, d.String(), now, now).Scan(&kept); err != nil {
		return fmt.Errorf("re-check manifest: %w", err)
	}
	if kept > 0 {
		return errKept
	}
	if subject.Valid {
		var one int
		err := tx.QueryRowContext(ctx, db.q("SELECT 1 FROM manifests WHERE repository_id = ? AND digest = ?"), repoID, subject.String).Scan(&one)
		if err == nil {
			return errKept // a referrer of a stored subject
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("re-check subject: %w", err)
		}
	}
	if err := db.restartLinkCap(ctx, tx, repoID, d.String(), false, false); err != nil {
		return err // errKept: a link it references is held
	}
	if err := db.quotaUnref(ctx, tx, repoID, "", d.String()); err != nil { // namespace quota
		return err
	}
	if _, err := tx.ExecContext(ctx, db.q("DELETE FROM manifest_references WHERE repository_id = ? AND manifest_digest = ?"), repoID, d.String()); err != nil {
		return fmt.Errorf("delete manifest references: %w", err)
	}
	if _, err := tx.ExecContext(ctx, db.q("DELETE FROM manifests WHERE repository_id = ? AND digest = ?"), repoID, d.String()); err != nil {
		return fmt.Errorf("delete manifest: %w", err)
	}
	return nil
}

// inBatch runs step for items 0..n-1 in one transaction, each inside a
// savepoint: an item found kept (errKept) rolls back its own step only.
// It returns how many steps removed something.
func (db *core) inBatch(ctx context.Context, n int, step func(tx *sql.Tx, i int) error) (int, error) {
	done := 0
	err := db.tx(ctx, func(tx *sql.Tx) error {
		done = 0
		for i := range n {
			if _, err := tx.ExecContext(ctx, "SAVEPOINT gc_item"); err != nil {
				return fmt.Errorf("savepoint: %w", err)
			}
			err := step(tx, i)
			if errors.Is(err, errKept) {
				if _, err := tx.ExecContext(ctx, "ROLLBACK TO SAVEPOINT gc_item"); err != nil {
					return fmt.Errorf("rollback to savepoint: %w", err)
				}
			} else if errors.Is(err, errRequeued) {
				// not done; its writes stay
			} else if err != nil {
				return err
			} else {
				done++
			}
			if _, err := tx.ExecContext(ctx, "RELEASE SAVEPOINT gc_item"); err != nil {
				return fmt.Errorf("release savepoint: %w", err)
			}
		}
		return nil
	})
	return done, err
}

// StaleLinks returns up to n blob links that no manifest of their
// repository references and that are stale (staleLink): created (or last
// confirmed) before cutoff in repositories with no upload in progress
// (uploadingSince), or first made before firstLinkedBefore, whatever
// their confirmations and the uploads.
func (db Collector) StaleLinks(ctx context.Context, cutoff, firstLinkedBefore time.Time, n int) ([]GCCandidate, error) {
	rows, err := db.read.QueryContext(ctx, db.q(staleLinksQuery()), staleLinkArgs(firstLinkedBefore, cutoff, db.now(), n)...)
	if err != nil {
		return nil, fmt.Errorf("stale links: %w", err)
	}
	return scanCandidates(rows)
}

// staleLinksQuery is StaleLinks' statement (staleLinkArgs, then the
// limit).
func staleLinksQuery() string {
	return `SELECT rb.repository_id, r.name, rb.digest, b.size FROM repository_blobs rb
		JOIN repositories r ON r.id = rb.repository_id
		JOIN blobs b ON b.digest = rb.digest
		WHERE ` + staleLink("r.name") + `
		AND NOT EXISTS (SELECT 1 FROM manifest_references x WHERE x.repository_id = rb.repository_id AND x.ref_digest = rb.digest)
		ORDER BY rb.created_at LIMIT CAST(? AS BIGINT)`
}

// staleLink is the condition on a link rb, in the repository named
// repoName, for garbage collection to remove it if nothing references it
// (staleLinkArgs gives its arguments). A link first made longer ago than
// gc.uploadExpiry is stale whatever else (firstLinkedBefore): a client
// that confirms a link (a HEAD, an upload of the same blob) moves its
// created_at, and an upload session lives while it is written to, but an
// unreferenced blob counts in no namespace's quota, so confirmations and
// uploads must not keep it forever; a push that is not abandoned needs
// no unreferenced link older than its uploads. Otherwise a link is stale
// once created (or last confirmed) before the delay's cutoff, in a
// repository with no upload in progress. Both times are read on the row
// (on PostgreSQL a delete that waited for a confirmation re-checks them
// on the confirmed row). StaleLinks reads the links' table once either
// way: what no manifest references is found by reading every link
// (there is no index to find it by).
func staleLink(repoName string) string {
	return `(` + linkFirstMade + ` < ? OR (rb.created_at < ? AND ` + repoName + ` NOT IN (` + uploadingSince + `)))`
}

// restartLinkCap dates now, as if first made now, the repository's links
// to the blobs a manifest references (withGenerated: and those of the
// referrers stored to go with it, deleteGeneratedReferrers'), before its
// references are deleted: the cap on unreferenced links (linkFirstMade)
// runs from when a link last lost a reference, not from when it was
// made. A layer linked months ago and referenced until a minute ago is
// not stale because a client HEADs it to push it again.
//
// On PostgreSQL every such link must be dated, including a row another
// transaction holds at that moment: a HEAD confirming it, the blob
// uploaded, mounted or copied again, a push naming it that may yet roll
// back (a held row skipped kept its old date, and the same pass took the
// link under the cap). With wait, held rows are waited for, in digest
// order (a push locks the links it names in that order too, FOR SHARE,
// before any manifest row or the namespace's usage row: so a caller waits
// here before it locks the manifest or counts its quota, as
// DeleteManifest does, and no push waits for it meanwhile). Without wait
// (garbage collection, which locked the manifest and must not wait for a
// push that may wait for that lock), held rows are skipped and, if any
// was, errKept keeps the manifest for the next pass.
func (db *core) restartLinkCap(ctx context.Context, tx *sql.Tx, repoID int64, manifest string, withGenerated, wait bool) error {
	refs := "SELECT ref_digest FROM manifest_references WHERE repository_id = ? AND is_manifest = 0 AND manifest_digest = ?"
	args := []any{repoID, manifest}
	if withGenerated {
		refs = `SELECT ref_digest FROM manifest_references WHERE repository_id = ? AND is_manifest = 0 AND (manifest_digest = ?
			OR manifest_digest IN (SELECT digest FROM manifests WHERE repository_id = ? AND subject = ? AND deleted_with_subject = 1))`
		args = append(args, repoID, manifest)
	}
	lock := ""
	if db.dialect == postgres {
		lock = " ORDER BY rb.digest FOR UPDATE"
		if !wait {
			lock += " SKIP LOCKED"
		}
	}
	res, err := tx.ExecContext(ctx, db.q(`UPDATE repository_blobs SET linked_at = ? WHERE repository_id = ? AND digest IN (
		SELECT rb.digest FROM repository_blobs rb WHERE rb.repository_id = ? AND rb.digest IN (`+refs+`)`+lock+`)`),
		append([]any{db.now(), repoID, repoID}, args...)...)
	if err != nil {
		return fmt.Errorf("date the links a manifest referenced: %w", err)
	}
	if wait || db.dialect != postgres {
		return nil // SQLite serializes writers: no row was held
	}
	// Read after the update: a link made meanwhile is counted (and the
	// manifest kept, harmlessly); one the update dated is held until
	// this transaction ends.
	dated, _ := res.RowsAffected()
	var links int64
	if err := tx.QueryRowContext(ctx, db.q("SELECT COUNT(*) FROM repository_blobs WHERE repository_id = ? AND digest IN ("+refs+")"),
		append([]any{repoID}, args...)...).Scan(&links); err != nil {
		return fmt.Errorf("count the links a manifest referenced: %w", err)
	}
	if dated < links {
		return errKept // a link is held: dated by the next pass
	}
	return nil
}

// linkFirstMade is when the link rb was first made: its linked_at, or,
// for a link made by a binary before migration 35, its created_at.
const linkFirstMade = `CASE WHEN rb.linked_at > 0 THEN rb.linked_at ELSE rb.created_at END`

// staleLinkArgs are staleLink's arguments (now is the store's), then
// more.
func staleLinkArgs(firstLinkedBefore, cutoff time.Time, now int64, more ...any) []any {
	return append([]any{firstLinkedBefore.UnixMicro(), cutoff.UnixMicro(), cutoff.UnixMicro(), now}, more...)
}

// uploadingSince selects the repositories with an upload in progress:
// an upload session written since a time (the first argument, the
// collection's cutoff) or claimed until after another (the second, now:
// a writer streaming one long PATCH renews its claim and writes the
// session only at the end). A slow push links its first layers as each
// upload finishes, long before its manifest names them; while the push
// goes on, its repository's unreferenced links are not stale (up to
// gc.uploadExpiry after they were first made: staleLink). The
// subquery does not depend on the outer row: both dialects read the
// uploads table once per statement (uploads has no index on repository
// or updated_at; it holds only the open sessions, which expire after
// gc.uploadExpiry and are capped per identity).
const uploadingSince = `SELECT u.repository FROM uploads u WHERE u.updated_at >= ? OR u.locked_until > ?`

// errKept rolls back a collection whose re-check found a reference.
var errKept = errors.New("kept")

// CollectLinks removes, in one transaction, each candidate blob link that
// is still stale (as StaleLinks finds them: a link whose repository has
// an upload in progress since StaleLinks read it is kept, unless it was
// first made before firstLinkedBefore) and unreferenced. A row is
// deleted first (on PostgreSQL that waits for a push holding it FOR
// SHARE), then the references are read in a later statement, which sees
// that push's manifest: the link stays if anything references it.
func (db Collector) CollectLinks(ctx context.Context, cands []GCCandidate, cutoff, firstLinkedBefore time.Time) (int, error) {
	return db.inBatch(ctx, len(cands), func(tx *sql.Tx, i int) error {
		repoID, d := cands[i].RepositoryID, cands[i].Digest
		res, err := tx.ExecContext(ctx, db.q(collectLinkStmt()), append([]any{repoID, d.String()}, staleLinkArgs(firstLinkedBefore, cutoff, db.now())...)...)
		if err != nil {
			return fmt.Errorf("collect link: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errKept
		}
		var one int
		err = tx.QueryRowContext(ctx, db.q("SELECT 1 FROM manifest_references WHERE repository_id = ? AND ref_digest = ? LIMIT 1"), repoID, d.String()).Scan(&one)
		if err == nil {
			return errKept
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("re-check link: %w", err)
		}
		return nil
	})
}

// collectLinkStmt is CollectLinks' delete of one link (its repository
// and digest, then staleLinkArgs).
func collectLinkStmt() string {
	return `DELETE FROM repository_blobs AS rb WHERE rb.repository_id = ? AND rb.digest = ?
		AND ` + staleLink("(SELECT r.name FROM repositories r WHERE r.id = rb.repository_id)")
}

// OrphanBlobs returns up to n blobs recorded before cutoff that no
// repository links.
func (db Collector) OrphanBlobs(ctx context.Context, cutoff time.Time, n int) ([]GCCandidate, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT 0, '', b.digest, b.size FROM blobs b
		WHERE b.created_at < ? AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = b.digest)
		ORDER BY b.created_at LIMIT CAST(? AS BIGINT)`), cutoff.UnixMicro(), n)
	if err != nil {
		return nil, fmt.Errorf("orphan blobs: %w", err)
	}
	return scanCandidates(rows)
}

// CondemnBlobs deletes, in one transaction, the row of each blob that,
// under its digest's lock, is still recorded before cutoff and linked
// nowhere, and queues its bytes for deletion (FinishBlobDeletes). The
// digests' locks are taken in sorted order.
func (db Collector) CondemnBlobs(ctx context.Context, ds []digest.Digest, cutoff time.Time) (int, error) {
	ds = slices.Sorted(slices.Values(ds))
	return db.inBatch(ctx, len(ds), func(tx *sql.Tx, i int) error {
		d := ds[i]
		if err := db.lockDigest(ctx, tx, d); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, db.q(`DELETE FROM blobs WHERE digest = ? AND created_at < ?
			AND NOT EXISTS (SELECT 1 FROM repository_blobs rb WHERE rb.digest = blobs.digest)`), d.String(), cutoff.UnixMicro())
		if foreignKeyViolation(err) {
			// On PostgreSQL, a link committed while this delete waited on
			// the row is not in the statement's snapshot, but its foreign
			// key refuses the delete: the blob is linked, so kept (the
			// savepoint's rollback clears the error; the rest of the batch
			// goes on).
			return errKept
		}
		if err != nil {
			return fmt.Errorf("condemn blob: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errKept
		}
		// Links are created only with the blob row locked FOR SHARE
		// (linkBlob), so one committed while this delete waited is seen by
		// this later statement.
		var one int
		err = tx.QueryRowContext(ctx, db.q("SELECT 1 FROM repository_blobs WHERE digest = ? LIMIT 1"), d.String()).Scan(&one)
		if err == nil {
			return errKept
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("re-check blob: %w", err)
		}
		if err := db.quotaBlobCondemned(ctx, tx, d); err != nil { // namespace quota
			return err
		}
		if _, err := tx.ExecContext(ctx, db.q("INSERT INTO gc_blob_deletes (digest, queued_at) VALUES (?, ?) ON CONFLICT (digest) DO NOTHING"),
			d.String(), db.now()); err != nil {
			return fmt.Errorf("queue blob delete: %w", err)
		}
		return nil
	})
}

// PendingBlobDeletes returns up to n condemned blobs whose bytes are still
// to be deleted.
func (db Collector) PendingBlobDeletes(ctx context.Context, n int) ([]digest.Digest, error) {
	rows, err := db.read.QueryContext(ctx, db.q("SELECT digest FROM gc_blob_deletes ORDER BY queued_at LIMIT CAST(? AS BIGINT)"), n)
	if err != nil {
		return nil, fmt.Errorf("pending blob deletes: %w", err)
	}
	ds, err := scanStrings(rows)
	if err != nil {
		return nil, fmt.Errorf("pending blob deletes: %w", err)
	}
	out := make([]digest.Digest, len(ds))
	for i, d := range ds {
		out[i] = digest.Digest(d)
	}
	return out, nil
}

// FinishBlobDeletes deletes condemned blobs' bytes (remove) under their
// digests' locks, taken in sorted order, where the deletion is still
// pending (a re-upload settles it itself, see StoreBlob), and ends them,
// in one transaction. A failed removal stays queued, behind the others
// (queued again now), and the rest of the batch goes on: one blob whose
// bytes cannot be deleted (a permission, an object lock) must not stop
// every deletion behind it. The failures are returned, joined, with the
// count of those finished (removing bytes twice is harmless).
func (db Collector) FinishBlobDeletes(ctx context.Context, ds []digest.Digest, remove func(context.Context, digest.Digest) error) (int, error) {
	ds = slices.Sorted(slices.Values(ds))
	var failed []error
	n, err := db.inBatch(ctx, len(ds), func(tx *sql.Tx, i int) error {
		if i == 0 {
			failed = nil // the transaction may run again
		}
		d := ds[i]
		if err := db.lockDigest(ctx, tx, d); err != nil {
			return err
		}
		res, err := tx.ExecContext(ctx, db.q("DELETE FROM gc_blob_deletes WHERE digest = ?"), d.String())
		if err != nil {
			return fmt.Errorf("finish blob delete: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return errKept
		}
		if err := remove(ctx, d); err != nil {
			failed = append(failed, fmt.Errorf("delete the bytes of %s: %w", d, err))
			if _, err := tx.ExecContext(ctx, db.q("INSERT INTO gc_blob_deletes (digest, queued_at) VALUES (?, ?)"), d.String(), db.now()); err != nil {
				return fmt.Errorf("queue blob delete again: %w", err)
			}
			return errRequeued
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	return n, errors.Join(failed...)
}

// errRequeued ends a step whose work is queued again: not done, and its
// writes kept.
var errRequeued = errors.New("queued again")

func scanCandidates(rows *sql.Rows) ([]GCCandidate, error) {
	defer rows.Close()
	var out []GCCandidate
	for rows.Next() {
		var c GCCandidate
		var d string
		if err := rows.Scan(&c.RepositoryID, &c.Repository, &d, &c.Size); err != nil {
			return nil, err
		}
		c.Digest = digest.Digest(d)
		out = append(out, c)
	}
	return out, rows.Err()
}

// ManifestKeepers is what keeps a manifest from garbage collection.
type ManifestKeepers struct {
	CreatedAt time.Time
	// ConfirmedAt is when a client last confirmed it (zero: never).
	ConfirmedAt time.Time
	Tags        []string        // tags pointing at it
	Parents     []digest.Digest // readable manifests of the repository that list it
	// HeldParents are the manifests of the repository that list it and
	// that a gate holds: only checkers may see them.
	HeldParents   []digest.Digest
	Subject       digest.Digest // its subject, if it has one
	SubjectStored bool          // whether that subject is stored in the repository
	// Candidates are the guarded tags it is a live gate candidate for.
	Candidates []string
	// RestorableUntil is when the time machine stops keeping it for a
	// tag that left it (zero: no tag left it within the window).
	RestorableUntil time.Time
	// CachedUntil is when the pull-through cache stops keeping it: its
	// repository is in a proxy cache organization and it was stored or
	// last confirmed less than the organization's expiration ago (zero:
	// the cache does not keep it; proxyKept is the collector's rule).
	CachedUntil time.Time
}

// ManifestGCKeepers reads what keeps a manifest of a repository, or
// ErrManifestNotFound.
func (db Collector) ManifestGCKeepers(ctx context.Context, repo string, d digest.Digest) (ManifestKeepers, error) {
	var k ManifestKeepers
	var repoID, created, confirmed int64
	var subject sql.NullString
	err := db.read.QueryRowContext(ctx, db.q(`SELECT r.id, m.created_at, m.confirmed_at, m.subject FROM repositories r
		JOIN manifests m ON m.repository_id = r.id WHERE r.name = ? AND m.digest = ?`), repo, d.String()).Scan(&repoID, &created, &confirmed, &subject)
	if errors.Is(err, sql.ErrNoRows) {
		return k, ErrManifestNotFound
	}
	if err != nil {
		return k, fmt.Errorf("manifest gc status: %w", err)
	}
	k.CreatedAt = fromMicros(created)
	if confirmed > 0 {
		k.ConfirmedAt = fromMicros(confirmed)
	}
	rows, err := db.read.QueryContext(ctx, db.q("SELECT name FROM tags WHERE repository_id = ? AND manifest_digest = ? ORDER BY name LIMIT 100"), repoID, d.String())
	if err != nil {
		return k, fmt.Errorf("manifest gc status: %w", err)
	}
	if k.Tags, err = scanStrings(rows); err != nil {
		return k, fmt.Errorf("manifest gc status: %w", err)
	}
	// Readable and held parents apart (each list bounded), so that a
	// report to a reader can leave out what a gate holds.
	for held, into := range []*[]digest.Digest{&k.Parents, &k.HeldParents} {
		rows, err = db.read.QueryContext(ctx, db.q(`SELECT x.manifest_digest FROM manifest_references x
			JOIN manifests m ON m.repository_id = x.repository_id AND m.digest = x.manifest_digest
			WHERE x.repository_id = ? AND x.ref_digest = ? AND m.held = ? ORDER BY x.manifest_digest LIMIT 100`), repoID, d.String(), held)
		if err != nil {
			return k, fmt.Errorf("manifest gc status: %w", err)
		}
		parents, err := scanStrings(rows)
		if err != nil {
			return k, fmt.Errorf("manifest gc status: %w", err)
		}
		for _, p := range parents {
			*into = append(*into, digest.Digest(p))
		}
	}
	if subject.Valid {
		k.Subject = digest.Digest(subject.String)
		var one int
		err := db.read.QueryRowContext(ctx, db.q("SELECT 1 FROM manifests WHERE repository_id = ? AND digest = ?"), repoID, subject.String).Scan(&one)
		if err != nil && !errors.Is(err, sql.ErrNoRows) {
			return k, fmt.Errorf("manifest gc status: %w", err)
		}
		k.SubjectStored = err == nil
	}
	if db.timeMachine > 0 {
		var last int64
		if err := db.read.QueryRowContext(ctx, db.q("SELECT COALESCE(MAX(until_at), 0) FROM tag_history WHERE repository_id = ? AND digest = ?"),
			repoID, d.String()).Scan(&last); err != nil {
			return k, fmt.Errorf("manifest gc status: %w", err)
		}
		if until := fromMicros(last).Add(db.timeMachine); last > 0 && until.After(db.nowTime()) {
			k.RestorableUntil = until
		}
	}
	rows, err = db.read.QueryContext(ctx, db.q(`SELECT tag FROM gate_candidates WHERE repository_id = ? AND digest = ? AND state IN ('pending', 'blocked')
		ORDER BY tag LIMIT 100`), repoID, d.String())
	if err != nil {
		return k, fmt.Errorf("manifest gc status: %w", err)
	}
	if k.Candidates, err = scanStrings(rows); err != nil {
		return k, fmt.Errorf("manifest gc status: %w", err)
	}
	if k.CachedUntil, err = db.cachedUntil(ctx, repo, max(created, confirmed)); err != nil {
		return k, fmt.Errorf("manifest gc status: %w", err)
	}
	return k, nil
}

// cachedUntil is when the pull-through cache stops keeping a manifest of
// the repository stored or last confirmed at last (Unix microseconds), as
// proxyKept decides: the organization's expiration after it, if the
// repository is in a proxy cache organization and that is still to come;
// zero otherwise.
func (db Collector) cachedUntil(ctx context.Context, repo string, last int64) (time.Time, error) {
	var expiration int64
	err := db.read.QueryRowContext(ctx, db.q(`SELECT COALESCE(MAX(p.expiration_s), 0) FROM proxy_caches p JOIN namespaces n ON n.id = p.namespace_id
		WHERE ? > (n.name || '/') AND ? < (n.name || '0')`), repo, repo).Scan(&expiration)
	if err != nil {
		return time.Time{}, fmt.Errorf("proxy cache expiration: %w", err)
	}
	if expiration <= 0 {
		return time.Time{}, nil
	}
	until := last + expiration*1000000
	if until <= db.now() {
		return time.Time{}, nil
	}
	return fromMicros(until), nil
}
