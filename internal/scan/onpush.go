package scan

import (
	"context"
	"encoding/json"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

// SubscriberName is the scan-on-push subscriber's cursor in the feed.
const SubscriberName = meta.SubscriberScan

// Queue queues scans in a feed subscriber's transaction (meta.Scans).
type Queue interface {
	QueueScan(ctx context.Context, tx meta.Tx, repo, digest string) error
}

// OnPush is the feed subscriber that scans what is pushed: every image
// manifest a push stores in a repository (pushed, mirrored, imported or
// cached) gets its scan job, queued with the subscriber's cursor, so that
// each is queued once. Content Berth generates (its SBOMs) is pushed
// without an event, so it is not scanned.
type OnPush struct {
	queue Queue
}

// NewOnPush returns the scan-on-push subscriber. The store wakes the scan
// worker when the scans it queues commit (meta.WakeOnEnqueue).
func NewOnPush(q Queue) *OnPush { return &OnPush{queue: q} }

// Name is SubscriberName.
func (o *OnPush) Name() string { return SubscriberName }

// Handle queues a scan for each repo_push that stored a scannable manifest
// (tag moves to a stored manifest are not scanned again).
func (o *OnPush) Handle(ctx context.Context, tx meta.Tx, evs []meta.Event) error {
	for _, e := range evs {
		// A gate's candidate is announced by promotion_pending, and is
		// scanned then: its scan is one of the gate's inputs.
		if e.Kind != meta.EventRepoPush && e.Kind != meta.EventPromotionPending {
			continue
		}
		var p struct {
			Digest      string `json:"digest"`
			MediaType   string `json:"media_type"`
			NewManifest bool   `json:"new_manifest"`
		}
		if json.Unmarshal(e.Data, &p) != nil || !p.NewManifest || !scannable(p.MediaType) || p.Digest == "" {
			continue
		}
		if err := o.queue.QueueScan(ctx, tx, e.Repository, p.Digest); err != nil {
			return err
		}
	}
	return nil
}

// scannable reports whether a manifest media type is an image manifest the
// scanner indexes (indexes are reported through their children).
func scannable(mediaType string) bool {
	switch mediaType {
	case oci.MediaTypeImageManifest, oci.MediaTypeDockerManifest:
		return true
	}
	return false
}
