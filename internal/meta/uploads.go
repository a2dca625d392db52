package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/opencontainers/go-digest"
)

// Upload is an upload session. HashState is the marshalled state of the
// running digest of the bytes received so far, and StorageState the
// storage driver's writer state (storage.StatefulWriter; nil for drivers
// that keep none), so that any replica can continue the upload without
// re-reading it.
type Upload struct {
	ID           string
	Repository   string
	Size         int64
	HashState    []byte
	StorageState []byte
	StartedAt    time.Time
	// Claim identifies the caller's claim (ClaimUpload); zero otherwise.
	Claim int64
	// Actor is who opened the session (the per-identity cap counts it).
	Actor string
}

// ErrUploadNotFound is returned for an unknown upload session.
var ErrUploadNotFound = fmt.Errorf("upload %w", ErrNotFound)

// ErrUploadConflict is returned when an upload changed under a writer.
var ErrUploadConflict = errors.New("upload was changed by a concurrent request")

// ErrUploadBusy is returned when another request is writing the upload.
var ErrUploadBusy = errors.New("another request is writing to this upload")

// ErrTooManyUploads is returned when an identity already has its limit of
// open upload sessions.
var ErrTooManyUploads = errors.New("too many open uploads")

// CreateUpload records a new upload session for u.Actor, unless that
// identity already has limit sessions open (limit <= 0: no limit). The
// count and the insert are one statement; concurrent creations may pass
// the limit by at most their number.
func (db Uploads) CreateUpload(ctx context.Context, u Upload, limit int) error {
	ts := db.now()
	if limit <= 0 {
		limit = 1 << 30
	}
	res, err := db.laxExec(ctx, db.q(`INSERT INTO uploads (id, repository, size, hash_state, started_at, updated_at, actor)
		SELECT ?, ?, ?, ?, ?, ?, ? WHERE (SELECT COUNT(*) FROM uploads WHERE actor = ?) < ?`),
		u.ID, u.Repository, u.Size, u.HashState, ts, ts, u.Actor, u.Actor, limit)
	if err != nil {
		return fmt.Errorf("create upload: %w", invalidText(err))
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrTooManyUploads
	}
	return nil
}

// GetUpload returns an upload session of the repository.
func (db Uploads) GetUpload(ctx context.Context, repo, id string) (Upload, error) {
	u := Upload{ID: id, Repository: repo}
	var started int64
	err := db.read.QueryRowContext(ctx, db.q("SELECT size, hash_state, storage_state, started_at FROM uploads WHERE id = ? AND repository = ?"), id, repo).
		Scan(&u.Size, &u.HashState, &u.StorageState, &started)
	if errors.Is(err, sql.ErrNoRows) {
		return Upload{}, ErrUploadNotFound
	}
	if err != nil {
		return Upload{}, fmt.Errorf("get upload: %w", err)
	}
	u.StartedAt = fromMicros(started)
	return u, nil
}

// ErrUploadClaimLost is returned when a claim was taken over (its lease
// ran out without renewal) or ended.
var ErrUploadClaimLost = errors.New("the claim on this upload was lost")

// ClaimUpload gives the caller exclusive write access to an upload for the
// lease, across every process sharing the database: two requests writing
// one upload at once would interleave bytes that the saved hash state does
// not describe. The returned Upload's Claim identifies the claim (it is
// the lease's end, unique per claim); RenewUpload extends it while the
// writer streams, and AdvanceUpload or ReleaseUpload ends it. A writer
// that dies stops renewing, so its claim ends with its short lease and
// the upload can be resumed, by any process, within seconds.
func (db Uploads) ClaimUpload(ctx context.Context, repo, id string, lease time.Duration) (Upload, error) {
	u := Upload{ID: id, Repository: repo}
	var started int64
	ts := db.now()
	u.Claim = ts + max(lease.Microseconds(), 1)
	err := db.laxTx(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, db.q(`UPDATE uploads SET locked_until = ? WHERE id = ? AND repository = ? AND locked_until < ?
			RETURNING size, hash_state, storage_state, started_at`), u.Claim, id, repo, ts).Scan(&u.Size, &u.HashState, &u.StorageState, &started)
	})
	if errors.Is(err, sql.ErrNoRows) {
		if _, gerr := db.GetUpload(ctx, repo, id); gerr != nil {
			return Upload{}, gerr
		}
		return Upload{}, ErrUploadBusy
	}
	if err != nil {
		return Upload{}, fmt.Errorf("claim upload: %w", err)
	}
	u.StartedAt = fromMicros(started)
	return u, nil
}

