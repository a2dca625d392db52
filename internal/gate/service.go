package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/storage"
)

// Queue is the job queue of gate evaluations.
const Queue = "gate"

// Actor is who promotes when a gate's policy passes.
const Actor = "berth-gate"

// GateStore is the gate's side of the metadata store (meta.Gates).
type GateStore interface {
	GetGate(ctx context.Context, repo string) (meta.Gate, error)
	Candidate(ctx context.Context, id int64) (meta.Candidate, error)
	Candidates(ctx context.Context, repo string, q meta.CandidateQuery) ([]meta.Candidate, error)
	LiveCandidates(ctx context.Context, n int) ([]meta.Candidate, error)
	Checks(ctx context.Context, repo string, d digest.Digest) ([]meta.Check, error)
	Decide(ctx context.Context, dec meta.Decision) error
	Promote(ctx context.Context, p meta.Promotion) (meta.Promoted, error)
}

// ContentReader reads manifests and blobs of a repository (meta.Manifests
// and meta.Blobs).
type ContentReader interface {
	GetManifest(ctx context.Context, repo, tag string, d digest.Digest, withContent bool) (meta.Manifest, error)
	ReferrersAfter(ctx context.Context, repo string, d digest.Digest, artifactType string, after meta.ReferrerKey, n int) ([]meta.Manifest, error)
}

// BlobLinks says whether a repository may serve a blob (meta.Blobs).
type BlobLinks interface {
	RepositoryBlob(ctx context.Context, repo string, d digest.Digest) (meta.Blob, error)
}

// BaseReader reads what an image is built on (meta.Graph); nil when the
// base-image graph is disabled. Indexed reports whether the graph has
// looked at a manifest yet (an image it could not index, an artifact, an
// index once all its platforms were: looked at, with no base).
type BaseReader interface {
	Bases(ctx context.Context, repo string, d digest.Digest) ([]meta.GraphBase, error)
	Indexed(ctx context.Context, repo string, d digest.Digest) (bool, error)
}

// Scanner reports a manifest's scan (scan.Service); nil when scanning is
// disabled.
type Scanner interface {
	Security(ctx context.Context, repo string, m meta.Manifest, withVulns bool) (scan.SecurityInfo, error)
}

// Stores are what the gate reads and writes.
type Stores struct {
	Gates    GateStore
	Content  ContentReader
	Blobs    BlobLinks
	Bases    BaseReader // optional
	Scanner  Scanner    // optional
	Storage  storage.Driver
	Registry string // the registry's host, for base references
}

// Service evaluates candidates and promotes them.
type Service struct {
	st  Stores
	log *slog.Logger
	now func() time.Time
}

// New returns the gate service.
func New(st Stores, log *slog.Logger) *Service {
	if log == nil {
		log = slog.Default()
	}
	return &Service{st: st, log: log, now: time.Now}
}

// Evaluation is the record of one evaluation of a candidate: what the
// policy saw and what was decided. It is stored with the candidate, in
// the audit entry of a promotion, and answered by the API.
type Evaluation struct {
	Candidate int64  `json:"candidate"`
	Tag       string `json:"tag"`
	Digest    string `json:"digest"`
	// State is pending (waiting for an input), blocked, or promoted.
	State   string   `json:"state"`
	Reasons []string `json:"reasons"`
	// Policy is the expression evaluated; Failed its false parts.
	Policy         string            `json:"policy"`
	RequiredChecks []string          `json:"required_checks"`
	Failed         []string          `json:"failed,omitempty"`
	Checks         map[string]string `json:"checks"`
	Scan           ScanSummary       `json:"scan"`
	Signatures     []Signature       `json:"signatures"`
	Base           Base              `json:"base"`
	EvaluatedAt    time.Time         `json:"evaluated_at"`
	// Override is the reason a superuser gave to promote regardless.
	Override string `json:"override,omitempty"`
	// RollbackTag is the rollback tag a promotion made.
	RollbackTag string `json:"rollback_tag,omitempty"`
	// gateUpdated is when the gate evaluated under was last changed.
	gateUpdated time.Time
	// posted are the checks posted for the digest that the evaluation
	// read, name to status: a promotion is refused if they changed since.
	posted map[string]string
}

