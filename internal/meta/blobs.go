package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"
)

// Blob is a stored blob.
type Blob struct {
	Digest digest.Digest
	Size   int64
	// LinkedAt (from RepositoryBlob) is when the repository's link was
	// made or last confirmed: garbage collection spares a link younger
	// than its delay.
	LinkedAt time.Time
	// Held (from RepositoryBlob) is true when, in a gated repository,
	// only held manifests reference the blob: readers without the gate's
	// check permission must not read it.
	Held bool
}

// ErrBlobNotFound is returned when a blob is not linked to a repository.
var ErrBlobNotFound = fmt.Errorf("blob %w", ErrNotFound)

// RepositoryBlob returns the blob if the repository may serve it.
func (db Blobs) RepositoryBlob(ctx context.Context, repo string, d digest.Digest) (Blob, error) {
	ctx = db.pointLookup(ctx)
	var b Blob
	var linked, repoID int64
	var gated int
	err := db.read.QueryRowContext(ctx, db.q(`SELECT b.size, rb.created_at, r.id, r.gated FROM repositories r
		JOIN repository_blobs rb ON rb.repository_id = r.id
		JOIN blobs b ON b.digest = rb.digest
		WHERE r.name = ? AND rb.digest = ?`), repo, d.String()).Scan(&b.Size, &linked, &repoID, &gated)
	if errors.Is(err, sql.ErrNoRows) {
		return Blob{}, ErrBlobNotFound
	}
	if err != nil {
		return Blob{}, fmt.Errorf("look up blob: %w", err)
	}
	b.Digest, b.LinkedAt = d, fromMicros(linked)
	if gated == 1 {
		// Held if held manifests reference it and no readable one does.
		var held, readable int
		if err := db.read.QueryRowContext(ctx, db.q(`SELECT COALESCE(SUM(m.held), 0), COALESCE(SUM(1 - m.held), 0) FROM manifest_references x
			JOIN manifests m ON m.repository_id = x.repository_id AND m.digest = x.manifest_digest
			WHERE x.repository_id = ? AND x.ref_digest = ?`), repoID, d.String()).Scan(&held, &readable); err != nil {
			return Blob{}, fmt.Errorf("look up blob references: %w", err)
		}
		b.Held = held > 0 && readable == 0
	}
	return b, nil
}

// TouchBlobLink confirms a repository's link to a blob (a client asked
// for it and may reference it in a manifest it is about to push): a link
// last confirmed before stale is dated now, so garbage collection spares
// it for another delay, up to gc.uploadExpiry after it was first made
// if no manifest references it (staleLink): when it was first made does
// not move (a link made by a binary before migration 35 takes its last
// confirmation's time). It reports false if the link is gone.
func (db Blobs) TouchBlobLink(ctx context.Context, repo string, d digest.Digest, stale time.Time) (bool, error) {
	res, err := db.write.ExecContext(ctx, db.q(`UPDATE repository_blobs SET created_at = ?,
		linked_at = CASE WHEN linked_at > 0 THEN linked_at ELSE created_at END
		WHERE digest = ? AND created_at < ? AND repository_id = (SELECT id FROM repositories WHERE name = ?)`),
		db.now(), d.String(), stale.UnixMicro(), repo)
	if err != nil {
		return false, fmt.Errorf("touch blob link: %w", err)
	}
	if n, _ := res.RowsAffected(); n == 1 {
		return true, nil
	}
	_, err = db.RepositoryBlob(ctx, repo, d)
	if errors.Is(err, ErrBlobNotFound) {
		return false, nil
	}
	return err == nil, err
}

// StoredBlob returns a blob known to the registry, in any repository.
func (db Blobs) StoredBlob(ctx context.Context, d digest.Digest) (Blob, error) {
	var b Blob
	err := db.read.QueryRowContext(ctx, db.q("SELECT size FROM blobs WHERE digest = ?"), d.String()).Scan(&b.Size)
	if errors.Is(err, sql.ErrNoRows) {
		return Blob{}, ErrBlobNotFound
	}
	if err != nil {
		return Blob{}, fmt.Errorf("look up blob: %w", err)
	}
	b.Digest = d
	return b, nil
}

