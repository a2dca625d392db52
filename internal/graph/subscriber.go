package graph

import (
	"context"
	"encoding/json"
	"errors"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
)

// SubscriberName is the graph's cursor in the change feed.
const SubscriberName = meta.SubscriberGraph

// TxQueue enqueues jobs in a feed subscriber's transaction (meta.Jobs).
type TxQueue interface {
	EnqueueIn(ctx context.Context, tx meta.Tx, j meta.Job) (int64, error)
}

// txDependents is what a Store may do besides (meta.Graph does): tell
// whether images are built on a tag in the feed's transaction.
type txDependents interface {
	TagHasDependentsIn(ctx context.Context, tx meta.Tx, repo, tag string) (bool, error)
}

// Subscriber is the graph's subscriber of the change feed: each
// repo_push queues the indexing of what it stored (or, tagging a manifest
// stored before, the triggers of the base moves it missed untagged) and,
// per tag it moved, the base_image_updated trigger, in the transaction
// that moves the graph's cursor, so each is queued once.
type Subscriber struct {
	svc   *Service
	queue TxQueue
}

// NewSubscriber returns the subscriber. The store wakes the graph worker
// when the jobs it queues commit (meta.WakeOnEnqueue).
func (s *Service) NewSubscriber(q TxQueue) *Subscriber {
	return &Subscriber{svc: s, queue: q}
}

// Name is SubscriberName.
func (s *Subscriber) Name() string { return SubscriberName }

// Handle queues the graph's jobs for a batch of events.
func (s *Subscriber) Handle(ctx context.Context, tx meta.Tx, evs []meta.Event) error {
	look := lookups{dependents: s.svc.graph.TagHasDependents, missed: s.svc.graph.MissedMoves}
	if in, ok := s.svc.graph.(txDependents); ok {
		look.dependents = func(ctx context.Context, repo, tag string) (bool, error) {
			return in.TagHasDependentsIn(ctx, tx, repo, tag)
		}
	}
	if in, ok := s.svc.graph.(txMissed); ok {
		look.missed = func(ctx context.Context, repo string, d digest.Digest) ([]meta.MissedMove, error) {
			return in.MissedMovesIn(ctx, tx, repo, d)
		}
	}
	for _, e := range evs {
		js, err := s.svc.jobs(ctx, e, look)
		if errors.Is(err, errUnreadable) {
			continue // an event the graph cannot read is skipped
		}
		if err != nil {
			return err
		}
		for _, j := range js {
			if _, err := s.queue.EnqueueIn(ctx, tx, j); err != nil {
				return err
			}
		}
	}
	return nil
}

// newManifest reads whether a repo_push stored a manifest (rather than
// only moving tags to one stored before); events from before Berth said
// so count as new.
func newManifest(data json.RawMessage) bool {
	var d struct {
		NewManifest *bool `json:"new_manifest"`
	}
	if json.Unmarshal(data, &d) != nil || d.NewManifest == nil {
		return true
	}
	return *d.NewManifest
}