// UploadLease returns when the claim on an upload session ends, on the
// local clock (ClaimEnd): a time past (the Unix epoch for a released one)
// when nobody holds it. It only
// reads, on the read pool: a request waiting for another's claim polls it,
// and tries ClaimUpload, a write (on SQLite, a turn of the one writer),
// only once the claim looks ended.
func (db Uploads) UploadLease(ctx context.Context, repo, id string) (time.Time, error) {
	var until int64
	err := db.read.QueryRowContext(ctx, db.q("SELECT locked_until FROM uploads WHERE id = ? AND repository = ?"), id, repo).Scan(&until)
	if errors.Is(err, sql.ErrNoRows) {
		return time.Time{}, ErrUploadNotFound
	}
	if err != nil {
		return time.Time{}, fmt.Errorf("read upload claim: %w", err)
	}
	if until == 0 {
		return time.UnixMicro(0), nil
	}
	return db.ClaimEnd(until), nil
}

// ClaimEnd returns when a claim (Upload.Claim, RenewUpload's result) runs
// out unless renewed, on the local clock. The claim is the lease's end on
// the store's clock (the database's, on PostgreSQL: clock.go), which a
// host whose clock is off does not share: compare ClaimEnd, not the claim
// itself, with time.Now.
func (db Uploads) ClaimEnd(claim int64) time.Time {
	return db.localTime(claim)
}

