// Package gc removes what nobody will use again, online, in every replica:
// manifests that no tag, index or stored subject keeps, repository links
// to blobs that no manifest of the repository references, blobs that no
// repository links (rows, then bytes), upload sessions abandoned by their
// clients or past their max age (and upload and blob bytes a crash left
// behind), and bookkeeping rows past their retention (delivered events,
// finished jobs, notification attempts, audit entries). Every step is a
// delete that re-checks its condition under lock, so replicas running it
// at once do no harm; the protocol that keeps every acknowledged push
// whole is in docs/architecture.md.
package gc

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"path"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/storage"
)

// Stores are the parts of the metadata store the collector uses.
type Stores struct {
	Uploads   UploadStore // meta.Uploads
	Collector Collection  // meta.Collector
	Retention Pruner      // meta.Collector
	Lifecycle Lifecycle   // meta.Manifests; nil applies no tag policy
	Sweep     BlobSweeper // meta.Collector; nil leaves unrecorded blob bytes alone
}

// UploadStore finds and expires abandoned upload sessions (meta.Uploads).
type UploadStore interface {
	ExpiredUploadsAt(ctx context.Context, cut meta.UploadCutoffs, n int) ([]meta.Upload, error)
	ExpireUploadAt(ctx context.Context, id string, cut meta.UploadCutoffs) (bool, error)
	UploadsExist(ctx context.Context, ids []string) (map[string]bool, error)
}

// Pruner deletes bookkeeping rows past their retention (meta.Collector).
type Pruner interface {
	Prune(ctx context.Context, r meta.Retention, dry bool) (meta.PruneCounts, error)
}

// Options configure the collector.
type Options struct {
	// Delay is the grace period: nothing created, linked or confirmed more
	// recently is collected. Zero collects no manifests or blobs.
	Delay time.Duration
	// Interval between passes (Run).
	Interval time.Duration
	// UploadExpiry: an upload session nobody wrote to for this long is
	// removed with its bytes; and a blob link no manifest references is
	// collected once it was first made this long ago (at least Delay),
	// however recently it was confirmed or uploads went on in its
	// repository.
	UploadExpiry time.Duration
	// UploadMaxAge: an upload session opened this long ago is removed
	// with its bytes, however recently it was written to; 0 removes none
	// for its age.
	UploadMaxAge time.Duration
	// Retention of bookkeeping rows.
	Retention meta.Retention
	Logger    *slog.Logger
	// Metrics, if set, is told of every pass that is not dry.
	Metrics Metrics
}

// Metrics observes passes: what each removed and whether it failed.
type Metrics interface {
	GCPass(rep Report, err error)
}

// Collector runs passes.
type Collector struct {
	passState
	db     UploadStore
	prune  Pruner
	policy Lifecycle
	gc     Collection
	sweep  BlobSweeper
	// blobSweptTo is the end (a slot of blobSweepCycle, counted from the
	// Unix epoch) of the directories this process's last blob sweep
	// covered; 0 before the first.
	blobSweptTo atomic.Int64
	store       storage.Driver
	opts        Options
	log         *slog.Logger
	now         func() time.Time
}

// New returns a collector.
func New(db Stores, store storage.Driver, opts Options) *Collector {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Collector{db: db.Uploads, prune: db.Retention, policy: db.Lifecycle, gc: db.Collector, sweep: db.Sweep, store: store, opts: opts, log: opts.Logger, now: time.Now}
}

// Report says what a pass removed (or, dry, would remove).
type Report struct {
	DryRun        bool      `json:"dry_run"`
	Collected     Collected `json:"collected"`
	Uploads       int       `json:"uploads"`        // expired sessions
	UploadBytes   int64     `json:"upload_bytes"`   // their recorded bytes
	Leftovers     int       `json:"leftovers"`      // upload directories with no session
	LeftoverBytes int64     `json:"leftover_bytes"` // their bytes
	// Blob bytes that no blob row records (a crash between placing and
	// recording them), removed from the part of the store this pass swept.
	BlobLeftovers     int              `json:"blob_leftovers"`
	BlobLeftoverBytes int64            `json:"blob_leftover_bytes"`
	Pruned            meta.PruneCounts `json:"pruned"`
	ExpiredTags       int              `json:"expired_tags"`   // tags past their expiration, deleted
	PrunedTags        int              `json:"pruned_tags"`    // tags auto-prune policies deleted
	ExpiryNotices     int              `json:"expiry_notices"` // repo_image_expiry events appended
	Took              time.Duration    `json:"took"`
}