// ScanSummary is the scan input without its vulnerability list.
type ScanSummary struct {
	Status  string     `json:"status"`
	Reason  string     `json:"reason,omitempty"`
	Counts  Severities `json:"counts"`
	Fixable Severities `json:"fixable"`
}

// Evaluate evaluates a live candidate and acts on the decision: promote,
// block, or wait. It returns the evaluation (State "" and no error for a
// candidate that is no longer live or whose gate is gone).
func (s *Service) Evaluate(ctx context.Context, id int64) (Evaluation, error) {
	return s.EvaluateAs(ctx, id, Actor)
}

// maxEvaluations bounds the evaluations of one request whose promotion
// the checks changed under (meta.ErrChecksChanged).
const maxEvaluations = 3

// EvaluateAs is Evaluate on someone's request (a manual promotion): a
// promotion names them as its actor. A promotion refused because the
// candidate's checks changed since they were read evaluates it again.
func (s *Service) EvaluateAs(ctx context.Context, id int64, actor string) (Evaluation, error) {
	for attempt := 1; ; attempt++ {
		ev, cfg, err := s.evaluate(ctx, id)
		if err != nil || ev.State == "" {
			return ev, err
		}
		ev, err = s.act(ctx, ev, cfg, "", actor)
		if !errors.Is(err, meta.ErrChecksChanged) || attempt == maxEvaluations {
			return ev, err
		}
	}
}

// Override promotes a live candidate regardless of its policy (a
// superuser's decision): the reason is recorded in the audit entry and
// the event.
func (s *Service) Override(ctx context.Context, id int64, reason, actor string) (Evaluation, error) {
	ev, cfg, err := s.evaluate(ctx, id)
	if err != nil {
		return ev, err
	}
	if ev.State == "" {
		return ev, meta.ErrCandidateNotLive
	}
	return s.promote(ctx, ev, cfg, reason, actor)
}

func (s *Service) act(ctx context.Context, ev Evaluation, cfg *Compiled, override, actor string) (Evaluation, error) {
	if ev.State == meta.CandidatePromoted {
		return s.promote(ctx, ev, cfg, override, actor)
	}
	detail, _ := json.Marshal(ev)
	data, _ := json.Marshal(map[string]any{"digest": ev.Digest, "tag": ev.Tag, "tags": []string{ev.Tag}, "candidate": ev.Candidate,
		"reasons": ev.Reasons, "failed": nonNil(ev.Failed), "checks": ev.Checks, "scan": ev.Scan, "policy": ev.Policy})
	err := s.st.Gates.Decide(ctx, meta.Decision{CandidateID: ev.Candidate, State: ev.State, Reasons: ev.Reasons, Detail: detail, Event: data})
	if errors.Is(err, meta.ErrCandidateNotLive) {
		return Evaluation{}, nil
	}
	return ev, err
}

