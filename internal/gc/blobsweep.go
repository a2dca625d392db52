package gc

import (
	"context"
	"errors"
	"fmt"
	"path"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/storage"
)

// BlobSweeper finds and removes blob bytes that no row records
// (meta.Collector).
type BlobSweeper interface {
	AnyBlobRecorded(ctx context.Context) (bool, error)
	UnrecordedBlobs(ctx context.Context, ds []digest.Digest) ([]digest.Digest, error)
	RemoveUnrecordedBlobs(ctx context.Context, ds []digest.Digest, remove func(context.Context, digest.Digest) error) (int, error)
}

// blobSweepCycle is how long the blob sweep takes to go once through the
// whole store: each pass lists its share of the 256 directories of
// /blobs/<algorithm>, so that listing storage (thousands of requests on
// S3 for a large store) costs little per pass.
const blobSweepCycle = 24 * time.Hour

// blobShards is how many directories each algorithm's blobs are spread
// over (storage.BlobPath: the first two hex digits).
const blobShards = 256

// ErrNoBlobRecorded is returned by a pass whose blob sweep refused to
// remove anything: storage holds unrecorded blobs old enough to sweep and
// the database records none of the blobs storage holds (checkRecorded).
var ErrNoBlobRecorded = errors.New("refusing to sweep unrecorded blobs")

// blobSweep is one pass's sweep of /blobs.
type blobSweep struct {
	algs   []string // the directories of /blobs, one per algorithm
	cutoff time.Time
	dry    bool
	// matched: the database records a blob this storage holds, seen in
	// a directory this pass listed, or by checkRecorded.
	matched bool
	// checkErr is checkRecorded's failure, which ends the sweep (it is
	// not looked for again in the next directory).
	checkErr error
}

