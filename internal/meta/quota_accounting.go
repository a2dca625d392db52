package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/opencontainers/go-digest"
)

// The accounting of namespace usage (quota_schema.go says what the tables
// hold). It runs inside the transactions that change what it counts:
//
//   - quotaRef when a manifest row is created with its references
//     (putManifest), which also enforces the namespace's Reject limit and
//     appends the quota events;
//   - quotaUnref before a manifest's references are deleted (DeleteManifest
//     and the referrers deleted with their subject, garbage collection's
//     collectManifestTx) and quotaUnrefRepository before a repository's
//     (DeleteRepository);
//   - quotaBlobStored when a blob row is recorded (StoreBlob) and
//     quotaBlobCondemned when one is deleted (CondemnBlobs): a reference
//     counts its blob's bytes exactly while the blob row exists, which only
//     the pull-through cache's manifests can outlive or precede.
//
// Locks: every change of a namespace's reference counts first locks its
// usage row, so those changes are serialized per namespace and never
// deadlock among themselves, and the Reject check reads a usage no
// concurrent push can change before this one commits. A reference whose
// blob row may be missing (the pull-through cache) is counted under the
// digest's lock (lockDigest), which StoreBlob and CondemnBlobs hold too.

// QuotaExceededError refuses a push that would bring its namespace past
// the Reject threshold of its quota. Nothing of the push is stored.
type QuotaExceededError struct {
	Namespace        string
	Usage            int64 // the namespace's usage, unchanged
	Added            int64 // the bytes the push would have added
	LimitBytes       int64 // the quota
	ThresholdPercent int   // the Reject limit's threshold
	// Upload marks a refused upload (UploadRoom): Uploads is what the
	// namespace's open upload sessions held, and Added what the request
	// would have written (at least); the threshold bounds Uploads+Added.
	Upload  bool
	Uploads int64
}

// Threshold is the usage the namespace may not exceed.
func (e *QuotaExceededError) Threshold() int64 {
	return ThresholdBytes(e.LimitBytes, e.ThresholdPercent)
}

func (e *QuotaExceededError) Error() string {
	if e.Upload {
		return fmt.Sprintf("quota exceeded: the unfinished uploads of namespace %s hold %s; this upload would add %s, past the Reject limit of its %s quota at %d%% (%s), which the bytes of unfinished uploads may not pass either (finish or cancel some; the namespace uses %s)",
			e.Namespace, HumanBytes(e.Uploads), HumanBytes(e.Added), HumanBytes(e.LimitBytes), e.ThresholdPercent, HumanBytes(e.Threshold()), HumanBytes(e.Usage))
	}
	return fmt.Sprintf("quota exceeded: namespace %s uses %s of its %s quota; this push would add %s, past its Reject limit at %d%% (%s)",
		e.Namespace, HumanBytes(e.Usage), HumanBytes(e.LimitBytes), HumanBytes(e.Added), e.ThresholdPercent, HumanBytes(e.Threshold()))
}

// lockUsage locks a namespace's usage row, creating it at zero, and
// returns its bytes.
func (db *core) lockUsage(ctx context.Context, tx *sql.Tx, ns string) (int64, error) {
	for range 2 {
		var n int64
		err := tx.QueryRowContext(ctx, db.q("SELECT bytes FROM quota_usage WHERE namespace = ?"+db.lockSuffix()), ns).Scan(&n)
		if err == nil {
			return n, nil
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return 0, fmt.Errorf("lock namespace usage: %w", err)
		}
		// The namespace's first count (a concurrent one may insert it
		// first: this insert then waits for it, and the select finds it).
		if _, err := tx.ExecContext(ctx, db.q("INSERT INTO quota_usage (namespace, bytes) VALUES (?, 0) ON CONFLICT (namespace) DO NOTHING"), ns); err != nil {
			return 0, fmt.Errorf("create namespace usage: %w", err)
		}
	}
	return 0, errRetry
}