// RenewUpload extends a claim to lease from now and returns the new claim.
// It returns ErrUploadClaimLost if claim is no longer the upload's.
func (db Uploads) RenewUpload(ctx context.Context, id string, claim int64, lease time.Duration) (int64, error) {
	next := max(db.now()+lease.Microseconds(), claim+1)
	res, err := db.laxExec(ctx, db.q("UPDATE uploads SET locked_until = ? WHERE id = ? AND locked_until = ?"), next, id, claim)
	if err != nil {
		return claim, fmt.Errorf("renew upload claim: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return claim, ErrUploadClaimLost
	}
	return next, nil
}

// ReleaseUpload ends a claim without changing the upload. A claim that is
// no longer the caller's is left alone.
func (db Uploads) ReleaseUpload(ctx context.Context, id string, claim int64) error {
	if _, err := db.laxExec(ctx, db.q("UPDATE uploads SET locked_until = 0 WHERE id = ? AND locked_until = ?"), id, claim); err != nil {
		return fmt.Errorf("release upload: %w", err)
	}
	return nil
}

// AdvanceUpload records that the upload grew from oldSize to newSize, with
// the hash and storage writer states at newSize, and ends the caller's
// claim. It fails with ErrUploadConflict if the claim was lost or another
// request moved the upload meanwhile.
func (db Uploads) AdvanceUpload(ctx context.Context, id string, claim, oldSize, newSize int64, hashState, storageState []byte) error {
	res, err := db.laxExec(ctx, db.q("UPDATE uploads SET size = ?, hash_state = ?, storage_state = ?, updated_at = ?, locked_until = 0 WHERE id = ? AND size = ? AND locked_until = ?"),
		newSize, hashState, storageState, db.now(), id, oldSize, claim)
	if err != nil {
		return fmt.Errorf("advance upload: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		return ErrUploadConflict
	}
	return nil
}

// DeleteUpload removes an upload session that the caller holds the claim
// on (ClaimUpload): a cancel never takes a session from under the request
// writing or finishing it. It returns ErrUploadNotFound if the session is
// gone, ErrUploadClaimLost if claim is no longer its claim.
func (db Uploads) DeleteUpload(ctx context.Context, id string, claim int64) error {
	res, err := db.write.ExecContext(ctx, db.q("DELETE FROM uploads WHERE id = ? AND locked_until = ?"), id, claim)
	if err != nil {
		return fmt.Errorf("delete upload: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 0 {
		var one int
		err := db.read.QueryRowContext(ctx, db.q("SELECT 1 FROM uploads WHERE id = ?"), id).Scan(&one)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrUploadNotFound
		}
		if err != nil {
			return fmt.Errorf("delete upload: %w", err)
		}
		return ErrUploadClaimLost
	}
	return nil
}

// UploadCutoffs say which upload sessions have expired: those nobody has
// written to since Idle (gc.uploadExpiry), and those opened before
// Started (gc.uploadMaxAge), however recently written to; a zero Started
// expires none for its age.
type UploadCutoffs struct {
	Idle    time.Time
	Started time.Time
}

// startedBefore is the bound on started_at (Unix microseconds): one no
// session is opened before when Started is zero.
func (c UploadCutoffs) startedBefore() int64 {
	if c.Started.IsZero() {
		return math.MinInt64
	}
	return c.Started.UnixMicro()
}

// ExpiredUploadsAt returns up to n upload sessions that have expired
// (cut: idle, or past their max age) and that no request holds a claim on.
func (db Uploads) ExpiredUploadsAt(ctx context.Context, cut UploadCutoffs, n int) ([]Upload, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT id, repository, size, started_at FROM uploads
		WHERE (updated_at < ? OR started_at < ?) AND locked_until < ? ORDER BY updated_at LIMIT CAST(? AS BIGINT)`),
		cut.Idle.UnixMicro(), cut.startedBefore(), db.now(), n)
	if err != nil {
		return nil, fmt.Errorf("expired uploads: %w", err)
	}
	defer rows.Close()
	var out []Upload
	for rows.Next() {
		var u Upload
		var started int64
		if err := rows.Scan(&u.ID, &u.Repository, &u.Size, &started); err != nil {
			return nil, fmt.Errorf("expired uploads: %w", err)
		}
		u.StartedAt = fromMicros(started)
		out = append(out, u)
	}
	return out, rows.Err()
}

// ExpireUploadAt removes an upload session if it has still expired (cut)
// and is unclaimed, and reports whether it did: a client that resumed an
// idle one meanwhile keeps it; one past its max age goes whatever was
// written to it, once no request holds it.
func (db Uploads) ExpireUploadAt(ctx context.Context, id string, cut UploadCutoffs) (bool, error) {
	res, err := db.write.ExecContext(ctx, db.q("DELETE FROM uploads WHERE id = ? AND (updated_at < ? OR started_at < ?) AND locked_until < ?"),
		id, cut.Idle.UnixMicro(), cut.startedBefore(), db.now())
	if err != nil {
		return false, fmt.Errorf("expire upload: %w", err)
	}
	n, _ := res.RowsAffected()
	return n == 1, nil
}

// UploadsExist returns which of ids are live upload sessions.
func (db Uploads) UploadsExist(ctx context.Context, ids []string) (map[string]bool, error) {
	out := map[string]bool{}
	for start := 0; start < len(ids); start += refBatch {
		batch := ids[start:min(start+refBatch, len(ids))]
		rows, err := db.read.QueryContext(ctx, db.q("SELECT id FROM uploads WHERE id IN ("+placeholders(len(batch))+")"), anySlice(batch)...)
		if err != nil {
			return nil, fmt.Errorf("look up uploads: %w", err)
		}
		found, err := scanStrings(rows)
		if err != nil {
			return nil, fmt.Errorf("look up uploads: %w", err)
		}
		for _, id := range found {
			out[id] = true
		}
	}
	return out, nil
}

// uploadNamespace is the namespace of an upload session's repository (its
// name's first component, as namespaceOf cuts it), spelled as the
// uploads_namespace index (migration 39) is built on it: a query must
// spell it the same to use the index. {{strpos}} is rendered per dialect.
const uploadNamespace = `(CASE WHEN {{strpos}}(repository, '/') > 0 THEN substr(repository, 1, {{strpos}}(repository, '/') - 1) ELSE repository END)`

// uploadNamespaceSchema is migration 39: the open upload sessions by
// namespace, which UploadRoom adds up on every chunk written in a
// namespace with a Reject limit. An index on an expression of the
// repository, which never changes, so it costs nothing on the writes
// that advance a session, and a session opened by a binary before it (a
// replica during a rolling upgrade) is counted too.
const uploadNamespaceSchema = `CREATE INDEX uploads_namespace ON uploads(` + uploadNamespace + `)`

// UploadRoom is what a namespace's Reject limit leaves for the bytes of
// its open upload sessions, which count in no usage until a manifest
// names them (as blobs then): without a bound a client could keep any
// number of bytes outside the quota in sessions it never finishes.
//
// The sessions may hold up to the limit's threshold, not the threshold
// less the usage: an upload may be of a blob the namespace counts
// already (the same image pushed to another of its repositories, whose
// client uploads what it cannot mount), whose manifest then adds nothing
// and is never refused. The room covers what a push may add (the
// threshold less the usage) and re-sending up to all the namespace
// counts.
type UploadRoom struct {
	// Limited: the namespace's quota has a Reject limit; nothing else is
	// set otherwise.
	Limited          bool
	Namespace        string
	Usage            int64 // the namespace's usage (for the refusal's message)
	Uploads          int64 // the bytes its open upload sessions hold
	LimitBytes       int64
	ThresholdPercent int
}

// Left is how many more bytes uploads may write in the namespace (at most
// 0 when its sessions hold the threshold; math.MaxInt64 without a Reject
// limit).
func (r UploadRoom) Left() int64 {
	if !r.Limited {
		return math.MaxInt64
	}
	return ThresholdBytes(r.LimitBytes, r.ThresholdPercent) - r.Uploads
}

// Refuse is the refusal of an upload that would write added bytes.
func (r UploadRoom) Refuse(added int64) *QuotaExceededError {
	return &QuotaExceededError{Namespace: r.Namespace, Usage: r.Usage, Added: added, LimitBytes: r.LimitBytes,
		ThresholdPercent: r.ThresholdPercent, Upload: true, Uploads: r.Uploads}
}

// UploadRoom returns what the quota of repo's namespace leaves for its
// uploads: a point read for a namespace without a quota; with a Reject
// limit, one more that reads its usage and adds up its open sessions'
// bytes (uploads_namespace). Read outside any transaction: concurrent
// requests may each pass, by at most what they write.
func (db Uploads) UploadRoom(ctx context.Context, repo string) (UploadRoom, error) {
	ns := namespaceOf(repo)
	qs, err := db.quotas(ctx, db.read, ns, 0)
	if err != nil || len(qs) == 0 {
		return UploadRoom{}, err
	}
	q := qs[0]
	for _, l := range q.Limits {
		if l.Type != QuotaReject {
			continue
		}
		r := UploadRoom{Limited: true, Namespace: ns, LimitBytes: q.LimitBytes, ThresholdPercent: l.ThresholdPercent}
		err := db.read.QueryRowContext(ctx, db.q(db.uploadRoomQuery()), ns, ns).Scan(&r.Usage, &r.Uploads)
		if err != nil {
			return UploadRoom{}, fmt.Errorf("read the namespace's upload room: %w", err)
		}
		return r, nil
	}
	return UploadRoom{}, nil
}

// UploadRefused appends the quota_error event of an upload to repo that
// qe refused (UploadRoom), as a refused manifest push appends one; d is
// the digest the request named, if any.
func (db Uploads) UploadRefused(ctx context.Context, repo, actor string, d digest.Digest, qe *QuotaExceededError) error {
	// quotaRefused returns qe itself once the event is recorded, else qe
	// wrapped with why it was not.
	if err := db.quotaRefused(ctx, PutManifest{Repository: repo, Actor: actor, Manifest: Manifest{Digest: d}}, qe); err != error(qe) {
		return err
	}
	return nil
}

// uploadRoomQuery reads a namespace's usage and adds up the bytes of its
// open upload sessions (arguments: the namespace, twice).
func (db *core) uploadRoomQuery() string {
	return `SELECT COALESCE((SELECT bytes FROM quota_usage WHERE namespace = ?), 0),
		COALESCE((SELECT SUM(size) FROM uploads WHERE ` + db.render(uploadNamespace) + ` = ?), 0)`
}