// sweepBlobs removes blob bytes that no blob row records and no queued
// deletion names, last written before cutoff: what a crash between
// placing a new blob's bytes and recording them leaves (and a clean-up
// after a refused store that failed too); and the driver's temporary
// files written before cutoff in the directories it sweeps (a kill
// between writing a small blob and renaming it into place: see
// sweepTempFiles). Each pass covers its share of
// the store (blobSweepCycle); a collector with no interval (one-off
// passes) covers all of it. Before it removes anything it makes sure the
// database is this storage's (checkRecorded). Listing storage is for
// maintenance only; it never answers a request.
func (c *Collector) sweepBlobs(ctx context.Context, cutoff time.Time, dry bool, rep *Report) error {
	if c.sweep == nil {
		return nil
	}
	shards := blobShards
	if iv := c.opts.Interval; iv > 0 && iv < blobSweepCycle {
		shards = max(1, int((int64(blobShards)*int64(iv)+int64(blobSweepCycle)-1)/int64(blobSweepCycle)))
	}
	algs, err := c.store.List(ctx, "/blobs")
	if errors.Is(err, storage.ErrNotFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("list blobs: %w", err)
	}
	// The directories follow the clock, a slot of the cycle each, not a
	// count of passes: a process restarted often, or replicas started
	// together, still cover every directory once per cycle. A pass goes
	// on from where this process's last one stopped, so one that comes
	// late (a long pass before it, a missed tick) skips none.
	first, n := 0, blobShards
	sweptTo := c.blobSweptTo.Load()
	if shards < blobShards {
		end := c.now().UnixNano()/int64(blobSweepCycle/blobShards) + int64(shards)
		start := end - int64(shards)
		if sweptTo > 0 && sweptTo < start {
			start = max(sweptTo, end-blobShards)
		}
		if !dry {
			c.blobSweptTo.Store(end)
		}
		first, n = int(start%blobShards), int(end-start)
	}
	sw := &blobSweep{algs: algs, cutoff: cutoff, dry: dry}
	var errs []error
	for i := range n {
		shard := fmt.Sprintf("%02x", (first+i)%blobShards)
		for _, a := range algs {
			dir := path.Join("/blobs", path.Base(a), shard)
			if !dry {
				if err := c.sweepTempFiles(ctx, dir, cutoff); err != nil {
					errs = append(errs, err)
				}
			}
			err := c.sweepBlobDir(ctx, sw, dir, digest.Algorithm(path.Base(a)), rep)
			if sw.checkErr != nil {
				if !dry {
					c.blobSweptTo.Store(sweptTo) // the next pass tries these directories again
				}
				return sw.checkErr
			}
			if err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// checkRecorded makes sure, before the sweep removes anything, that the
// database is this storage's: against a database that records none of
// the blobs storage holds (a new, empty one a tool created where the
// registry's was meant, or another registry's), every blob looks like a
// crash's leftover. Called only when the directories listed so far hold
// unrecorded blobs to remove and no recorded one, it lists the others
// until it finds a blob the database records, and returns
// ErrNoBlobRecorded if none is. Its failure is kept in sw.checkErr.
func (c *Collector) checkRecorded(ctx context.Context, sw *blobSweep) error {
	if sw.matched {
		return nil
	}
	sw.checkErr = c.findRecorded(ctx, sw)
	return sw.checkErr
}

// findRecorded is checkRecorded's search. A database that records no
// blob at all is refused at once, without listing the store (a pass
// would otherwise list all of it each time).
func (c *Collector) findRecorded(ctx context.Context, sw *blobSweep) error {
	if recorded, err := c.sweep.AnyBlobRecorded(ctx); err != nil {
		return err
	} else if !recorded {
		return fmt.Errorf("%w: storage holds blobs under /blobs and the database records none of them (it records no blob): "+
			"is this the database of this storage (database.url, BERTH_DATABASE_URL, --data-dir)?", ErrNoBlobRecorded)
	}
	unrecorded := 0
	for i := range blobShards {
		for _, a := range sw.algs {
			dir := path.Join("/blobs", path.Base(a), fmt.Sprintf("%02x", i))
			ds, err := c.listBlobDir(ctx, dir, digest.Algorithm(path.Base(a)))
			if err != nil {
				return err
			}
			for start := 0; start < len(ds); start += uploadBatch {
				batch := ds[start:min(start+uploadBatch, len(ds))]
				un, err := c.sweep.UnrecordedBlobs(ctx, batch)
				if err != nil {
					return err
				}
				if len(un) < len(batch) {
					sw.matched = true
					return nil
				}
				unrecorded += len(un)
			}
		}
	}
	return fmt.Errorf("%w: storage holds %d blobs under /blobs and the database records none of them: "+
		"is this the database of this storage (database.url, BERTH_DATABASE_URL, --data-dir)?", ErrNoBlobRecorded, unrecorded)
}

// listBlobDir lists the blobs of one /blobs/<algorithm>/<xx> directory
// (none when it does not exist), leaving out what is not a blob's name.
func (c *Collector) listBlobDir(ctx context.Context, dir string, alg digest.Algorithm) ([]digest.Digest, error) {
	entries, err := c.store.List(ctx, dir)
	if errors.Is(err, storage.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", dir, err)
	}
	var ds []digest.Digest
	for _, e := range entries {
		d := digest.NewDigestFromEncoded(alg, path.Base(e))
		if d.Validate() != nil || storage.BlobPath(d) != path.Join(dir, path.Base(e)) {
			continue // not a blob's name: left alone
		}
		ds = append(ds, d)
	}
	return ds, nil
}

// tempRemover is a driver that leaves temporary files of its own beside
// the files it writes, which List does not show (the filesystem driver's
// PutContent, killed before its rename): RemoveTempFiles removes those of
// a directory last written before a time.
type tempRemover interface {
	RemoveTempFiles(ctx context.Context, dir string, before time.Time) (int, error)
}

// sweepTempFiles removes the driver's temporary files in dir last
// written before cutoff. They hold no blob any row or request can name
// (a write under way renames its file within moments), so the database
// need not be checked first.
func (c *Collector) sweepTempFiles(ctx context.Context, dir string, cutoff time.Time) error {
	tr, ok := c.store.(tempRemover)
	if !ok {
		return nil
	}
	n, err := tr.RemoveTempFiles(ctx, dir, cutoff)
	if n > 0 {
		c.log.Info("leftover temporary files removed", "dir", dir, "files", n)
	}
	if err != nil {
		return fmt.Errorf("remove leftover temporary files in %s: %w", dir, err)
	}
	return nil
}

// sweepBlobDir sweeps one /blobs/<algorithm>/<xx> directory.
func (c *Collector) sweepBlobDir(ctx context.Context, sw *blobSweep, dir string, alg digest.Algorithm, rep *Report) error {
	cutoff, dry := sw.cutoff, sw.dry
	ds, err := c.listBlobDir(ctx, dir, alg)
	if err != nil {
		return err
	}
	for start := 0; start < len(ds); start += uploadBatch {
		batch := ds[start:min(start+uploadBatch, len(ds))]
		unrecorded, err := c.sweep.UnrecordedBlobs(ctx, batch)
		if err != nil {
			return err
		}
		if len(unrecorded) < len(batch) {
			sw.matched = true
		}
		size := map[digest.Digest]int64{}
		var old []digest.Digest
		for _, d := range unrecorded {
			fi, err := c.store.Stat(ctx, storage.BlobPath(d))
			if err != nil || fi.IsDir || fi.ModTime.After(cutoff) {
				continue // gone meanwhile, or placed recently: a push may be about to record it
			}
			size[d] = fi.Size
			old = append(old, d)
		}
		if len(old) == 0 {
			continue
		}
		if err := c.checkRecorded(ctx, sw); err != nil {
			return err
		}
		if dry {
			for _, d := range old {
				rep.BlobLeftovers++
				rep.BlobLeftoverBytes += size[d]
			}
			continue
		}
		// In transactions of removeBatch, as condemned blobs are deleted:
		// each holds the writer (SQLite) or its digests' locks while
		// storage deletes.
		n, err := inChunks(old, func(b []digest.Digest) (int, error) {
			var removed []digest.Digest
			n, err := c.sweep.RemoveUnrecordedBlobs(ctx, b, func(ctx context.Context, d digest.Digest) error {
				if err := storage.DeleteBlob(ctx, c.store, d); err != nil {
					return err
				}
				removed = append(removed, d)
				return nil
			})
			if n == len(removed) { // the transaction did not run again
				for _, d := range removed {
					rep.BlobLeftoverBytes += size[d]
				}
			}
			return n, err
		})
		rep.BlobLeftovers += n
		if n > 0 {
			c.log.Info("unrecorded blob bytes removed", "dir", dir, "blobs", n)
		}
		if err != nil {
			return fmt.Errorf("remove unrecorded blob bytes in %s: %w", dir, err)
		}
	}
	return nil
}