func (s *Service) promote(ctx context.Context, ev Evaluation, cfg *Compiled, override, actor string) (Evaluation, error) {
	ev.State, ev.Reasons, ev.Override = meta.CandidatePromoted, nil, override
	now := s.now()
	detail, _ := json.Marshal(ev)
	checks := ev.posted
	if override != "" {
		checks = nil
	}
	res, err := s.st.Gates.Promote(ctx, meta.Promotion{
		CandidateID: ev.Candidate,
		RollbackTag: func(n int64) string { return RollbackTag(cfg.RollbackTag, ev.Tag, n, ev.Digest, now) },
		Detail:      detail,
		Actor:       actor,
		Event:       map[string]any{"override": override != "", "override_reason": override, "checks": ev.Checks, "scan": ev.Scan, "policy": ev.Policy},
		// Decided under this configuration: a gate changed since refuses
		// (its change evaluates the candidate again, or withdrew it).
		GateUpdatedAt: ev.gateUpdated,
		// Decided on these checks (an override on none).
		Checks: checks,
	})
	var immutable *meta.ImmutableTagError
	switch {
	case errors.Is(err, meta.ErrCandidateNotLive) || errors.Is(err, meta.ErrGateChanged):
		return Evaluation{}, nil
	case errors.Is(err, meta.ErrReadOnly):
		// Not a failure of the job: the candidate waits, and an
		// evaluation after the repository takes writes again promotes it.
		ev.State, ev.Reasons, ev.Override = meta.CandidatePending, []string{"waiting for the repository to take writes: it is read-only (READ_ONLY)"}, ""
		return s.act(ctx, ev, cfg, "", actor)
	case errors.As(err, &immutable):
		// Nothing promotes it while the tag is immutable: blocked, with
		// the reason, rather than a job retried in vain.
		ev.State, ev.Reasons, ev.Override = meta.CandidateBlocked, []string{"the promotion is refused: " + immutable.Error()}, ""
		return s.act(ctx, ev, cfg, "", actor)
	case err != nil:
		return ev, fmt.Errorf("promote candidate %d: %w", ev.Candidate, err)
	}
	ev.RollbackTag = res.RollbackTag
	s.log.Info("gate promoted a candidate", "repository", res.Candidate.Repository, "tag", ev.Tag, "digest", ev.Digest,
		"rollback_tag", res.RollbackTag, "override", override != "")
	return ev, nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// evaluate gathers a live candidate's inputs and decides, without acting.
func (s *Service) evaluate(ctx context.Context, id int64) (Evaluation, *Compiled, error) {
	c, err := s.st.Gates.Candidate(ctx, id)
	if errors.Is(err, meta.ErrCandidateNotFound) || err == nil && !c.Live() {
		return Evaluation{}, nil, nil
	}
	if err != nil {
		return Evaluation{}, nil, err
	}
	g, err := s.st.Gates.GetGate(ctx, c.Repository)
	if errors.Is(err, meta.ErrGateNotFound) {
		return Evaluation{}, nil, nil
	}
	if err != nil {
		return Evaluation{}, nil, err
	}
	cfg, err := Parse(g.Config)
	if err != nil {
		return Evaluation{}, nil, fmt.Errorf("gate of %s: %w", c.Repository, err)
	}
	in, scanReason, posted, err := s.input(ctx, c.Repository, c.Tag, c.Digest, cfg)
	if errors.Is(err, meta.ErrManifestNotFound) {
		return Evaluation{}, nil, nil // deleted: DeleteManifest withdrew it
	}
	if err != nil {
		return Evaluation{}, nil, err
	}
	ev := Evaluation{Candidate: c.ID, Tag: c.Tag, Digest: c.Digest.String(), Policy: cfg.Policy.Source(), RequiredChecks: cfg.required(),
		Checks: in.Checks, Signatures: in.Signatures, Base: in.Base, EvaluatedAt: s.now().UTC(), gateUpdated: g.UpdatedAt, posted: posted,
		Scan: ScanSummary{Status: in.Scan.Status, Reason: scanReason, Counts: in.Scan.Counts, Fixable: in.Scan.Fixable}}
	ev.State, ev.Reasons, ev.Failed = decide(ctx, cfg, in, scanReason)
	return ev, cfg, nil
}

// usesScan matches a policy that reads the scan; usesBase one that reads
// the base (base.stale, checks["berth/base"]).
var (
	usesScan = regexp.MustCompile(`\bscan\b`)
	usesBase = regexp.MustCompile(`\bbase\b`)
)

// decide is the gate's rule: a required check that failed blocks; one
// missing or pending (or a scan still running that the gate reads) makes
// the candidate wait; then the policy decides.
func decide(ctx context.Context, cfg *Compiled, in Input, scanReason string) (state string, reasons, failed []string) {
	for _, n := range cfg.required() {
		if in.Checks[n] == StatusFail {
			reasons = append(reasons, fmt.Sprintf("check %q failed", n)+detailOf(n, in, scanReason))
		}
	}
	if len(reasons) > 0 {
		return meta.CandidateBlocked, reasons, nil
	}
	for _, n := range cfg.required() {
		switch in.Checks[n] {
		case StatusPending:
			if n == CheckBase {
				continue // the base-image graph, below
			}
			reasons = append(reasons, fmt.Sprintf("waiting for check %q (pending)", n))
		case StatusMissing, "":
			reasons = append(reasons, fmt.Sprintf("waiting for check %q", n))
		}
	}
	if in.Scan.Status == "pending" && (slices.Contains(cfg.required(), CheckScan) || usesScan.MatchString(cfg.Policy.Source())) {
		reasons = append(reasons, "waiting for the vulnerability scan")
	}
	if in.Base.waiting && (slices.Contains(cfg.required(), CheckBase) || usesBase.MatchString(cfg.Policy.Source())) {
		reasons = append(reasons, "waiting for the base-image graph")
	}
	if len(reasons) > 0 {
		return meta.CandidatePending, reasons, nil
	}
	res := cfg.Policy.Evaluate(ctx, in)
	if res.Pass {
		return meta.CandidatePromoted, nil, nil
	}
	if res.Err != nil {
		reasons = append(reasons, "policy error: "+strings.TrimPrefix(res.Err.Error(), "policy: "))
	}
	for _, f := range res.Failed {
		reasons = append(reasons, "policy: "+f+" is false")
	}
	if len(reasons) == 0 {
		reasons = []string{"policy is false"}
	}
	return meta.CandidateBlocked, reasons, res.Failed
}

// detailOf explains a failed built-in check.
func detailOf(name string, in Input, scanReason string) string {
	switch name {
	case CheckScan:
		if scanReason != "" {
			return ": " + scanReason
		}
	case CheckSignature:
		if len(in.Signatures) == 0 {
			return ": no signature"
		}
		var why []string
		for _, s := range in.Signatures {
			if s.Error != "" && !slices.Contains(why, s.Error) {
				why = append(why, s.Error)
			}
		}
		return ": " + strings.Join(why, "; ")
	case CheckBase:
		if in.Base.Reference != "" {
			return ": built on " + in.Base.Reference + " (" + in.Base.Digest + "), which has moved on"
		}
		return ": built on a base in a private repository of another namespace (" + in.Base.Digest + "), which has moved on"
	}
	return ""
}

// Input gathers what a policy sees of a candidate; scanReason explains a
// scan status other than a clean "scanned".
func (s *Service) Input(ctx context.Context, repo, tag string, d digest.Digest, cfg *Compiled) (Input, string, error) {
	in, scanReason, _, err := s.input(ctx, repo, tag, d, cfg)
	return in, scanReason, err
}

// input is Input, and the checks posted for d as it read them (name to
// status, never nil).
func (s *Service) input(ctx context.Context, repo, tag string, d digest.Digest, cfg *Compiled) (Input, string, map[string]string, error) {
	m, err := s.st.Content.GetManifest(ctx, repo, "", d, true)
	if err != nil {
		return Input{}, "", nil, err
	}
	parsed, err := oci.ParseManifest(m.Content, m.MediaType)
	if err != nil {
		return Input{}, "", nil, fmt.Errorf("candidate %s: %w", d, err)
	}
	in := Input{Tag: tag, Checks: map[string]string{}}
	in.Manifest = s.manifestInput(ctx, repo, m, parsed)
	var scanReason string
	in.Scan, scanReason, err = s.scanInput(ctx, repo, m, parsed, cfg.ScanSeverity)
	if err != nil {
		return Input{}, "", nil, err
	}
	if in.Signatures, in.Attestations, err = s.signatures(ctx, repo, d, cfg.Keys, true); err != nil {
		return Input{}, "", nil, err
	}
	if in.Base, err = s.base(ctx, repo, m); err != nil {
		return Input{}, "", nil, err
	}
	checks, err := s.st.Gates.Checks(ctx, repo, d)
	if err != nil {
		return Input{}, "", nil, err
	}
	posted := map[string]string{}
	for _, c := range checks {
		in.Checks[c.Name] = c.Status
		posted[c.Name] = c.Status
	}
	for _, n := range cfg.required() {
		if _, ok := in.Checks[n]; !ok {
			in.Checks[n] = StatusMissing
		}
	}
	in.Checks[CheckScan] = scanCheck(in.Scan, cfg.ScanSeverity)
	in.Checks[CheckSignature] = StatusMissing
	if len(in.Signatures) > 0 {
		in.Checks[CheckSignature] = StatusFail
	}
	for _, sg := range in.Signatures {
		if sg.Verified {
			in.Checks[CheckSignature] = StatusPass
		}
	}
	switch {
	case in.Base.waiting:
		in.Checks[CheckBase] = StatusPending
	case in.Base.Stale:
		in.Checks[CheckBase] = StatusFail
	default:
		in.Checks[CheckBase] = StatusPass
	}
	return in, scanReason, posted, nil
}

// maxConfig caps an image configuration read for the policy.
const maxConfig = 4 << 20

// manifestInput describes the candidate: its annotations, platforms, and
// the labels and creation time of its (first platform's) configuration.
func (s *Service) manifestInput(ctx context.Context, repo string, m meta.Manifest, parsed *oci.Manifest) Manifest {
	out := Manifest{Digest: m.Digest.String(), MediaType: m.MediaType, ArtifactType: parsed.ArtifactType,
		Annotations: nonNilMap(parsed.Annotations), Labels: map[string]string{}, Platforms: []Platform{}}
	image := parsed
	if oci.IsIndex(m.MediaType) {
		image = nil
		for _, e := range parsed.Manifests {
			if e.Platform == nil || e.Platform.OS == "unknown" {
				continue // attestations
			}
			out.Platforms = append(out.Platforms, Platform{OS: e.Platform.OS, Architecture: e.Platform.Architecture, Variant: e.Platform.Variant})
			if image == nil {
				if child, err := s.st.Content.GetManifest(ctx, repo, "", e.Digest, true); err == nil {
					image, _ = oci.ParseManifest(child.Content, child.MediaType)
				}
			}
		}
	}
	if image == nil || image.Config == nil || image.Config.Size > maxConfig {
		return out
	}
	raw, err := s.readBlob(ctx, repo, image.Config.Digest.String(), maxConfig)
	if err != nil {
		return out
	}
	var cfg struct {
		Created      time.Time `json:"created"`
		OS           string    `json:"os"`
		Architecture string    `json:"architecture"`
		Variant      string    `json:"variant"`
		Config       struct {
			Labels map[string]string `json:"Labels"`
		} `json:"config"`
	}
	if json.Unmarshal(raw, &cfg) != nil {
		return out
	}
	out.Created, out.Labels = cfg.Created, nonNilMap(cfg.Config.Labels)
	if !oci.IsIndex(m.MediaType) && cfg.OS != "" {
		out.Platforms = []Platform{{OS: cfg.OS, Architecture: cfg.Architecture, Variant: cfg.Variant}}
	}
	return out
}

func nonNilMap(m map[string]string) map[string]string {
	if m == nil {
		return map[string]string{}
	}
	return m
}

// readBlob reads a blob the repository may serve, whole, up to limit.
func (s *Service) readBlob(ctx context.Context, repo, d string, limit int64) ([]byte, error) {
	dg, err := digest.Parse(d)
	if err != nil {
		return nil, err
	}
	b, err := s.st.Blobs.RepositoryBlob(ctx, repo, dg)
	if err != nil {
		return nil, err
	}
	if b.Size > limit {
		return nil, fmt.Errorf("blob %s is %d bytes, over %d", d, b.Size, limit)
	}
	rc, err := s.st.Storage.Reader(ctx, storage.BlobPath(dg), 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(io.LimitReader(rc, limit+1))
}

// signatures verifies the candidate's cosign signatures and, with
// withAtts, attestations, in the tag layouts (sha256-<hex>.sig, .att) and
// as referrers.
func (s *Service) signatures(ctx context.Context, repo string, d digest.Digest, keys []TrustedKey, withAtts bool) ([]Signature, []Attestation, error) {
	var sigs, atts []SignatureManifest
	layouts := []struct {
		tag  string
		list *[]SignatureManifest
	}{{SignatureTag(d.String()), &sigs}, {AttestationTag(d.String()), &atts}}
	if !withAtts {
		layouts = layouts[:1]
	}
	for _, layout := range layouts {
		m, err := s.st.Content.GetManifest(ctx, repo, layout.tag, "", true)
		switch {
		case err == nil:
			*layout.list = append(*layout.list, SignatureManifest{Kind: "cosign", Digest: m.Digest.String(), Body: m.Content})
		case !errors.Is(err, meta.ErrManifestNotFound):
			return nil, nil, err
		}
	}
	// The referrers are read no further than both lists hold what an
	// evaluation verifies.
	wanted := func() bool { return len(sigs) <= MaxSignatureLayers || withAtts && len(atts) <= MaxSignatureLayers }
	err := meta.EachReferrer(ctx, s.st.Content, repo, d, "", meta.ReferrerKey{}, func(r meta.Manifest) (bool, error) {
		sig, att := IsSignatureArtifact(r.ArtifactType), IsAttestationArtifact(r.ArtifactType)
		// Past the layers an evaluation verifies, a manifest is not read.
		sig = sig && len(sigs) <= MaxSignatureLayers
		att = att && withAtts && len(atts) <= MaxSignatureLayers
		if !sig && !att {
			return true, nil
		}
		rm, err := s.st.Content.GetManifest(ctx, repo, "", r.Digest, true)
		if errors.Is(err, meta.ErrManifestNotFound) {
			return true, nil
		}
		if err != nil {
			return false, err
		}
		sm := SignatureManifest{Kind: "referrer", Digest: rm.Digest.String(), Body: rm.Content}
		if sig {
			sigs = append(sigs, sm)
		}
		if att {
			atts = append(atts, sm)
		}
		return wanted(), nil
	})
	if err != nil {
		return nil, nil, err
	}
	read := func(ctx context.Context, dg string) ([]byte, error) { return s.readBlob(ctx, repo, dg, MaxPayload) }
	outSigs, outAtts := VerifySignatures(ctx, d.String(), keys, sigs, read), VerifyAttestations(ctx, d.String(), keys, atts, read)
	if err := ctx.Err(); err != nil {
		// Stopped part way: what is left unverified is no result.
		return nil, nil, fmt.Errorf("verify the signatures of %s: %w", d, err)
	}
	if outSigs == nil {
		outSigs = []Signature{}
	}
	if outAtts == nil {
		outAtts = []Attestation{}
	}
	return outSigs, outAtts, nil
}

// base is the candidate's immediate base from the base-image graph; it
// is waiting while the graph has not looked at the candidate yet (its job
// runs apart from the gate's: the graph_indexed event it appends then
// evaluates the candidate again). An image or index the graph cannot
// index is looked at all the same, and then has no base.
func (s *Service) base(ctx context.Context, repo string, m meta.Manifest) (Base, error) {
	if s.st.Bases == nil {
		return Base{}, nil
	}
	// What the graph queues for (graph's jobs): images and indexes.
	if oci.IsIndex(m.MediaType) || m.MediaType == oci.MediaTypeImageManifest || m.MediaType == oci.MediaTypeDockerManifest {
		done, err := s.st.Bases.Indexed(ctx, repo, m.Digest)
		if err != nil {
			return Base{}, err
		}
		if !done {
			return Base{waiting: true}, nil
		}
	}
	bases, err := s.st.Bases.Bases(ctx, repo, m.Digest)
	if err != nil {
		return Base{}, err
	}
	// The immediate base is stale when any tag it was reached through
	// has moved on (:0 and :1, 20 and lts, a rollback tag), on any
	// platform of an index: as the graph's bases answer says (moved). The
	// base shown is the first that moved, else the first.
	var out Base
	for _, b := range bases {
		if b.Level != 1 || out.Known && (out.Stale || !b.Moved) {
			continue
		}
		out = Base{Known: true, Reference: s.baseReference(repo, b), Digest: b.Digest.String(), Stale: b.Moved}
	}
	return out, nil
}

// baseReference names a base as reached: by its tag, else its digest,
// with the registry's host; "" for a private base of another namespace,
// not named to the policy either, whose errors and results become the
// candidate's reasons (read by its checkers, carried by the repository's
// notifications).
func (s *Service) baseReference(repo string, b meta.GraphBase) string {
	if ns, _, _ := strings.Cut(repo, "/"); !b.Public && !strings.HasPrefix(b.Repository, ns+"/") {
		return ""
	}
	ref := b.Repository + "@" + b.Digest.String()
	if b.Tag != "" {
		ref = b.Repository + ":" + b.Tag
	}
	if s.st.Registry != "" {
		ref = s.st.Registry + "/" + ref
	}
	return ref
}
