package notify

import (
	"context"
	"encoding/json"
	"strconv"
	"strings"

	"github.com/berth-dev/berth/internal/meta"
)

// SubscriberName is the notification subscriber's cursor in the feed.
// The migration that replaced the outbox's dispatched flag (meta schema
// version 12) created it after the last event the old fan-out had
// dispatched: do not rename it.
const SubscriberName = meta.SubscriberNotify

// deliveryMaxAttempts bounds the retries of one delivery: with backoff
// capped at 5 minutes, days.
const deliveryMaxAttempts = 1000

// Subscriber turns the feed's events into delivery jobs, one per
// notification that hears the event (matches), in the feed's
// transaction: every event is fanned out exactly once. A notification
// disabled for a while (its receiver seems down) still gets its
// deliveries queued: they wait, undelivered, until its trial succeeds or
// it is reset, so nothing is lost. One disabled until reset (its receiver
// refused) hears nothing meanwhile, as in Quay: its deliveries would wait
// for someone to notice, in any number.
type Subscriber struct {
	listeners Listeners
	jobs      Jobs
}

// NewSubscriber returns the notification subscriber of the feed. The
// store wakes the delivery worker when the deliveries commit
// (meta.WakeOnEnqueue).
func NewSubscriber(s Stores) *Subscriber {
	return &Subscriber{listeners: s.Listeners, jobs: s.Jobs}
}

// Name is SubscriberName.
func (s *Subscriber) Name() string { return SubscriberName }

// Handle queues the deliveries of events. Each notification and
// repository is one stream, delivered in order, one at a time. The
// deliveries of one namespace's events share the workers fairly with
// other namespaces' (their FairKey, see meta.Jobs.ClaimJob): an
// organization's or repository's notifications are its namespace's, a
// registry-wide notification's deliveries go with the namespace of each
// event.
func (s *Subscriber) Handle(ctx context.Context, tx meta.Tx, evs []meta.Event) error {
	for _, e := range evs {
		ns, _, _ := strings.Cut(e.Repository, "/")
		listening, err := s.listeners.Listening(ctx, tx, e.Kind, e.Repository, ns)
		if err != nil {
			return err
		}
		for _, n := range listening {
			if n.DisabledUntilReset() || !matches(n, e) {
				continue
			}
			payload, _ := json.Marshal(meta.DeliveryJob{NotificationID: n.ID, EventID: e.ID, Repository: e.Repository})
			if _, err := s.jobs.EnqueueIn(ctx, tx, meta.Job{Queue: meta.NotifyQueue, OrderingKey: n.UUID + "|" + e.Repository,
				FairKey: ns, Payload: payload, MaxAttempts: deliveryMaxAttempts}); err != nil {
				return err
			}
		}
	}
	return nil
}

// matches reports whether notification n hears event e, which is of its
// kind and in its scope: a notification hears only events that happened
// after it existed, and a vulnerability_found notification with a level
// only the vulnerabilities at or above it (levelAllows).
func matches(n meta.Notification, e meta.Event) bool {
	if n.Event != e.Kind || n.CreatedAt.After(e.CreatedAt) {
		return false
	}
	if e.Kind == meta.EventVulnerabilityFound && !levelAllows(n.EventConfig, e.Data) {
		return false // below the notification's severity threshold
	}
	if e.Kind == "repo_image_expiry" {
		// Made for one notification, by its eventConfig.days.
		var d struct {
			For string `json:"notification_uuid"`
		}
		if json.Unmarshal(e.Data, &d) == nil && d.For != "" && d.For != n.UUID {
			return false
		}
	}
	return true
}

// severityIndex is Quay's level index of a severity name: 0 is Critical,
// 5 Unknown.
var severityIndex = map[string]int{"critical": 0, "high": 1, "medium": 2, "low": 3, "negligible": 4, "unknown": 5}

// VulnLevel reads a vulnerability_found notification's eventConfig.level:
// Quay's index (0 Critical .. 5 Unknown) as a number or digits, or a
// severity name.
func VulnLevel(v any) (int, bool) {
	level := -1
	switch x := v.(type) {
	case float64:
		if x == float64(int(x)) {
			level = int(x)
		}
	case string:
		if i, ok := severityIndex[strings.ToLower(x)]; ok {
			level = i
		} else if n, err := strconv.Atoi(x); err == nil {
			level = n
		}
	}
	return level, level >= 0 && level <= 5
}

// levelAllows applies Quay's rule for vulnerability_found: a notification
// with eventConfig.level L hears a vulnerability whose priority index is
// at most L. No level (or one that does not parse) hears everything.
func levelAllows(eventConfig, payload json.RawMessage) bool {
	var cfg struct {
		Level any `json:"level"`
	}
	if json.Unmarshal(eventConfig, &cfg) != nil || cfg.Level == nil {
		return true
	}
	level, ok := VulnLevel(cfg.Level)
	if !ok {
		return true
	}
	var p struct {
		Vulnerability struct {
			Priority string `json:"priority"`
		} `json:"vulnerability"`
	}
	_ = json.Unmarshal(payload, &p)
	idx, ok := severityIndex[strings.ToLower(p.Vulnerability.Priority)]
	if !ok {
		idx = severityIndex["unknown"]
	}
	return idx <= level
}
