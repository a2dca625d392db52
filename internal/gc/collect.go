package gc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/storage"
)

// Collection is what the collector needs of the metadata store to collect
// manifests and blobs (meta's gcstore.go describes each step).
type Collection interface {
	DanglingManifests(ctx context.Context, cutoff time.Time, n int) ([]meta.GCCandidate, error)
	CollectManifests(ctx context.Context, cands []meta.GCCandidate, cutoff time.Time) (int, error)
	StaleLinks(ctx context.Context, cutoff, firstLinkedBefore time.Time, n int) ([]meta.GCCandidate, error)
	CollectLinks(ctx context.Context, cands []meta.GCCandidate, cutoff, firstLinkedBefore time.Time) (int, error)
	OrphanBlobs(ctx context.Context, cutoff time.Time, n int) ([]meta.GCCandidate, error)
	CondemnBlobs(ctx context.Context, ds []digest.Digest, cutoff time.Time) (int, error)
	PendingBlobDeletes(ctx context.Context, n int) ([]digest.Digest, error)
	FinishBlobDeletes(ctx context.Context, ds []digest.Digest, remove func(context.Context, digest.Digest) error) (int, error)
}

// Collected says what a collection removed (or, dry, would remove).
type Collected struct {
	Manifests int `json:"manifests"`
	Links     int `json:"links"`
	Blobs     int `json:"blobs"`
	// Bytes are the blob bytes the pass deleted from storage (those of
	// blobs condemned earlier too; not those a refused deletion left),
	// or, dry, those of the blobs it would condemn.
	Bytes int64 `json:"bytes"`
}

// collectBatch is how many candidates one query returns.
const collectBatch = 500

// dryLimit bounds the candidates a dry run reads, in one query each: it
// removes nothing, so a second query would find the same ones again.
const dryLimit = 1 << 30

// maxRounds bounds the rounds of one collection: deleting an index makes
// its children dangling, deleting a manifest makes its links stale.
const maxRounds = 8

// cutoffs are the times a collection compares with.
type cutoffs struct {
	// delay: nothing created, linked or confirmed since is removed...
	delay time.Time
	// ...but an unreferenced link first made before linked goes whatever
	// its confirmations and the uploads in its repository.
	linked time.Time
}

// cutoffsAt are the cutoffs of a collection at now: the delay's, and
// gc.uploadExpiry's (never less than the delay) for unreferenced links.
// An upload session idle that long is gone, so a push still going on
// needs no unreferenced link first made before; without the cap a client
// could keep blobs that no manifest references, which count in no
// namespace's quota, by confirming them every half delay (a HEAD) or by
// keeping an upload session alive in the repository.
func (c *Collector) cutoffsAt(now time.Time) cutoffs {
	return cutoffs{delay: now.Add(-c.opts.Delay), linked: now.Add(-max(c.opts.UploadExpiry, c.opts.Delay))}
}

// collect removes what nothing keeps, oldest first: dangling manifests
// (no tag, no parent index, no stored subject), then repository links no
// manifest references, then blobs no repository links, each created (or
// last confirmed) before the delay's cutoff (or, a link, first made
// before the links' cutoff) and re-checked under lock when removed, and
// the bytes of each batch of blobs it condemned; first, the bytes of
// blobs condemned before (deletePending). A dry collection counts the
// candidates of one round and removes nothing.
func (c *Collector) collect(ctx context.Context, cut cutoffs, dry bool) (Collected, error) {
	cutoff := cut.delay
	var got Collected
	if dry {
		ms, err := c.gc.DanglingManifests(ctx, cutoff, dryLimit)
		if err != nil {
			return got, err
		}
		ls, err := c.gc.StaleLinks(ctx, cutoff, cut.linked, dryLimit)
		if err != nil {
			return got, err
		}
		bs, err := c.gc.OrphanBlobs(ctx, cutoff, dryLimit)
		if err != nil {
			return got, err
		}
		got.Manifests, got.Links, got.Blobs = len(ms), len(ls), len(bs)
		for _, b := range bs {
			got.Bytes += b.Size
		}
		return got, nil
	}
	var errs []error
	// Deletions are not rounds' errors: the rounds go on without them.
	pending := c.deletePending(ctx, &got)
	var refused error // the first failure to delete the bytes of this pass's condemned blobs
	for round := 0; round < maxRounds; round++ {
		before := got
		if err := c.collectManifests(ctx, cutoff, &got); err != nil {
			errs = append(errs, err)
		}
		if err := c.collectLinks(ctx, cut, &got); err != nil {
			errs = append(errs, err)
		}
		if err := c.condemnBlobs(ctx, cutoff, &got, &refused); err != nil {
			errs = append(errs, err)
		}
		if got == before || len(errs) > 0 {
			break
		}
	}
	return got, errors.Join(append(errs, pending, refused)...)
}

// removeBatch is how many removals one transaction makes: large enough to
// amortize the commit, small enough not to hold SQLite's writer (or many
// row locks) for long while pushes wait.
const removeBatch = 100

