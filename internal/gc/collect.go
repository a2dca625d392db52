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
	CollectManifest(ctx context.Context, repoID int64, d digest.Digest, cutoff time.Time) (bool, error)
	StaleLinks(ctx context.Context, cutoff time.Time, n int) ([]meta.GCCandidate, error)
	CollectLink(ctx context.Context, repoID int64, d digest.Digest, cutoff time.Time) (bool, error)
	OrphanBlobs(ctx context.Context, cutoff time.Time, n int) ([]meta.GCCandidate, error)
	CondemnBlob(ctx context.Context, d digest.Digest, cutoff time.Time) (bool, error)
	PendingBlobDeletes(ctx context.Context, n int) ([]digest.Digest, error)
	FinishBlobDelete(ctx context.Context, d digest.Digest, remove func(context.Context) error) (bool, error)
}

// Collected says what a collection removed (or, dry, would remove).
type Collected struct {
	Manifests int   `json:"manifests"`
	Links     int   `json:"links"`
	Blobs     int   `json:"blobs"`
	Bytes     int64 `json:"bytes"` // of the blobs whose bytes were deleted (or would be)
}

// collectBatch is how many candidates one query returns.
const collectBatch = 500

// maxRounds bounds the rounds of one collection: deleting an index makes
// its children dangling, deleting a manifest makes its links stale.
const maxRounds = 8

// collect removes what nothing keeps, oldest first: dangling manifests
// (no tag, no parent index, no stored subject), then repository links no
// manifest references, then blobs no repository links, each created (or
// last confirmed) before cutoff and re-checked under lock when removed;
// then the bytes of condemned blobs. A dry collection counts the
// candidates of one round and removes nothing.
func (c *Collector) collect(ctx context.Context, cutoff time.Time, dry bool) (Collected, error) {
	var got Collected
	if dry {
		ms, err := c.gc.DanglingManifests(ctx, cutoff, 1<<30)
		if err != nil {
			return got, err
		}
		ls, err := c.gc.StaleLinks(ctx, cutoff, 1<<30)
		if err != nil {
			return got, err
		}
		bs, err := c.gc.OrphanBlobs(ctx, cutoff, 1<<30)
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
	for round := 0; round < maxRounds; round++ {
		before := got
		if err := c.collectManifests(ctx, cutoff, &got); err != nil {
			errs = append(errs, err)
		}
		if err := c.collectLinks(ctx, cutoff, &got); err != nil {
			errs = append(errs, err)
		}
		if err := c.condemnBlobs(ctx, cutoff, &got); err != nil {
			errs = append(errs, err)
		}
		if got == before || len(errs) > 0 {
			break
		}
	}
	if err := c.deletePending(ctx); err != nil {
		errs = append(errs, err)
	}
	return got, errors.Join(errs...)
}

func (c *Collector) collectManifests(ctx context.Context, cutoff time.Time, got *Collected) error {
	for {
		cands, err := c.gc.DanglingManifests(ctx, cutoff, collectBatch)
		if err != nil {
			return err
		}
		n := 0
		for _, m := range cands {
			ok, err := c.gc.CollectManifest(ctx, m.RepositoryID, m.Digest, cutoff)
			if err != nil {
				return fmt.Errorf("collect manifest %s@%s: %w", m.Repository, m.Digest, err)
			}
			if ok {
				n++
				c.log.Debug("gc: manifest collected", "repository", m.Repository, "digest", m.Digest)
			}
		}
		got.Manifests += n
		if n == 0 || len(cands) < collectBatch {
			return nil
		}
	}
}

func (c *Collector) collectLinks(ctx context.Context, cutoff time.Time, got *Collected) error {
	for {
		cands, err := c.gc.StaleLinks(ctx, cutoff, collectBatch)
		if err != nil {
			return err
		}
		n := 0
		for _, l := range cands {
			ok, err := c.gc.CollectLink(ctx, l.RepositoryID, l.Digest, cutoff)
			if err != nil {
				return fmt.Errorf("collect link %s@%s: %w", l.Repository, l.Digest, err)
			}
			if ok {
				n++
			}
		}
		got.Links += n
		if n == 0 || len(cands) < collectBatch {
			return nil
		}
	}
}

func (c *Collector) condemnBlobs(ctx context.Context, cutoff time.Time, got *Collected) error {
	for {
		cands, err := c.gc.OrphanBlobs(ctx, cutoff, collectBatch)
		if err != nil {
			return err
		}
		n := 0
		for _, b := range cands {
			ok, err := c.gc.CondemnBlob(ctx, b.Digest, cutoff)
			if err != nil {
				return fmt.Errorf("condemn blob %s: %w", b.Digest, err)
			}
			if ok {
				n++
				got.Bytes += b.Size
			}
		}
		got.Blobs += n
		if n == 0 || len(cands) < collectBatch {
			return nil
		}
	}
}

// deletePending deletes the bytes of condemned blobs, including those a
// crash left condemned; a failure leaves the deletion pending for the next
// pass (one blob's failure does not stop the others).
func (c *Collector) deletePending(ctx context.Context) error {
	var errs []error
	for {
		ds, err := c.gc.PendingBlobDeletes(ctx, collectBatch)
		if err != nil {
			return err
		}
		done := 0
		for _, d := range ds {
			ok, err := c.gc.FinishBlobDelete(ctx, d, storage.DeleteBlob(c.store, d))
			if err != nil {
				errs = append(errs, fmt.Errorf("delete blob %s: %w", d, err))
				continue
			}
			if ok {
				done++
			}
		}
		if done == 0 || len(ds) < collectBatch {
			return errors.Join(errs...)
		}
	}
}
