package meta

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"slices"

	"github.com/opencontainers/go-digest"
)

// AnyBlobRecorded reports whether the database records any blob: one
// that records none cannot be the database of a storage that holds some.
func (db Collector) AnyBlobRecorded(ctx context.Context) (bool, error) {
	var one int
	err := db.read.QueryRowContext(ctx, "SELECT 1 FROM blobs LIMIT 1").Scan(&one)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("look for a recorded blob: %w", err)
	}
	return true, nil
}

// UnrecordedBlobs returns those of ds that no blob row records and no
// queued deletion names: bytes in storage that nothing will ever delete
// (a crash between placing a new blob's bytes and its transaction). A
// read, without locks: RemoveUnrecordedBlobs checks again under them.
func (db Collector) UnrecordedBlobs(ctx context.Context, ds []digest.Digest) ([]digest.Digest, error) {
	if len(ds) == 0 {
		return nil, nil
	}
	args := make([]any, 0, 2*len(ds))
	for _, d := range ds {
		args = append(args, d.String())
	}
	args = append(args, args...)
	in := placeholders(len(ds))
	rows, err := db.read.QueryContext(ctx, db.q("SELECT digest FROM blobs WHERE digest IN ("+in+
		") UNION SELECT digest FROM gc_blob_deletes WHERE digest IN ("+in+")"), args...)
	if err != nil {
		return nil, fmt.Errorf("unrecorded blobs: %w", err)
	}
	defer rows.Close()
	known := map[string]bool{}
	for rows.Next() {
		var d string
		if err := rows.Scan(&d); err != nil {
			return nil, fmt.Errorf("unrecorded blobs: %w", err)
		}
		known[d] = true
	}
	if err := rows.Err(); err != nil {
		return nil, fmt.Errorf("unrecorded blobs: %w", err)
	}
	var out []digest.Digest
	for _, d := range ds {
		if !known[d.String()] {
			out = append(out, d)
		}
	}
	return out, nil
}

// RemoveUnrecordedBlobs deletes the bytes of each of ds (remove) under the
// digest's lock, taken in sorted order, where no blob row records it and
// no deletion is queued for it: the same lock under which a store records
// a blob and checks that its bytes placed early are still there (placing
// them again if not), so a push recording the digest meanwhile either
// committed first (the bytes stay) or finds them gone and places its own.
// It returns how many were removed; a failed removal is returned, joined,
// and the rest go on (the next sweep tries again).
func (db Collector) RemoveUnrecordedBlobs(ctx context.Context, ds []digest.Digest, remove func(context.Context, digest.Digest) error) (int, error) {
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
		var one int
		err := tx.QueryRowContext(ctx, db.q(`SELECT 1 FROM blobs WHERE digest = ?
			UNION ALL SELECT 1 FROM gc_blob_deletes WHERE digest = ?`), d.String(), d.String()).Scan(&one)
		if err == nil {
			return errKept
		}
		if !errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("re-check unrecorded blob: %w", err)
		}
		if err := remove(ctx, d); err != nil {
			failed = append(failed, fmt.Errorf("delete the unrecorded bytes of %s: %w", d, err))
			return errKept
		}
		return nil
	})
	if err != nil {
		return n, err
	}
	return n, errors.Join(failed...)
}
