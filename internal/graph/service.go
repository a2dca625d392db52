package graph

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

// Queue is the job queue the graph's work runs on.
const Queue = "graph"

// Job kinds.
const (
	jobIndex = "index" // index a stored manifest
	jobMoved = "moved" // a base tag moved: fire for its dependents
)

// Job is the payload of a graph job.
type Job struct {
	Kind       string        `json:"kind"`
	Repository string        `json:"repository"`
	Digest     digest.Digest `json:"digest"`
	Tag        string        `json:"tag,omitempty"`
	Old        digest.Digest `json:"old,omitempty"` // "" for a tag deleted and made again
	Actor      string        `json:"actor,omitempty"`
}

// Enqueuer adds jobs (meta.Jobs).
type Enqueuer interface {
	EnqueueJob(ctx context.Context, j meta.Job) (int64, error)
}

// ScanResults reads what scanning found (meta.Scans).
type ScanResults interface {
	ManifestScan(ctx context.Context, digest string) (meta.ManifestScan, error)
	ManifestVulns(ctx context.Context, digest string) ([]meta.ScanVuln, error)
}

// Options configure the service.
type Options struct {
	// Debounce delays base_image_updated after a base tag moves: a tag
	// that moves on again (or back) within it fires once, for where it
	// ends (0: at once).
	Debounce time.Duration
	Logger   *slog.Logger
}

// Service keeps the graph current as content arrives and fires
// base_image_updated when a base tag moves.
type Service struct {
	index     *Indexer
	manifests ManifestStore
	graph     Store
	scans     ScanResults
	queue     Enqueuer
	opts      Options
	log       *slog.Logger
}

// New returns the service.
func New(index *Indexer, manifests ManifestStore, graph Store, scans ScanResults, queue Enqueuer, opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	return &Service{index: index, manifests: manifests, graph: graph, scans: scans, queue: queue, opts: opts, log: opts.Logger}
}

// errUnreadable is an event whose data the graph cannot read.
var errUnreadable = errors.New("unreadable event")

// pushData is what the graph reads of a repo_push event.
type pushData struct {
	Digest      digest.Digest            `json:"digest"`
	MediaType   string                   `json:"media_type"`
	UpdatedTags []string                 `json:"updated_tags"`
	Previous    map[string]digest.Digest `json:"previous"`
}

// Jobs returns the jobs an event calls for: indexing what a push stored,
// and, for every tag it moved, firing for the images built on where the
// tag was. A tag the push created fires too when images are recorded as
// built on it (a tag deleted and pushed again: a mirror or a script that
// deletes base:1, then pushes base:1 anew); a brand new tag, on which
// nothing was built, queues nothing.
func (s *Service) Jobs(ctx context.Context, e meta.Event) ([]meta.Job, error) {
	return s.jobs(ctx, e, s.graph.TagHasDependents)
}

// jobs is Jobs, asking dependents whether images are built on a tag.
func (s *Service) jobs(ctx context.Context, e meta.Event, dependents func(ctx context.Context, repo, tag string) (bool, error)) ([]meta.Job, error) {
	// A gate's candidate (promotion_pending) is indexed like a push (its
	// base is a gate input), but moves no tag until it is promoted.
	if e.Kind != meta.EventRepoPush && e.Kind != meta.EventPromotionPending {
		return nil, nil
	}
	var d pushData
	if err := json.Unmarshal(e.Data, &d); err != nil {
		return nil, fmt.Errorf("%w: repo_push data: %w", errUnreadable, err)
	}
	if d.Digest == "" {
		return nil, nil
	}
	var out []meta.Job
	// One repository's images are indexed in push order: an index comes
	// after its children, and what it says of them must be the last word.
	// A candidate is indexed even when its manifest was stored before (a
	// retag onto a guarded tag): its gate waits until the graph has looked
	// at it, and one stored before the graph recorded everything it looks
	// at (or while the graph was off) has no record yet. Indexing again is
	// idempotent.
	if (oci.IsIndex(d.MediaType) || isImage(d.MediaType)) && (newManifest(e.Data) || e.Kind == meta.EventPromotionPending) {
		b, _ := json.Marshal(Job{Kind: jobIndex, Repository: e.Repository, Digest: d.Digest})
		out = append(out, meta.Job{Queue: Queue, OrderingKey: "index|" + e.Repository, Payload: b, MaxAttempts: 5})
	}
	for _, tag := range d.UpdatedTags {
		old, ok := d.Previous[tag]
		if !ok {
			// A tag created: built on only if it was deleted and made
			// again (the images built on it then were recorded through
			// it), which FireBaseMoved answers with where each was built.
			built, err := dependents(ctx, e.Repository, tag)
			if err != nil {
				return nil, err
			}
			if !built {
				continue
			}
		}
		b, _ := json.Marshal(Job{Kind: jobMoved, Repository: e.Repository, Digest: d.Digest, Tag: tag, Old: old, Actor: e.Actor})
		out = append(out, meta.Job{Queue: Queue, OrderingKey: "moved|" + e.Repository + "|" + tag, Payload: b, MaxAttempts: 10,
			RunAt: time.Now().Add(s.opts.Debounce)})
	}
	return out, nil
}

