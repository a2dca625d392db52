package gc

import (
	"context"
	"fmt"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/storage"
)

// sweepMultipart aborts the unfinished multipart uploads (S3) under
// /uploads that were idle since before cutoff (initiated before it, and
// no part uploaded since: see storage.MultipartLister's drivers) and whose
// upload session no longer exists: a crash between deleting an upload's
// row and its storage can leave a multipart upload with no object, which
// the object listing of sweepLeftovers cannot see. An ingest (a mirror's
// or an import's copy) has no session: the parts it keeps uploading keep
// it, however long it runs. counted holds the upload ids sweepLeftovers
// already counted (a dry run removes nothing, so they are still listed).
func (c *Collector) sweepMultipart(ctx context.Context, cutoff time.Time, dry bool, rep *Report, counted map[string]bool) error {
	ml, ok := c.store.(storage.MultipartLister)
	if !ok {
		return nil
	}
	ups, err := ml.MultipartUploads(ctx, "/uploads", cutoff)
	if err != nil {
		return fmt.Errorf("list multipart uploads: %w", err)
	}
	byID := map[string][]storage.MultipartUpload{}
	var ids []string
	for _, u := range ups {
		// /uploads/<2>/<id>/...
		parts := strings.Split(u.Path, "/")
		if len(parts) < 4 || counted[parts[3]] {
			continue
		}
		id := parts[3]
		if byID[id] == nil {
			ids = append(ids, id)
		}
		byID[id] = append(byID[id], u)
	}
	for start := 0; start < len(ids); start += uploadBatch {
		batch := ids[start:min(start+uploadBatch, len(ids))]
		live, err := c.db.UploadsExist(ctx, batch)
		if err != nil {
			return err
		}
		for _, id := range batch {
			if live[id] {
				continue
			}
			aborted := true
			for _, u := range byID[id] {
				if dry {
					continue
				}
				if err := ml.AbortMultipartUpload(ctx, u); err != nil {
					c.log.Warn("abort orphaned multipart upload", "path", u.Path, "err", err)
					aborted = false
				}
			}
			if aborted {
				c.log.Info("orphaned multipart upload aborted", "upload", id, "dry_run", dry)
				rep.Leftovers++
			}
		}
	}
	return c.sweepBlobMultipart(ctx, ml, cutoff, dry, rep)
}

// sweepBlobMultipart aborts the unfinished multipart uploads under /blobs
// idle since before cutoff: a server-side copy of a blob over 5 GiB into
// place (storage/s3's Move) runs inside the transaction that records the
// blob, and a crash during it leaves its parts, which no object shows and
// a later store of the same blob does not reuse.
func (c *Collector) sweepBlobMultipart(ctx context.Context, ml storage.MultipartLister, cutoff time.Time, dry bool, rep *Report) error {
	ups, err := ml.MultipartUploads(ctx, "/blobs", cutoff)
	if err != nil {
		return fmt.Errorf("list multipart uploads under /blobs: %w", err)
	}
	for _, u := range ups {
		if !dry {
			if err := ml.AbortMultipartUpload(ctx, u); err != nil {
				c.log.Warn("abort orphaned multipart copy", "path", u.Path, "err", err)
				continue
			}
		}
		c.log.Info("orphaned multipart copy aborted", "path", u.Path, "dry_run", dry)
		rep.BlobLeftovers++
	}
	return nil
}
