package gc

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/berth-dev/berth/internal/meta"
)

// Lifecycle applies Quay's tag policies (meta.Manifests): expirations,
// auto-prune policies, and repo_image_expiry notices. Optional in Stores.
type Lifecycle interface {
	ExpiredTags(ctx context.Context, now time.Time, n int) ([]meta.ExpiredTag, error)
	ExpireTag(ctx context.Context, e meta.ExpiredTag, now time.Time, actor string) (bool, error)
	PrunedRepositories(ctx context.Context) ([]string, error)
	PruneRepository(ctx context.Context, repo string, now time.Time, actor string) ([]string, error)
	NoticeExpiringTags(ctx context.Context, now time.Time) (int, error)
}

// Actors of the tag policies, in events and the audit trail.
const (
	ExpiryActor    = "berth-expiry"
	AutoPruneActor = "berth-autoprune"
)

// expiredBatch is how many expired tags one query returns.
const expiredBatch = 500

// lifecycle announces tags about to expire, deletes the expired ones and
// applies auto-prune policies, before collection: what they remove goes
// to the time machine, and is collected when it runs out. A dry run
// changes nothing and reports nothing of them. A tag or repository that
// fails is logged and the others are still done; the pass then fails
// with every such error. A repository deleted while the pass runs is
// skipped (meta reports nothing pruned in it). Tags pruned before a
// repository's pruning failed count in the report.
func (c *Collector) lifecycle(ctx context.Context, rep *Report) error {
	if c.policy == nil {
		return nil
	}
	now := c.now()
	var errs []error
	n, err := c.policy.NoticeExpiringTags(ctx, now)
	rep.ExpiryNotices += n
	if err != nil {
		c.log.Warn("announce expiring tags", "err", err)
		errs = append(errs, fmt.Errorf("announce expiring tags: %w", err))
	}
	seen := map[string]bool{}
	for {
		tags, err := c.policy.ExpiredTags(ctx, now, expiredBatch)
		if err != nil {
			errs = append(errs, fmt.Errorf("list expired tags: %w", err))
			break
		}
		progress := false
		for _, t := range tags {
			key := t.Repository + ":" + t.Tag
			if seen[key] {
				continue
			}
			seen[key] = true
			progress = true
			ok, err := c.policy.ExpireTag(ctx, t, now, ExpiryActor)
			if ctx.Err() != nil {
				return errors.Join(append(errs, context.Cause(ctx))...)
			}
			if err != nil {
				c.log.Warn("expire tag", "repository", t.Repository, "tag", t.Tag, "err", err)
				errs = append(errs, fmt.Errorf("expire %s:%s: %w", t.Repository, t.Tag, err))
				continue
			}
			if ok {
				rep.ExpiredTags++
			}
		}
		if !progress || len(tags) < expiredBatch {
			break
		}
	}
	repos, err := c.policy.PrunedRepositories(ctx)
	if err != nil {
		return errors.Join(append(errs, fmt.Errorf("list repositories to prune: %w", err))...)
	}
	for _, r := range repos {
		// Judged when planned, not when the pass started: a tag that expired
		// meanwhile is gone (meta.PruneRepository), and is not among the
		// newest a number_of_tags policy keeps.
		gone, err := c.policy.PruneRepository(ctx, r, c.now(), AutoPruneActor)
		// A batch of tags per transaction: a pruning that failed or was
		// cancelled midway deleted the batches before.
		rep.PrunedTags += len(gone)
		if ctx.Err() != nil {
			return errors.Join(append(errs, context.Cause(ctx))...)
		}
		if errors.Is(err, meta.ErrRepositoryNotFound) {
			continue // deleted since it was listed
		}
		if err != nil {
			c.log.Warn("auto-prune repository", "repository", r, "err", err)
			errs = append(errs, fmt.Errorf("auto-prune %s: %w", r, err))
			continue
		}
	}
	return errors.Join(errs...)
}