func (db *core) setUsage(ctx context.Context, tx *sql.Tx, ns string, n int64) error {
	if _, err := tx.ExecContext(ctx, db.q("UPDATE quota_usage SET bytes = ? WHERE namespace = ?"), n, ns); err != nil {
		return fmt.Errorf("update namespace usage: %w", err)
	}
	return nil
}

// quotaRef counts the blob references of a manifest putManifest just
// stored (its manifest_references rows are in place) and checks the
// namespace's quota. cached is the pull-through cache's push, whose blobs
// may not be stored yet (the cache checks each blob's download against the
// quota: ProxyCaches.QuotaRoom). Content Berth made (p.Generated) is
// counted but never refused.
func (db *core) quotaRef(ctx context.Context, tx *sql.Tx, p PutManifest, repoID int64, cached bool) error {
	var blobs []string
	for _, r := range p.Refs {
		if !r.IsManifest {
			blobs = append(blobs, r.Digest.String())
		}
	}
	if len(blobs) == 0 {
		return nil // an index: its children count for themselves
	}
	if cached && db.dialect == postgres {
		slices.Sort(blobs)
		for _, d := range slices.Compact(blobs) {
			if err := db.lockDigest(ctx, tx, digest.Digest(d)); err != nil {
				return err
			}
		}
	}
	ns := namespaceOf(p.Repository)
	usage, err := db.lockUsage(ctx, tx, ns)
	if err != nil {
		return err
	}
	// A count that reaches 1 is a blob the namespace did not reference:
	// its bytes are added (if its row exists; otherwise when it does).
	rows, err := tx.QueryContext(ctx, db.q(`INSERT INTO quota_blob_refs (namespace, digest, refs, size)
		SELECT ?, mr.ref_digest, 1, b.size FROM manifest_references mr LEFT JOIN blobs b ON b.digest = mr.ref_digest
		WHERE mr.repository_id = CAST(? AS BIGINT) AND mr.manifest_digest = ? AND mr.is_manifest = 0
		ON CONFLICT (namespace, digest) DO UPDATE SET refs = quota_blob_refs.refs + 1
		RETURNING refs, size`), ns, repoID, p.Manifest.Digest.String())
	if err != nil {
		return fmt.Errorf("count blob references: %w", err)
	}
	var added int64
	for rows.Next() {
		var refs int64
		var size sql.NullInt64
		if err := rows.Scan(&refs, &size); err != nil {
			rows.Close()
			return fmt.Errorf("count blob references: %w", err)
		}
		if refs == 1 && size.Valid {
			added += size.Int64
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("count blob references: %w", err)
	}
	if added == 0 {
		return nil
	}
	if err := db.quotaCheck(ctx, tx, p, ns, usage, added, !p.Generated); err != nil {
		return err
	}
	return db.setUsage(ctx, tx, ns, usage+added)
}

// quotaEvent is the data of quota_warning and quota_error: Quay's fields,
// then Berth's.
type quotaEvent struct {
	ThresholdPercent int     `json:"threshold_percent"`
	UsageBytes       int64   `json:"usage_bytes"`
	LimitBytes       int64   `json:"limit_bytes"`
	UsagePercent     float64 `json:"usage_percent"`
	Namespace        string  `json:"namespace"`
	LimitType        string  `json:"limit_type"`
	Digest           string  `json:"digest"`
	// Refused is set on the quota_error of a refused push; PushBytes is
	// what that push (or the one that crossed the threshold) adds.
	Refused   bool  `json:"refused"`
	PushBytes int64 `json:"push_bytes"`
}

func usagePercent(usage, limit int64) float64 {
	if limit <= 0 {
		return 0
	}
	return math.Round(float64(usage)/float64(limit)*10000) / 100
}

// quotaCheck compares the usage a push brings (usage+added) with the
// namespace's quota: past the Reject threshold it refuses (enforce) or
// announces quota_error; past a Warning threshold that usage was under,
// quota_warning.
func (db *core) quotaCheck(ctx context.Context, tx *sql.Tx, p PutManifest, ns string, usage, added int64, enforce bool) error {
	qs, err := db.quotas(ctx, tx, ns, 0)
	if err != nil || len(qs) == 0 {
		return err
	}
	q := qs[0]
	after := usage + added
	for _, l := range q.Limits {
		t := ThresholdBytes(q.LimitBytes, l.ThresholdPercent)
		if after <= t {
			continue
		}
		if l.Type == QuotaReject && enforce {
			return &QuotaExceededError{Namespace: ns, Usage: usage, Added: added, LimitBytes: q.LimitBytes, ThresholdPercent: l.ThresholdPercent}
		}
		if usage > t {
			continue // crossed before
		}
		kind := EventQuotaWarning
		if l.Type == QuotaReject {
			kind = EventQuotaError
		}
		if err := db.appendEvent(ctx, tx, Event{Kind: kind, Repository: p.Repository, Actor: p.Actor,
			Data: mustJSON(quotaEvent{ThresholdPercent: l.ThresholdPercent, UsageBytes: after, LimitBytes: q.LimitBytes,
				UsagePercent: usagePercent(after, q.LimitBytes), Namespace: ns, LimitType: l.Type, Digest: p.Manifest.Digest.String(), PushBytes: added})}); err != nil {
			return err
		}
	}
	return nil
}

// quotaRefused appends the quota_error event of a push that err says was
// refused by its namespace's quota, in a transaction of its own (the
// push's rolled back), and returns err.
func (db *core) quotaRefused(ctx context.Context, p PutManifest, err error) error {
	var qe *QuotaExceededError
	if !errors.As(err, &qe) {
		return err
	}
	evErr := db.tx(ctx, func(tx *sql.Tx) error {
		return db.appendEvent(ctx, tx, Event{Kind: EventQuotaError, Repository: p.Repository, Actor: p.Actor,
			Data: mustJSON(quotaEvent{ThresholdPercent: qe.ThresholdPercent, UsageBytes: qe.Usage, LimitBytes: qe.LimitBytes,
				UsagePercent: usagePercent(qe.Usage, qe.LimitBytes), Namespace: qe.Namespace, LimitType: QuotaReject,
				Digest: p.Manifest.Digest.String(), Refused: true, PushBytes: qe.Added})})
	})
	if evErr != nil {
		return fmt.Errorf("%w (its quota_error event was not recorded: %v)", err, evErr)
	}
	return err
}

// quotaUnref uncounts the blob references of a manifest whose
// manifest_references rows are about to be deleted. repo may be empty
// (it is looked up by id).
func (db *core) quotaUnref(ctx context.Context, tx *sql.Tx, repoID int64, repo, manifestDigest string) error {
	return db.uncount(ctx, tx, repoID, repo, " AND manifest_digest = ?", manifestDigest)
}

// quotaUnrefRepository uncounts the blob references of every manifest of
// a repository about to be deleted. On PostgreSQL the repository row is
// locked first: a push that stores a manifest in it holds the row (its
// foreign key) until it commits, so the references read next include its
// own, and a push that comes later waits for the delete. A repository
// that a concurrent delete removed while this one waited for its row is
// ErrRepositoryNotFound.
func (db *core) quotaUnrefRepository(ctx context.Context, tx *sql.Tx, repoID int64, repo string) error {
	if db.dialect == postgres {
		if err := db.lockRepositoryRow(ctx, tx, repoID); err != nil {
			return err
		}
	}
	return db.uncount(ctx, tx, repoID, repo, "")
}

// uncount decrements the counts of the blobs the selected references
// (the repository's, narrowed by filter) name, deletes the counts that
// reach zero and subtracts their bytes from the namespace's usage.
func (db *core) uncount(ctx context.Context, tx *sql.Tx, repoID int64, repo, filter string, args ...any) error {
	if repo == "" {
		if err := tx.QueryRowContext(ctx, db.q("SELECT name FROM repositories WHERE id = ?"), repoID).Scan(&repo); err != nil {
			return fmt.Errorf("look up repository: %w", err)
		}
	}
	refs := "SELECT ref_digest FROM manifest_references WHERE repository_id = ? AND is_manifest = 0" + filter
	refArgs := append([]any{repoID}, args...)
	var first string
	err := tx.QueryRowContext(ctx, db.q(refs+" LIMIT 1"), refArgs...).Scan(&first)
	if errors.Is(err, sql.ErrNoRows) {
		return nil // no blob references: nothing to lock
	}
	if err != nil {
		return fmt.Errorf("find blob references: %w", err)
	}
	ns := namespaceOf(repo)
	usage, err := db.lockUsage(ctx, tx, ns)
	if err != nil {
		return err
	}
	if _, err := tx.ExecContext(ctx, db.q(`UPDATE quota_blob_refs SET refs = quota_blob_refs.refs - c.n
		FROM (SELECT ref_digest, COUNT(*) AS n FROM manifest_references WHERE repository_id = ? AND is_manifest = 0`+filter+` GROUP BY ref_digest) AS c
		WHERE quota_blob_refs.namespace = ? AND quota_blob_refs.digest = c.ref_digest`), append(refArgs, ns)...); err != nil {
		return fmt.Errorf("uncount blob references: %w", err)
	}
	rows, err := tx.QueryContext(ctx, db.q(`DELETE FROM quota_blob_refs WHERE namespace = ? AND refs <= 0 AND digest IN (`+refs+`) RETURNING size`),
		append([]any{ns}, refArgs...)...)
	if err != nil {
		return fmt.Errorf("uncount blob references: %w", err)
	}
	var removed int64
	for rows.Next() {
		var size sql.NullInt64
		if err := rows.Scan(&size); err != nil {
			rows.Close()
			return fmt.Errorf("uncount blob references: %w", err)
		}
		removed += size.Int64
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return fmt.Errorf("uncount blob references: %w", err)
	}
	if removed == 0 {
		return nil
	}
	return db.setUsage(ctx, tx, ns, usage-removed)
}

// quotaBlobStored counts the bytes of a blob just recorded (StoreBlob,
// under the digest's lock) in the namespaces whose manifests referenced it
// before it was stored (the pull-through cache's).
func (db *core) quotaBlobStored(ctx context.Context, tx *sql.Tx, d digest.Digest, size int64) error {
	return db.resize(ctx, tx, d, "size IS NULL", size)
}

// quotaBlobCondemned uncounts the bytes of a blob whose row garbage
// collection deletes (CondemnBlobs, under the digest's lock) from the
// namespaces whose manifests still reference it (only the pull-through
// cache's can: a stored manifest keeps its blobs linked otherwise).
func (db *core) quotaBlobCondemned(ctx context.Context, tx *sql.Tx, d digest.Digest) error {
	return db.resize(ctx, tx, d, "size IS NOT NULL", -1)
}

// resize sets the size of a digest's counts that match cond (size < 0:
// NULL), namespace by namespace in name order, each under its usage lock.
func (db *core) resize(ctx context.Context, tx *sql.Tx, d digest.Digest, cond string, size int64) error {
	rows, err := tx.QueryContext(ctx, db.q("SELECT namespace FROM quota_blob_refs WHERE digest = ? AND "+cond+" ORDER BY namespace"), d.String())
	if err != nil {
		return fmt.Errorf("find blob references: %w", err)
	}
	nss, err := scanStrings(rows)
	if err != nil {
		return fmt.Errorf("find blob references: %w", err)
	}
	var newSize any
	if size >= 0 {
		newSize = size
	}
	for _, ns := range nss {
		usage, err := db.lockUsage(ctx, tx, ns)
		if err != nil {
			return err
		}
		var old sql.NullInt64
		err = tx.QueryRowContext(ctx, db.q("SELECT size FROM quota_blob_refs WHERE namespace = ? AND digest = ? AND "+cond), ns, d.String()).Scan(&old)
		if errors.Is(err, sql.ErrNoRows) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read blob references: %w", err)
		}
		if _, err := tx.ExecContext(ctx, db.q("UPDATE quota_blob_refs SET size = ? WHERE namespace = ? AND digest = ?"), newSize, ns, d.String()); err != nil {
			return fmt.Errorf("update blob references: %w", err)
		}
		if err := db.setUsage(ctx, tx, ns, usage-old.Int64+max(size, 0)); err != nil {
			return err
		}
	}
	return nil
}