func isImage(mediaType string) bool {
	return mediaType == oci.MediaTypeImageManifest || mediaType == oci.MediaTypeDockerManifest
}

// OnEvent queues the jobs an event calls for.
func (s *Service) OnEvent(ctx context.Context, e meta.Event) error {
	js, err := s.Jobs(ctx, e)
	if err != nil {
		return err
	}
	for _, j := range js {
		if _, err := s.queue.EnqueueJob(ctx, j); err != nil {
			return err
		}
	}
	return nil
}

// Handle runs a graph job (a jobs.Handler).
func (s *Service) Handle(ctx context.Context, j meta.Job) error {
	// The graph's rows and the triggers they queue are derived: if a
	// power cut loses them, it loses this job's completion too, and the
	// job runs again.
	ctx = meta.LaxCommits(ctx)
	var job Job
	if err := json.Unmarshal(j.Payload, &job); err != nil {
		return jobs.Permanent(fmt.Errorf("graph job payload: %w", err))
	}
	switch job.Kind {
	case jobIndex:
		return s.index.Index(ctx, job.Repository, job.Digest)
	case jobMoved:
		return s.moved(ctx, job)
	}
	return jobs.Permanent(fmt.Errorf("graph job of unknown kind %q", job.Kind))
}

// moved fires base_image_updated for the images built on where a tag
// was, if the tag still points where this move took it (a later move has
// its own job, which fires for where the tag ended).
func (s *Service) moved(ctx context.Context, job Job) error {
	cur, err := s.manifests.GetManifest(ctx, job.Repository, job.Tag, "", false)
	if errors.Is(err, meta.ErrManifestNotFound) {
		return nil // the tag is gone
	}
	if err != nil {
		return err
	}
	if cur.Digest != job.Digest {
		return nil
	}
	fixed, added, compared := []vulnerability{}, []vulnerability{}, false
	if job.Old != "" { // "": a tag made again, each dependent on a base of its own
		fixed, added, compared = s.vulnDiff(ctx, job.Repository, job.Old, job.Digest)
	}
	data := map[string]any{"fixed_vulnerabilities": fixed, "new_vulnerabilities": added, "vulnerabilities_compared": compared}
	n, err := s.graph.FireBaseMoved(ctx, meta.BaseMove{Repository: job.Repository, Tag: job.Tag, Old: job.Old, New: job.Digest,
		Actor: job.Actor, Data: data})
	if err != nil {
		return err
	}
	if n > 0 {
		s.log.Info("base moved: rebuilds triggered", "repository", job.Repository, "tag", job.Tag, "new", job.Digest, "dependents", n)
	}
	return nil
}

// vulnerability is one entry of fixed_vulnerabilities or
// new_vulnerabilities.
type vulnerability struct {
	ID       string `json:"id"`
	Package  string `json:"package"`
	Priority string `json:"priority"`
}

// vulnDiff compares the scan results of two digests (each an image or an
// index: then all of its platforms'): what the move fixed and what it
// brought. compared is false when either side was not scanned.
func (s *Service) vulnDiff(ctx context.Context, repo string, old, updated digest.Digest) (fixed, added []vulnerability, compared bool) {
	fixed, added = []vulnerability{}, []vulnerability{}
	before, ok1 := s.vulnsOf(ctx, repo, old)
	after, ok2 := s.vulnsOf(ctx, repo, updated)
	if !ok1 || !ok2 {
		return fixed, added, false
	}
	for k, v := range before {
		if _, ok := after[k]; !ok {
			fixed = append(fixed, v)
		}
	}
	for k, v := range after {
		if _, ok := before[k]; !ok {
			added = append(added, v)
		}
	}
	order := func(a, b vulnerability) int { return strings.Compare(a.ID+" "+a.Package, b.ID+" "+b.Package) }
	slices.SortFunc(fixed, order)
	slices.SortFunc(added, order)
	return fixed, added, true
}

func (s *Service) vulnsOf(ctx context.Context, repo string, d digest.Digest) (map[string]vulnerability, bool) {
	digests := []digest.Digest{d}
	if m, err := s.manifests.GetManifest(ctx, repo, "", d, true); err == nil && oci.IsIndex(m.MediaType) {
		digests = nil
		if parsed, err := oci.ParseManifest(m.Content, m.MediaType); err == nil {
			for _, c := range parsed.Manifests {
				if _, att := Attestation(c.Annotations); !att && !oci.IsIndex(c.MediaType) {
					digests = append(digests, c.Digest)
				}
			}
		}
	}
	out := map[string]vulnerability{}
	for _, dg := range digests {
		sc, err := s.scans.ManifestScan(ctx, dg.String())
		if err != nil || sc.Status != meta.ScanScanned {
			return nil, false
		}
		vs, err := s.scans.ManifestVulns(ctx, dg.String())
		if err != nil {
			return nil, false
		}
		for _, v := range vs {
			out[v.VulnID+" "+v.Package] = vulnerability{ID: v.VulnID, Package: v.Package, Priority: v.Severity}
		}
	}
	return out, len(digests) > 0
}