// inChunks calls f on consecutive chunks of up to removeBatch items.
func inChunks[T any](items []T, f func([]T) (int, error)) (int, error) {
	total := 0
	for start := 0; start < len(items); start += removeBatch {
		n, err := f(items[start:min(start+removeBatch, len(items))])
		total += n
		if err != nil {
			return total, err
		}
	}
	return total, nil
}

func (c *Collector) collectManifests(ctx context.Context, cutoff time.Time, got *Collected) error {
	for {
		cands, err := c.gc.DanglingManifests(ctx, cutoff, collectBatch)
		if err != nil {
			return err
		}
		n, err := inChunks(cands, func(b []meta.GCCandidate) (int, error) { return c.gc.CollectManifests(ctx, b, cutoff) })
		got.Manifests += n
		if err != nil {
			return fmt.Errorf("collect manifests: %w", err)
		}
		if n == 0 || len(cands) < collectBatch {
			return nil
		}
	}
}

func (c *Collector) collectLinks(ctx context.Context, cut cutoffs, got *Collected) error {
	for {
		cands, err := c.gc.StaleLinks(ctx, cut.delay, cut.linked, collectBatch)
		if err != nil {
			return err
		}
		n, err := inChunks(cands, func(b []meta.GCCandidate) (int, error) { return c.gc.CollectLinks(ctx, b, cut.delay, cut.linked) })
		got.Links += n
		if err != nil {
			return fmt.Errorf("collect links: %w", err)
		}
		if n == 0 || len(cands) < collectBatch {
			return nil
		}
	}
}

// condemnBlobs condemns the blobs no repository links, a batch at a
// time, and deletes the bytes of each batch it condemned at once, with
// the sizes its candidates were read with (so a pass holds one batch's
// sizes, however many blobs it condemns). After a deletion failed
// (*refused), it deletes no more bytes: the deletions stay queued for the
// next pass (deletePending), as a failure leaves the rest of the queue.
func (c *Collector) condemnBlobs(ctx context.Context, cutoff time.Time, got *Collected, refused *error) error {
	for {
		cands, err := c.gc.OrphanBlobs(ctx, cutoff, collectBatch)
		if err != nil {
			return err
		}
		ds := make([]digest.Digest, len(cands))
		sizes := make(map[digest.Digest]int64, len(cands))
		for i, b := range cands {
			ds[i], sizes[b.Digest] = b.Digest, b.Size
		}
		n, err := inChunks(ds, func(b []digest.Digest) (int, error) { return c.gc.CondemnBlobs(ctx, b, cutoff) })
		got.Blobs += n
		if n > 0 && *refused == nil {
			// A candidate not condemned has no deletion queued: finishing
			// it does nothing.
			_, *refused = c.finishDeletes(ctx, ds, sizes, got)
		}
		if err != nil {
			return fmt.Errorf("condemn blobs: %w", err)
		}
		if n == 0 || len(cands) < collectBatch {
			return nil
		}
	}
}

// deletePending deletes the bytes of the blobs condemned before this pass:
// those a crash left condemned, another replica condemned, or a storage
// refused to delete (queued again). A failure leaves the rest pending for
// the next pass.
func (c *Collector) deletePending(ctx context.Context, got *Collected) error {
	for {
		ds, err := c.gc.PendingBlobDeletes(ctx, collectBatch)
		if err != nil {
			return err
		}
		done, err := c.finishDeletes(ctx, ds, nil, got)
		if err != nil {
			return err
		}
		if done == 0 || len(ds) < collectBatch {
			return nil
		}
	}
}

// finishDeletes deletes the bytes of the condemned blobs among ds (a
// deletion no longer queued is skipped: finished by another replica, or
// settled by a store of the blob again). It adds to got.Bytes the bytes
// it deleted: of each blob whose removal succeeded (where a refused one,
// an object lock say, is not), once (a deletion is finished by one
// replica, under the digest's lock), by its size in sizes (as this pass
// condemned it) or else as stored.
func (c *Collector) finishDeletes(ctx context.Context, ds []digest.Digest, sizes map[digest.Digest]int64, got *Collected) (int, error) {
	// A transaction that runs again removes again: count each digest
	// once, with what its first removal found.
	removed := map[digest.Digest]int64{}
	done, err := inChunks(ds, func(b []digest.Digest) (int, error) {
		return c.gc.FinishBlobDeletes(ctx, b, func(ctx context.Context, d digest.Digest) error {
			size, known := sizes[d]
			if !known {
				if fi, err := c.store.Stat(ctx, storage.BlobPath(d)); err == nil {
					size = fi.Size
				}
			}
			if err := storage.DeleteBlob(ctx, c.store, d); err != nil {
				return err
			}
			if _, seen := removed[d]; !seen {
				removed[d] = size
			}
			return nil
		})
	})
	for _, n := range removed {
		got.Bytes += n
	}
	if err != nil {
		return done, fmt.Errorf("delete blobs: %w", err)
	}
	return done, nil
}
