package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
)

// SubscriberName is the gate's cursor in the change feed.
const SubscriberName = meta.SubscriberGate

// Job is a gate job: evaluate one candidate, the live candidates of one
// repository (a signature pushed, a scan finished) or of one of its
// manifests (a check posted for it), or all live candidates
// (vulnerability data imported).
type Job struct {
	Candidate  int64  `json:"candidate,omitempty"`
	Repository string `json:"repository,omitempty"`
	// Digest narrows a repository's job to the candidates of that
	// manifest.
	Digest string `json:"digest,omitempty"`
	All    bool   `json:"all,omitempty"`
}

// maxLive bounds the live candidates read at once: a repository's job
// reads them page by page, all of them; the job of all live candidates
// reads one page.
const maxLive = 1000

// Handle runs a gate job (the job queue's handler).
func (s *Service) Handle(ctx context.Context, j meta.Job) error {
	var job Job
	if err := json.Unmarshal(j.Payload, &job); err != nil {
		return fmt.Errorf("gate job: %w", err)
	}
	switch {
	case job.Candidate != 0:
		return errors.Join(s.evaluateEach(ctx, []int64{job.Candidate})...)
	case job.Repository != "":
		return s.evaluateRepository(ctx, job.Repository, digest.Digest(job.Digest))
	case job.All:
		cs, err := s.st.Gates.LiveCandidates(ctx, maxLive)
		if err != nil {
			return err
		}
		return errors.Join(s.evaluateEach(ctx, candidateIDs(cs))...)
	}
	return nil
}

// evaluateRepository evaluates the live candidates of a repository (of
// one of its manifests, for a digest), oldest first, a page at a time:
// however many there are, none is left out (a pass posted for an old
// one promotes it).
func (s *Service) evaluateRepository(ctx context.Context, repo string, d digest.Digest) error {
	var errs []error
	for after := int64(0); ctx.Err() == nil; {
		cs, err := s.st.Gates.Candidates(ctx, repo, meta.CandidateQuery{Live: true, Digest: d, ByID: true, After: after, Limit: maxLive})
		if err != nil {
			return errors.Join(append(errs, err)...)
		}
		errs = append(errs, s.evaluateEach(ctx, candidateIDs(cs))...)
		if len(cs) < maxLive || cs[len(cs)-1].ID <= after {
			return errors.Join(errs...)
		}
		after = cs[len(cs)-1].ID
	}
	return errors.Join(append(errs, ctx.Err())...)
}

func candidateIDs(cs []meta.Candidate) []int64 {
	ids := make([]int64, 0, len(cs))
	for _, c := range cs {
		ids = append(ids, c.ID)
	}
	return ids
}

// evaluateEach evaluates every candidate, whatever another's evaluation
// does: one that fails (its promotion refused) must not hold back the
// repository's others. The job retries with the errors.
func (s *Service) evaluateEach(ctx context.Context, ids []int64) []error {
	var errs []error
	for _, id := range ids {
		if ctx.Err() != nil {
			return append(errs, ctx.Err())
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
	return errs
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
// arrival queues its evaluation; a check posted queues its manifest's
// live candidates'; another change to an input of a repository's live
// candidates (a push such as a signature, a scan finished) queues
// theirs; an import of vulnerability data queues all.
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
	repos := map[string]bool{}   // repositories whose live candidates are queued
	checked := map[string]bool{} // repository@digest whose candidates are queued
	lives := map[string]bool{}   // whether a repository has live candidates
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
			// A check is an input of its manifest's candidates only.
			var d digest.Digest
			if e.Kind == meta.EventGateCheck {
				d = checkedDigest(e.Data)
			}
			if d != "" && checked[e.Repository+"@"+d.String()] {
				continue
			}
			live, known := lives[e.Repository]
			if !known {
				var err error
				if live, err = s.live.HasLiveCandidates(ctx, e.Repository); err != nil {
					return err
				}
				lives[e.Repository] = live
			}
			if d != "" {
				checked[e.Repository+"@"+d.String()] = true
			} else {
				repos[e.Repository] = true
			}
			if !live {
				continue
			}
			job = Job{Repository: e.Repository, Digest: d.String()}
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

// checkedDigest is the manifest a gate_check event's check was posted
// for ("" if the event does not say).
func checkedDigest(data []byte) digest.Digest {
	var c struct {
		Digest digest.Digest `json:"digest"`
	}
	if json.Unmarshal(data, &c) != nil || c.Digest.Validate() != nil {
		return ""
	}
	return c.Digest
}
