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
	// Old is where the tag was ("" for a tag deleted and made again, or a
	// move caught up with): each event says instead where its image was
	// built (meta.Graph's FireBaseMoved).
	Old   digest.Digest `json:"old,omitempty"`
	Actor string        `json:"actor,omitempty"`
	// Dependent and DependentDigest restrict a moved job to one image: a
	// move made before the graph recorded that image (catchUp).
	Dependent       string        `json:"dependent,omitempty"`
	DependentDigest digest.Digest `json:"dependent_digest,omitempty"`
	// Since is when the move was seen (the job's creation for a job
	// queued before it was recorded): the wait for the new base's scan
	// is bounded from it (Options.ScanWait).
	Since time.Time `json:"since,omitzero"`
}

// maxCompared bounds the bases whose vulnerabilities one move compares
// with the new base (one per base its dependents are built on).
const maxCompared = 16

// DefaultScanWait is how long, from a move, base_image_updated waits at
// most for the scan of the new base (Options.ScanWait).
const DefaultScanWait = 5 * time.Minute

// maxScanPoll is how often, at most, a trigger waiting for a scan looks
// again (less with a shorter wait: a sixtieth of it, from 100ms).
const maxScanPoll = 5 * time.Second

// errScanPending is why a trigger waits: the new base's scan is queued.
var errScanPending = errors.New("the new base's scan is not done yet")

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
	// ScanWait bounds how long, from the move, base_image_updated waits
	// for the scan of the new base when it is queued (0:
	// DefaultScanWait; negative: it does not wait).
	ScanWait time.Duration
	Logger   *slog.Logger
}

// Triggers is the graph's table as the triggers read and write it
// (meta.Graph).
type Triggers interface {
	FireBaseMoved(ctx context.Context, mv meta.BaseMove) (int, error)
	TagHasDependents(ctx context.Context, repo, tag string) (bool, error)
	DependentBases(ctx context.Context, mv meta.BaseMove, n int) ([]digest.Digest, error)
	MissedMoves(ctx context.Context, repo string, d digest.Digest) ([]meta.MissedMove, error)
}

// Service keeps the graph current as content arrives and fires
// base_image_updated when a base tag moves.
type Service struct {
	index     *Indexer
	manifests ManifestStore
	graph     Triggers
	scans     ScanResults
	queue     Enqueuer
	opts      Options
	log       *slog.Logger
}

// New returns the service.
func New(index *Indexer, manifests ManifestStore, graph Triggers, scans ScanResults, queue Enqueuer, opts Options) *Service {
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

// Jobs returns the jobs an event calls for: indexing what a push stored
// (or, for a manifest stored before and tagged now, the triggers of the
// base moves it missed untagged), and, for every tag it moved, firing for
// the images built on where the tag was. A tag the push created fires too when images are recorded as
// built on it (a tag deleted and pushed again: a mirror or a script that
// deletes base:1, then pushes base:1 anew); a brand new tag, on which
// nothing was built, queues nothing.
func (s *Service) Jobs(ctx context.Context, e meta.Event) ([]meta.Job, error) {
	return s.jobs(ctx, e, lookups{dependents: s.graph.TagHasDependents, missed: s.graph.MissedMoves})
}

// lookups are what jobs reads of the graph: whether images are built on
// a tag (Triggers' TagHasDependents), the base moves an image missed
// (MissedMoves); the feed's subscriber reads both in its transaction.
type lookups struct {
	dependents func(ctx context.Context, repo, tag string) (bool, error)
	missed     func(ctx context.Context, repo string, d digest.Digest) ([]meta.MissedMove, error)
}

// jobs is Jobs, reading the graph with look.
func (s *Service) jobs(ctx context.Context, e meta.Event, look lookups) ([]meta.Job, error) {
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
	} else if (oci.IsIndex(d.MediaType) || isImage(d.MediaType)) && e.Kind == meta.EventRepoPush && len(d.UpdatedTags) > 0 {
		// A manifest stored before, tagged now (PUT .../tag, a promotion,
		// a restore): while it was not tagged (pushed by digest, a gate's
		// held candidate), the moves of its base tag fired for the tagged
		// images only. Each fires for it now (catchUp); one it heard of
		// already fires nothing again (FireBaseMoved). One not recorded
		// yet (its index job still queued) catches up when it is.
		mvs, err := look.missed(ctx, e.Repository, d.Digest)
		if err != nil {
			return nil, err
		}
		for _, mv := range mvs {
			out = append(out, s.missedJob(e.Repository, d.Digest, mv))
		}
	}
	for _, tag := range d.UpdatedTags {
		old, ok := d.Previous[tag]
		if !ok {
			// A tag created: built on only if it was deleted and made
			// again (the images built on it then were recorded through
			// it), which FireBaseMoved answers with where each was built.
			built, err := look.dependents(ctx, e.Repository, tag)
			if err != nil {
				return nil, err
			}
			if !built {
				continue
			}
		}
		b, _ := json.Marshal(Job{Kind: jobMoved, Repository: e.Repository, Digest: d.Digest, Tag: tag, Old: old, Actor: e.Actor, Since: time.Now()})
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
		if err := s.index.Index(ctx, job.Repository, job.Digest); err != nil {
			return err
		}
		return s.catchUp(ctx, job.Repository, job.Digest)
	case jobMoved:
		if job.Since.IsZero() {
			job.Since = j.CreatedAt
		}
		return s.moved(ctx, job)
	}
	return jobs.Permanent(fmt.Errorf("graph job of unknown kind %q", job.Kind))
}