// RepositoriesWithBlob returns up to n repositories that link the blob.
func (db Blobs) RepositoriesWithBlob(ctx context.Context, d digest.Digest, n int) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT r.name FROM repository_blobs rb
		JOIN repositories r ON r.id = rb.repository_id WHERE rb.digest = ? ORDER BY r.name LIMIT CAST(? AS BIGINT)`), d.String(), n)
	if err != nil {
		return nil, fmt.Errorf("repositories with blob: %w", err)
	}
	return scanStrings(rows)
}

// NamespaceRepositoriesWithBlob returns up to n repositories of the
// namespace that link the blob: the pull-through cache, a mirror and an
// import link a blob from one of them that their puller or actor may
// read, without a download.
func (db Blobs) NamespaceRepositoriesWithBlob(ctx context.Context, ns string, d digest.Digest, n int) ([]string, error) {
	rows, err := db.read.QueryContext(ctx, db.q(`SELECT r.name FROM repository_blobs rb
		JOIN repositories r ON r.id = rb.repository_id WHERE rb.digest = ? AND r.name > ? AND r.name < ? ORDER BY r.name LIMIT CAST(? AS BIGINT)`),
		d.String(), ns+"/", ns+"0", n)
	if err != nil {
		return nil, fmt.Errorf("namespace repositories with blob: %w", err)
	}
	return scanStrings(rows)
}

// UploadClaim names the upload session whose bytes a blob is stored from
// and the claim its finisher holds (ClaimUpload): the session is removed
// with the blob's record, and only while the claim is still the session's.
// The zero value names none.
type UploadClaim struct {
	ID    string
	Claim int64
}

// LinkBlob records a stored blob and links it to the repository, creating
// the repository (as w.Create says) if needed. If up names a session, it
// is removed in the same transaction (ErrUploadClaimLost if its claim is
// no longer up.Claim).
func (db Blobs) LinkBlob(ctx context.Context, repo string, b Blob, up UploadClaim, w Writer) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		return db.linkBlob(ctx, tx, repo, b, up, w)
	})
}

func (db *core) linkBlob(ctx context.Context, tx *sql.Tx, repo string, b Blob, up UploadClaim, w Writer) error {
	id, err := db.ensureRepository(ctx, tx, repo, w)
	if err != nil {
		return err
	}
	// The blob must be stored (StoreBlob records new ones). Its row is
	// locked FOR SHARE on PostgreSQL, so a garbage collection condemning
	// it either finished first (the link is refused: ErrBlobNotFound) or
	// waits for this link and then keeps the blob.
	lock := ""
	if db.dialect == postgres {
		lock = " FOR SHARE"
	}
	var one int
	err = tx.QueryRowContext(ctx, db.q("SELECT 1 FROM blobs WHERE digest = ?"+lock), b.Digest.String()).Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return ErrBlobNotFound
	}
	if err != nil {
		return fmt.Errorf("look up blob: %w", err)
	}
	// A new link, or a confirmed one, is dated now: collection spares it
	// for a delay. When it was first made (linked_at) stays: collection
	// removes it, unreferenced, at most gc.uploadExpiry after that,
	// however often it is linked again (staleLink).
	now := db.now()
	if _, err := tx.ExecContext(ctx, db.q(`INSERT INTO repository_blobs (repository_id, digest, created_at, linked_at) VALUES (?, ?, ?, ?)
		ON CONFLICT (repository_id, digest) DO UPDATE SET created_at = excluded.created_at,
		linked_at = CASE WHEN repository_blobs.linked_at > 0 THEN repository_blobs.linked_at ELSE repository_blobs.created_at END`),
		id, b.Digest.String(), now, now); err != nil {
		return fmt.Errorf("link blob: %w", err)
	}
	if up.ID != "" {
		// Only while the claim is the finisher's: a request that took the
		// session over (the finisher's lease ran out) may have written
		// other bytes into it since they were hashed.
		res, err := tx.ExecContext(ctx, db.q("DELETE FROM uploads WHERE id = ? AND locked_until = ?"), up.ID, up.Claim)
		if err != nil {
			return fmt.Errorf("finish upload: %w", err)
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return ErrUploadClaimLost
		}
	}
	return nil
}

// UnlinkBlob removes a blob from a repository. The bytes stay until garbage
// collection finds nothing referencing them. A blob that a manifest of the
// repository references is not unlinked: an *InUseError names the
// manifests. On PostgreSQL the link row is deleted (and so locked) before
// the references are read: a push that holds the link FOR SHARE while it
// stores a manifest naming the blob makes the delete wait for its commit,
// and the check then sees the new manifest; a push that comes later finds
// the link gone and is refused with MANIFEST_BLOB_UNKNOWN.
func (db Blobs) UnlinkBlob(ctx context.Context, repo string, d digest.Digest) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		var repoID int64
		err := tx.QueryRowContext(ctx, db.q("SELECT id FROM repositories WHERE name = ?"), repo).Scan(&repoID)
		if errors.Is(err, sql.ErrNoRows) {
			return ErrBlobNotFound
		}
		if err != nil {
			return fmt.Errorf("look up repository: %w", err)
		}
		res, err := tx.ExecContext(ctx, db.q("DELETE FROM repository_blobs WHERE repository_id = ? AND digest = ?"), repoID, d.String())
		if err != nil {
			return fmt.Errorf("unlink blob: %w", err)
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrBlobNotFound
		}
		return db.refusedIfReferenced(ctx, tx, repoID, d, "blob")
	})
}

// BlobBytes puts a blob's verified bytes at its content address and takes
// them away, for StoreBlob (storage.Placement is Berth's).
type BlobBytes interface {
	// PlaceEarly puts the bytes at the address without the digest's lock,
	// keeping what Place needs to put them there again; bytes already
	// there are kept. ok is false, and nothing is done, when it cannot.
	// The address's name is durable when it returns.
	PlaceEarly(ctx context.Context) (ok bool, err error)
	// Present reports whether bytes are at the address. (A BlobBytes
	// that can also tell their size, sizedBlobBytes, is asked that
	// instead.)
	Present(ctx context.Context) (bool, error)
	// Place puts the bytes at the address; it may run twice.
	Place(ctx context.Context) error
	// Clear deletes the bytes at the address, if any.
	Clear(ctx context.Context) error
}

// sizedBlobBytes is BlobBytes that can tell the blob from a damaged copy
// at its address by the copy's length (storage.Placement).
type sizedBlobBytes interface {
	// PresentSize reports whether a file of size bytes is at the
	// address; one of another length counts as missing.
	PresentSize(ctx context.Context, size int64) (bool, error)
}

// decidedBlobBytes is BlobBytes whose caller looked the blob up and ran
// (or skipped) the early placement itself, while it still held what the
// placement needed (the registry, under an upload's renewed claim):
// EarlyDecided true says PlaceEarly answers that outcome, so StoreBlob
// does not look the blob up a second time. The transaction checks the
// row under the digest's lock either way.
type decidedBlobBytes interface {
	EarlyDecided() bool
}

// present reports whether the blob's size bytes are at the address: by
// their length too, when bytes can tell it.
func present(ctx context.Context, bytes BlobBytes, size int64) (bool, error) {
	if s, ok := bytes.(sizedBlobBytes); ok {
		return s.PresentSize(ctx, size)
	}
	return bytes.Present(ctx)
}

// StoreBlob records a blob whose bytes the caller has verified, under the
// garbage-collection protocol: every deletion of a digest's bytes happens
// under the digest's lock, after which the deleter commits, and a blob row
// is recorded under the same lock only once its bytes are at the address.
// With repo set the blob is linked to it in the same transaction (and
// up's session, if set, removed, as LinkBlob says). placed reports whether the blob
// was new.
//
// When the blob is not stored yet and the bytes can be placed early, they
// are placed before the transaction, outside the lock (on SQLite the lock
// is the one writer, which a placement's flushes would otherwise hold);
// the transaction then checks, under the lock, that they are still there
// and places them again if a collection deleted them meanwhile. Otherwise
// (or with the blob stored) bytes that a collection condemned and has not
// deleted yet are deleted (clear) and the caller's placed as the last step
// before commit. A transaction that fails after an early
// placement has its bytes deleted again, under the lock, unless the blob
// is recorded by then: a store that fails leaves nothing behind.
func (db Blobs) StoreBlob(ctx context.Context, repo string, b Blob, up UploadClaim, w Writer, bytes BlobBytes) (placed bool, err error) {
	early := false
	if d, ok := bytes.(decidedBlobBytes); ok && d.EarlyDecided() {
		if early, err = bytes.PlaceEarly(ctx); err != nil {
			return false, fmt.Errorf("place blob: %w", err)
		}
	} else if _, err := db.StoredBlob(ctx, b.Digest); errors.Is(err, ErrBlobNotFound) {
		if early, err = bytes.PlaceEarly(ctx); err != nil {
			return false, fmt.Errorf("place blob: %w", err)
		}
	}
	err = db.tx(ctx, func(tx *sql.Tx) error {
		var err error
		placed, err = db.storeBlob(ctx, tx, repo, b, up, w, bytes, early)
		return err
	})
	if err != nil && early {
		if uerr := db.unplace(context.WithoutCancel(ctx), b.Digest, bytes); uerr != nil {
			err = fmt.Errorf("%w (its bytes placed early stay: %v)", err, uerr)
		}
	}
	return placed, err
}

// StoreBlobIn records a blob in the caller's transaction, as StoreBlob
// does (its bytes placed under the digest's lock; not linked to any
// repository), for content Berth derives that commits with what it was
// derived from (a scan's SBOM). early says the caller placed the bytes
// with PlaceEarly before the transaction; if the transaction then fails,
// the caller undoes that with UnplaceBlob.
func (db Blobs) StoreBlobIn(ctx context.Context, tx Tx, b Blob, bytes BlobBytes, early bool) (placed bool, err error) {
	return db.storeBlob(ctx, tx.tx, "", b, UploadClaim{}, Writer{}, bytes, early)
}

// UnplaceBlob deletes bytes placed early for a blob whose transaction
// failed (StoreBlobIn), unless the blob is recorded meanwhile.
func (db Blobs) UnplaceBlob(ctx context.Context, d digest.Digest, bytes BlobBytes) error {
	return db.unplace(ctx, d, bytes)
}

// storeBlob is the body of StoreBlob's transaction.
func (db *core) storeBlob(ctx context.Context, tx *sql.Tx, repo string, b Blob, up UploadClaim, w Writer, bytes BlobBytes, early bool) (placed bool, err error) {
	if err := db.lockDigest(ctx, tx, b.Digest); err != nil {
		return false, err
	}
	var size int64
	err = tx.QueryRowContext(ctx, db.q("SELECT size FROM blobs WHERE digest = ?"), b.Digest.String()).Scan(&size)
	heal := false
	switch {
	case err == nil:
		// Recorded: its bytes should be at the address. If they are not
		// (deleted by hand, a bucket rule, a restore of older storage),
		// or a file of another size than the row's is there (truncated),
		// these bytes, the same by their digest, put them back; otherwise
		// a push of the blob could never repair it. (Placed early, they
		// are there already: the link was made before, and the request
		// that recorded the blob checked them.)
		if !early {
			there, err := present(ctx, bytes, size)
			if err != nil {
				return false, fmt.Errorf("check recorded blob: %w", err)
			}
			heal = !there
		}
	case errors.Is(err, sql.ErrNoRows):
		res, err := tx.ExecContext(ctx, db.q("DELETE FROM gc_blob_deletes WHERE digest = ?"), b.Digest.String())
		if err != nil {
			return false, fmt.Errorf("settle pending delete: %w", err)
		}
		// Placed early, the bytes at the address are the caller's (or
		// the same bytes before them): they stay, and are checked below.
		if n, _ := res.RowsAffected(); n > 0 && !early {
			if err := bytes.Clear(ctx); err != nil {
				return false, fmt.Errorf("delete condemned bytes: %w", err)
			}
		}
		if _, err := tx.ExecContext(ctx, db.q("INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, ?)"), b.Digest.String(), b.Size, db.now()); err != nil {
			return false, fmt.Errorf("record blob: %w", err)
		}
		if err := db.quotaBlobStored(ctx, tx, b.Digest, b.Size); err != nil { // namespace quota
			return false, err
		}
		placed = true
	default:
		return false, fmt.Errorf("look up blob: %w", err)
	}
	if repo != "" {
		if err := db.linkBlob(ctx, tx, repo, b, up, w); err != nil {
			return false, err
		}
	}
	if heal {
		if err := bytes.Place(ctx); err != nil {
			return false, fmt.Errorf("put back the recorded blob's bytes: %w", err)
		}
		return true, nil
	}
	if !placed {
		return false, nil
	}
	if early {
		// A collection that deleted this digest's bytes after the early
		// placement did so under the lock and committed: the check sees
		// it, as it sees a damaged file that was at the address before
		// (of another size), which the early placement kept.
		there, err := present(ctx, bytes, b.Size)
		if err != nil {
			return false, fmt.Errorf("check placed blob: %w", err)
		}
		if there {
			return true, nil
		}
	}
	// The bytes move into place last, once nothing else in the transaction
	// can fail (only its commit remains): a transaction that rolls back or
	// runs again has placed nothing.
	if err := bytes.Place(ctx); err != nil {
		return false, fmt.Errorf("place blob: %w", err)
	}
	return true, nil
}

// unplace deletes bytes placed early for a blob whose transaction failed,
// under the digest's lock, unless the blob is recorded (by a concurrent
// store, or by the transaction itself if its commit's failure was only
// reported). A store that placed the same bytes early and is not recorded
// yet finds them gone when it checks, and places them again. If this
// fails too, the bytes stay where they are, unreferenced (as after a crash
// between an early placement and its transaction): they are what the
// digest names, and the next upload of it keeps them.
func (db Blobs) unplace(ctx context.Context, d digest.Digest, bytes BlobBytes) error {
	return db.tx(ctx, func(tx *sql.Tx) error {
		if err := db.lockDigest(ctx, tx, d); err != nil {
			return err
		}
		var one int
		err := tx.QueryRowContext(ctx, db.q("SELECT 1 FROM blobs WHERE digest = ?"), d.String()).Scan(&one)
		if !errors.Is(err, sql.ErrNoRows) {
			return err
		}
		return bytes.Clear(ctx)
	})
}
