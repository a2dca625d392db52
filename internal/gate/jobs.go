package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/berth-dev/berth/internal/meta"
)

// SubscriberName is the gate's cursor in the change feed.
const SubscriberName = meta.SubscriberGate

// Job is a gate job: evaluate one candidate, the live candidates of one
// repository (a check posted, a signature pushed, a scan finished), or
// all live candidates (vulnerability data imported).
type Job struct {
	Candidate  int64  `json:"candidate,omitempty"`
	Repository string `json:"repository,omitempty"`
	All        bool   `json:"all,omitempty"`
}

// maxLive bounds the live candidates one job evaluates.
const maxLive = 1000

// Handle runs a gate job (the job queue's handler).
func (s *Service) Handle(ctx context.Context, j meta.Job) error {
	var job Job
	if err := json.Unmarshal(j.Payload, &job); err != nil {
		return fmt.Errorf("gate job: %w", err)
	}
	var ids []int64
	switch {
	case job.Candidate != 0:
		ids = []int64{job.Candidate}
	case job.Repository != "":
		cs, err := s.st.Gates.Candidates(ctx, job.Repository, meta.CandidateQuery{Live: true, Limit: maxLive})
		if err != nil {
			return err
		}
		for _, c := range cs {
			ids = append(ids, c.ID)
		}
	case job.All:
		cs, err := s.st.Gates.LiveCandidates(ctx, maxLive)
		if err != nil {
			return err
		}
		for _, c := range cs {
			ids = append(ids, c.ID)
		}
	}
	// Every candidate is evaluated, whatever another's evaluation does:
	// one that fails (its promotion refused) must not hold back the
	// repository's others. The job retries with the errors.
	var errs []error
	for _, id := range ids {
		if ctx.Err() != nil {
			errs = append(errs, ctx.Err())
			break
		}
		_, err := s.Evaluate(ctx, id)
		if errors.Is(err, meta.ErrChecksChanged) {
			// Checks keep changing under the evaluation: the gate_check
			// events that change them queue its next one.
			s.log.Info("gate left a candidate whose checks changed while it was evaluated", "candidate", id)
			continue
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("evaluate candidate %d: %w", id, err))
		}
	}
	return errors.Join(errs...)
}

// TxQueue enqueues jobs in a feed subscriber's transaction (meta.Jobs).
type TxQueue interface {
	EnqueueIn(ctx context.Context, tx meta.Tx, j meta.Job) (int64, error)
}

// LiveReader says whether a repository has live candidates (meta.Gates).
type LiveReader interface {
	HasLiveCandidates(ctx context.Context, repo string) (bool, error)
}

// Subscriber is the gate's subscriber of the change feed: a candidate's
// arrival queues its evaluation; a change to an input of a repository's
// live candidates (a check posted, a push such as a signature, a scan
// finished) queues theirs; an import of vulnerability data queues all.
type Subscriber struct {
	live  LiveReader
	queue TxQueue
}

// NewSubscriber returns the subscriber. The store wakes the gate worker
// when the jobs it queues commit (meta.WakeOnEnqueue).
func NewSubscriber(live LiveReader, q TxQueue) *Subscriber {
	return &Subscriber{live: live, queue: q}
}

// Name is SubscriberName.
func (s *Subscriber) Name() string { return SubscriberName }

// Handle queues the gate's jobs for a batch of events.
func (s *Subscriber) Handle(ctx context.Context, tx meta.Tx, evs []meta.Event) error {
	repos := map[string]bool{}
	all := false
	for _, e := range evs {
		var job Job
		switch e.Kind {
		case meta.EventPromotionPending:
			var d struct {
				Candidate int64 `json:"candidate"`
			}
			if json.Unmarshal(e.Data, &d) != nil || d.Candidate == 0 {
				continue
			}
			job = Job{Candidate: d.Candidate}
		case meta.EventGateCheck, meta.EventGateChanged, meta.EventGraphIndexed, meta.EventRepoPush, meta.EventManifestScanned, meta.EventVulnerabilityFound:
			if repos[e.Repository] || e.Repository == "" {
				continue
			}
			live, err := s.live.HasLiveCandidates(ctx, e.Repository)
			if err != nil {
				return err
			}
			repos[e.Repository] = true
			if !live {
				continue
			}
			job = Job{Repository: e.Repository}
		case meta.EventVulnDataUpdated:
			if all {
				continue
			}
			all = true
			job = Job{All: true}
		default:
			continue
		}
		b, _ := json.Marshal(job)
		key := "all"
		if job.Repository != "" || job.Candidate != 0 {
			key = "repo|" + e.Repository
		}
		if _, err := s.queue.EnqueueIn(ctx, tx, meta.Job{Queue: Queue, OrderingKey: key, Payload: b, MaxAttempts: 10}); err != nil {
			return err
		}
	}
	return nil
}