// txMissed is what a Triggers may do besides (meta.Graph does): read the
// moves an image missed in the transaction that records it.
type txMissed interface {
	MissedMovesIn(ctx context.Context, tx meta.Tx, repo string, d digest.Digest) ([]meta.MissedMove, error)
}

// catchUp queues, for an image an index job records, the trigger of each
// base tag that moved between the image's push and its recording
// (meta.Graph's MissedMoves): the move's own job may have run first, and
// found nothing built on the tag. Each fires for that image alone. (A
// manifest stored before and tagged now queues the same: jobs.)
// Run by a job worker, it reads and queues in the transaction that
// records the image, after the indexer's writes (jobs.OnComplete); else
// once they are written.
func (s *Service) catchUp(ctx context.Context, repo string, d digest.Digest) error {
	in, ok := s.graph.(txMissed)
	q, qok := s.queue.(TxQueue)
	if ok && qok && jobs.OnComplete(ctx, func(ctx context.Context, tx meta.Tx) error {
		mvs, err := in.MissedMovesIn(ctx, tx, repo, d)
		if err != nil {
			return err
		}
		for _, mv := range mvs {
			if _, err := q.EnqueueIn(ctx, tx, s.missedJob(repo, d, mv)); err != nil {
				return err
			}
		}
		return nil
	}) {
		return nil
	}
	mvs, err := s.graph.MissedMoves(ctx, repo, d)
	if err != nil {
		return err
	}
	for _, mv := range mvs {
		if _, err := s.queue.EnqueueJob(ctx, s.missedJob(repo, d, mv)); err != nil {
			return err
		}
	}
	return nil
}

// missedJob is the moved job of a move an image missed, for that image:
// behind the tag's other moves, debounced as they are.
func (s *Service) missedJob(repo string, d digest.Digest, mv meta.MissedMove) meta.Job {
	b, _ := json.Marshal(Job{Kind: jobMoved, Repository: mv.Repository, Digest: mv.New, Tag: mv.Tag, Dependent: repo, DependentDigest: d, Since: time.Now()})
	return meta.Job{Queue: Queue, OrderingKey: "moved|" + mv.Repository + "|" + mv.Tag, Payload: b, MaxAttempts: 10,
		RunAt: time.Now().Add(s.opts.Debounce)}
}

// moved fires base_image_updated for the images built on where a tag
// was, if the tag still points where this move took it (a later move has
// its own job, which fires for where the tag ended). Each event compares
// the new base with the one its image is built on, however many moves
// ago: the vulnerabilities of each such base are read once.
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
	mv := meta.BaseMove{Repository: job.Repository, Tag: job.Tag, New: job.Digest, Actor: job.Actor,
		Dependent: job.Dependent, DependentDigest: job.DependentDigest}
	olds, err := s.graph.DependentBases(ctx, mv, maxCompared)
	if err != nil {
		return err
	}
	if len(olds) == 0 {
		return nil // nothing tagged is built on where the tag was
	}
	if until, wait := s.scanWait(ctx, job); wait {
		return jobs.Defer(until, errScanPending)
	}
	mv.Diffs = s.vulnDiffs(ctx, job.Repository, olds, job.Digest)
	n, err := s.graph.FireBaseMoved(ctx, mv)
	if err != nil {
		return err
	}
	if n > 0 {
		s.log.Info("base moved: rebuilds triggered", "repository", job.Repository, "tag", job.Tag, "old", job.Old, "new", job.Digest,
			"dependents", n, "dependent", job.Dependent)
	}
	return nil
}