// uploadBatch is how many expired sessions one query returns.
const uploadBatch = 500

// Pass runs one full pass now.
func (c *Collector) Pass(ctx context.Context, dry bool) (Report, error) {
	start := c.now()
	rep := Report{DryRun: dry}
	cutoff := start.Add(-c.opts.UploadExpiry)
	var errs []error
	if !dry {
		if err := c.lifecycle(ctx, &rep); err != nil {
			errs = append(errs, err)
		}
	}
	if c.opts.Delay > 0 {
		got, err := c.collect(ctx, c.cutoffsAt(start), dry)
		rep.Collected = got
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := c.expireUploads(ctx, c.uploadCutoffs(start), dry, &rep); err != nil {
		errs = append(errs, err)
	}
	counted := map[string]bool{}
	if err := c.sweepLeftovers(ctx, cutoff, dry, &rep, counted); err != nil {
		errs = append(errs, err)
	}
	if err := c.sweepMultipart(ctx, cutoff, dry, &rep, counted); err != nil {
		errs = append(errs, err)
	}
	if err := c.sweepBlobs(ctx, cutoff, dry, &rep); err != nil {
		errs = append(errs, err)
	}
	pruned, err := c.prune.Prune(ctx, c.opts.Retention, dry)
	rep.Pruned = pruned
	if err != nil {
		errs = append(errs, err)
	}
	rep.Took = c.now().Sub(start)
	err = errors.Join(errs...)
	if !dry {
		c.record(rep, err)
		if c.opts.Metrics != nil {
			c.opts.Metrics.GCPass(rep, err)
		}
	}
	return rep, err
}

// uploadCutoffs are the upload sessions' expiry at now: idle for
// UploadExpiry, or opened UploadMaxAge ago (if set) however active: a
// client writing to its sessions now and then cannot keep their bytes,
// which count in no quota, forever.
func (c *Collector) uploadCutoffs(now time.Time) meta.UploadCutoffs {
	cut := meta.UploadCutoffs{Idle: now.Add(-c.opts.UploadExpiry)}
	if c.opts.UploadMaxAge > 0 {
		cut.Started = now.Add(-c.opts.UploadMaxAge)
	}
	return cut
}

// expireUploads removes expired sessions (cut: idle, or past their max
// age): the row first (so that no client can resume into bytes being
// deleted; a client that resumed an idle one meanwhile keeps its
// session), then the bytes.
func (c *Collector) expireUploads(ctx context.Context, cut meta.UploadCutoffs, dry bool, rep *Report) error {
	if dry {
		// Nothing is removed, so a next query would find the same
		// sessions again: one query reads them all, as a dry collection
		// reads its candidates.
		ups, err := c.db.ExpiredUploadsAt(ctx, cut, dryLimit)
		if err != nil {
			return err
		}
		for _, u := range ups {
			rep.Uploads++
			rep.UploadBytes += u.Size
		}
		return nil
	}
	seen := map[string]bool{}
	for {
		ups, err := c.db.ExpiredUploadsAt(ctx, cut, uploadBatch)
		if err != nil {
			return err
		}
		progress := false
		for _, u := range ups {
			if seen[u.ID] {
				continue
			}
			seen[u.ID] = true
			progress = true
			gone, err := c.db.ExpireUploadAt(ctx, u.ID, cut)
			if err != nil {
				return err
			}
			if !gone {
				continue
			}
			if err := c.store.Delete(ctx, storage.UploadRoot(u.ID)); err != nil && !errors.Is(err, storage.ErrNotFound) {
				// The row is gone: the leftover sweep retries the bytes.
				c.log.Warn("remove expired upload's bytes", "upload", u.ID, "err", err)
			}
			rep.Uploads++
			rep.UploadBytes += u.Size
		}
		if !progress || len(ups) < uploadBatch {
			return nil
		}
	}
}

// sweepLeftovers removes upload files and directories that no session owns and that
// were last written before cutoff: bytes of uploads whose session ended
// without cleaning up (a crash between the commit and the delete, an
// ingest interrupted by a kill); sweepMultipart does the same for S3
// multipart uploads that have no object. Listing storage is for maintenance only;
// it never answers a request.
// Swept upload ids are added to counted.
func (c *Collector) sweepLeftovers(ctx context.Context, cutoff time.Time, dry bool, rep *Report, counted map[string]bool) error {
	prefixes, err := c.store.List(ctx, "/uploads")
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list uploads: %w", err)
	}
	for _, p := range prefixes {
		dir := path.Join("/uploads", path.Base(p))
		ids, err := c.store.List(ctx, dir)
		if errors.Is(err, storage.ErrNotFound) {
			continue
		}
		if err != nil {
			return fmt.Errorf("list %s: %w", dir, err)
		}
		// An entry is an upload's file (<id>), an older upload's
		// directory (<id>, holding data), or what a driver keeps beside
		// a file (S3's <id>.tail.<n>): each belongs to the id its name
		// starts with.
		var names []string
		seen := map[string]bool{}
		for _, e := range ids {
			if id := storage.UploadIDOf(e); len(id) >= 2 && !seen[id] {
				seen[id] = true
				names = append(names, id)
			}
		}
		live, err := c.db.UploadsExist(ctx, names)
		if err != nil {
			return err
		}
		for _, e := range ids {
			id := storage.UploadIDOf(e)
			if live[id] || len(id) < 2 {
				continue
			}
			entry := path.Join(dir, path.Base(e))
			size, newest, err := c.usage(ctx, entry)
			if errors.Is(err, storage.ErrNotFound) {
				continue // gone since it was listed: an upload that finished or was cancelled
			}
			if err != nil {
				c.log.Warn("inspect upload leftovers", "path", entry, "err", err)
				continue
			}
			if newest.After(cutoff) {
				continue // an upload or ingest in progress (its session row may not be committed yet)
			}
			if !dry {
				if err := c.store.Delete(ctx, entry); err != nil && !errors.Is(err, storage.ErrNotFound) {
					c.log.Warn("remove upload leftovers", "path", entry, "err", err)
					continue
				}
			}
			if !counted[id] {
				rep.Leftovers++
			}
			counted[id] = true
			rep.LeftoverBytes += size
		}
	}
	return nil
}

