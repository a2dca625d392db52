package meta

import (
	"context"
	"fmt"
	"time"
)

// StorageFigures are what the storage holds as the metadata store knows
// it: the blobs (each stored once, whatever links it) and the uploads in
// progress, for the superuser's admin page.
type StorageFigures struct {
	Blobs      int64
	BlobBytes  int64
	Uploads    int64
	UploadSize int64     // bytes received so far by the uploads in progress
	OldestUp   time.Time // the oldest upload's start; zero when none
}

// StorageFigures reads the storage figures: one pass over the blobs table
// and one over the uploads (both small rows; no storage listing).
func (db *DB) StorageFigures(ctx context.Context) (StorageFigures, error) {
	var f StorageFigures
	if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(size), 0) FROM blobs`).Scan(&f.Blobs, &f.BlobBytes); err != nil {
		return f, fmt.Errorf("blob figures: %w", err)
	}
	var oldest int64
	if err := db.read.QueryRowContext(ctx, `SELECT COUNT(*), COALESCE(SUM(size), 0), COALESCE(MIN(started_at), 0) FROM uploads`).
		Scan(&f.Uploads, &f.UploadSize, &oldest); err != nil {
		return f, fmt.Errorf("upload figures: %w", err)
	}
	f.OldestUp = timeOrZero(oldest)
	return f, nil
}