// scanWait reports whether a move's trigger should wait for the scan of
// the new base (an index: of its platforms), and until when it should
// look again: while a scan is queued (scanning is on, and the scanner
// has not got to it), within the wait's bound from the move. A scan that
// ended (scanned, failed, unsupported) or was never queued (scanning is
// off) is not waited for; past the bound, the trigger fires with what
// there is.
func (s *Service) scanWait(ctx context.Context, job Job) (time.Time, bool) {
	wait := s.opts.ScanWait
	if wait == 0 {
		wait = DefaultScanWait
	}
	deadline := job.Since.Add(wait)
	now := time.Now()
	if wait < 0 || !now.Before(deadline) {
		return time.Time{}, false
	}
	pending := false
	for _, d := range s.platformsOf(ctx, job.Repository, job.Digest) {
		if sc, err := s.scans.ManifestScan(ctx, d.String()); err == nil && sc.Status == meta.ScanQueued {
			pending = true
			break
		}
	}
	if !pending {
		return time.Time{}, false
	}
	poll := min(maxScanPoll, max(100*time.Millisecond, wait/60))
	if next := now.Add(poll); next.Before(deadline) {
		return next, true
	}
	return deadline, true
}

// vulnerability is one entry of fixed_vulnerabilities or
// new_vulnerabilities.
type vulnerability struct {
	ID       string `json:"id"`
	Package  string `json:"package"`
	Priority string `json:"priority"`
}

// vulnDiffs compares the scan results of each old base with the new
// one (each an image or an index: then all of its platforms'): what the
// move fixed and what it brought, per old base, as event fields
// (meta.BaseMove's Diffs). vulnerabilities_compared is false when either
// side was not scanned.
func (s *Service) vulnDiffs(ctx context.Context, repo string, olds []digest.Digest, updated digest.Digest) map[digest.Digest]map[string]any {
	if len(olds) == 0 {
		return nil
	}
	after, afterOK := s.vulnsOf(ctx, repo, updated)
	out := make(map[digest.Digest]map[string]any, len(olds))
	for _, old := range olds {
		fixed, added, compared := []vulnerability{}, []vulnerability{}, false
		if afterOK {
			if before, ok := s.vulnsOf(ctx, repo, old); ok {
				fixed, added, compared = diffVulns(before, after), diffVulns(after, before), true
			}
		}
		out[old] = map[string]any{"fixed_vulnerabilities": fixed, "new_vulnerabilities": added, "vulnerabilities_compared": compared}
	}
	return out
}

// diffVulns returns the vulnerabilities of a that b has not, in order.
func diffVulns(a, b map[string]vulnerability) []vulnerability {
	out := []vulnerability{}
	for k, v := range a {
		if _, ok := b[k]; !ok {
			out = append(out, v)
		}
	}
	slices.SortFunc(out, func(x, y vulnerability) int { return strings.Compare(x.ID+" "+x.Package, y.ID+" "+y.Package) })
	return out
}

// platformsOf returns the manifests whose scans make up an image's: the
// image itself, or an index's platforms (not its attestations), each
// once, at most maxIndexChildren of them (as the indexer reads them).
func (s *Service) platformsOf(ctx context.Context, repo string, d digest.Digest) []digest.Digest {
	m, err := s.manifests.GetManifest(ctx, repo, "", d, true)
	if err != nil || !oci.IsIndex(m.MediaType) {
		return []digest.Digest{d}
	}
	var digests []digest.Digest
	if parsed, err := oci.ParseManifest(m.Content, m.MediaType); err == nil {
		seen := map[digest.Digest]bool{}
		for _, c := range parsed.Manifests {
			if _, att := Attestation(c.Annotations); att || oci.IsIndex(c.MediaType) || seen[c.Digest] {
				continue
			}
			if len(digests) == maxIndexChildren {
				break
			}
			seen[c.Digest] = true
			digests = append(digests, c.Digest)
		}
	}
	return digests
}

func (s *Service) vulnsOf(ctx context.Context, repo string, d digest.Digest) (map[string]vulnerability, bool) {
	digests := s.platformsOf(ctx, repo, d)
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