// usage sums the sizes of an upload's file, or of the files in an older
// upload's directory, and returns the newest modification time.
func (c *Collector) usage(ctx context.Context, dir string) (int64, time.Time, error) {
	st, err := c.store.Stat(ctx, dir)
	if err != nil {
		return 0, time.Time{}, err
	}
	if !st.IsDir {
		return st.Size, st.ModTime, nil
	}
	newest := st.ModTime
	entries, err := c.store.List(ctx, dir)
	if err != nil {
		return 0, time.Time{}, err
	}
	var size int64
	for _, e := range entries {
		fi, err := c.store.Stat(ctx, path.Join(dir, path.Base(e)))
		if err != nil {
			continue
		}
		size += fi.Size
		if fi.ModTime.After(newest) {
			newest = fi.ModTime
		}
	}
	return size, newest, nil
}

// Run runs a pass every Interval until ctx is done.
func (c *Collector) Run(ctx context.Context) {
	t := time.NewTicker(c.opts.Interval)
	defer t.Stop()
	for {
		rep, err := c.Pass(ctx, false)
		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.log.Warn("gc pass", "err", err)
		case rep.Uploads+rep.Leftovers > 0 || rep.Pruned != (meta.PruneCounts{}) || rep.Collected != (Collected{}):
			c.log.Info("gc pass", "manifests", rep.Collected.Manifests, "links", rep.Collected.Links, "blobs", rep.Collected.Blobs,
				"blob_bytes", rep.Collected.Bytes, "expired_uploads", rep.Uploads, "upload_bytes", rep.UploadBytes,
				"leftovers", rep.Leftovers, "leftover_bytes", rep.LeftoverBytes, "pruned_events", rep.Pruned.Events,
				"pruned_jobs", rep.Pruned.Jobs, "pruned_attempts", rep.Pruned.Attempts, "pruned_audit", rep.Pruned.Audit, "pruned_login_counters", rep.Pruned.Logins,
				"pruned_tag_history", rep.Pruned.TagHistory, "pruned_expiry_notices", rep.Pruned.ExpiryNotices, "took", rep.Took)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
