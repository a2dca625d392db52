package gate

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/scan"
)

// quiet is the tests' logger.
var quiet = slog.New(slog.DiscardHandler)

// fakeGates is a gate store of one gate and its candidates: it records
// the decisions and promotions, and promote answers a promotion (nil:
// promoted).
type fakeGates struct {
	mu         sync.Mutex
	gate       meta.Gate
	cands      map[int64]meta.Candidate
	checks     []meta.Check
	decisions  []meta.Decision
	promotions []meta.Promotion
	promote    func(p meta.Promotion) error
}

func newFakeGates(t *testing.T, config string, c meta.Candidate) *fakeGates {
	t.Helper()
	if _, err := Parse([]byte(config)); err != nil {
		t.Fatal(err)
	}
	c.State = meta.CandidatePending
	return &fakeGates{gate: meta.Gate{Repository: c.Repository, Config: json.RawMessage(config), UpdatedAt: time.Unix(1, 0)},
		cands: map[int64]meta.Candidate{c.ID: c}}
}

func (f *fakeGates) GetGate(context.Context, string) (meta.Gate, error) { return f.gate, nil }

func (f *fakeGates) Candidate(_ context.Context, id int64) (meta.Candidate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.cands[id]
	if !ok {
		return meta.Candidate{}, meta.ErrCandidateNotFound
	}
	return c, nil
}

func (f *fakeGates) Candidates(context.Context, string, meta.CandidateQuery) ([]meta.Candidate, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []meta.Candidate
	for _, c := range f.cands {
		if c.Live() {
			out = append(out, c)
		}
	}
	return out, nil
}

func (f *fakeGates) LiveCandidates(ctx context.Context, _ int) ([]meta.Candidate, error) {
	return f.Candidates(ctx, "", meta.CandidateQuery{})
}

func (f *fakeGates) Checks(context.Context, string, digest.Digest) ([]meta.Check, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]meta.Check(nil), f.checks...), nil
}

func (f *fakeGates) Decide(_ context.Context, dec meta.Decision) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.cands[dec.CandidateID]
	if !c.Live() {
		return meta.ErrCandidateNotLive
	}
	c.State, c.Reasons = dec.State, dec.Reasons
	f.cands[c.ID] = c
	f.decisions = append(f.decisions, dec)
	return nil
}

func (f *fakeGates) Promote(_ context.Context, p meta.Promotion) (meta.Promoted, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c := f.cands[p.CandidateID]
	if !c.Live() {
		return meta.Promoted{}, meta.ErrCandidateNotLive
	}
	if f.promote != nil {
		if err := f.promote(p); err != nil {
			return meta.Promoted{}, err
		}
	}
	c.State, c.RollbackTag = meta.CandidatePromoted, p.RollbackTag(1)
	f.cands[c.ID] = c
	f.promotions = append(f.promotions, p)
	return meta.Promoted{Candidate: c, RollbackTag: c.RollbackTag}, nil
}

func (f *fakeGates) state(id int64) meta.Candidate {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.cands[id]
}

// indexJSON is an OCI index of the entries, each a descriptor's JSON.
func indexJSON(entries ...string) []byte {
	return fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"manifests":[%s]}`, oci.MediaTypeImageIndex, strings.Join(entries, ","))
}

// entry is an index entry; platform is "os/arch", "" for none; annotations
// is JSON, "" for none.
func entry(mediaType string, d digest.Digest, platform, annotations string) string {
	s := fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":1`, mediaType, d)
	if os, arch, ok := strings.Cut(platform, "/"); ok {
		s += fmt.Sprintf(`,"platform":{"os":%q,"architecture":%q}`, os, arch)
	}
	if annotations != "" {
		s += `,"annotations":` + annotations
	}
	return s + "}"
}

// TestGateScansWhatAnIndexReaches: the scan a gate reads of an index is
// that of every image the index reaches, as a runtime may pull them:
// images of nested indexes count, and so does an entry without a
// platform; only attestation manifests are left out. An entry that is no
// image, or an index nested past the bounds, is "unsupported", never a
// clean "scanned". Before, an index inside the candidate was asked for its
// own scan ("scanned", with no report) and an entry without a platform was
// skipped: both promoted an image with a critical vulnerability.
func TestGateScansWhatAnIndexReaches(t *testing.T) {
	ctx := context.Background()
	img := func(name string) meta.Manifest {
		content := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":2},"layers":[]}`,
			oci.MediaTypeImageManifest, oci.MediaTypeImageConfig, digest.FromString("config "+name))
		return meta.Manifest{Digest: digest.FromBytes(content), MediaType: oci.MediaTypeImageManifest, Content: content}
	}
	index := func(entries ...string) meta.Manifest {
		content := indexJSON(entries...)
		return meta.Manifest{Digest: digest.FromBytes(content), MediaType: oci.MediaTypeImageIndex, Content: content}
	}
	clean, vulnerable := img("clean amd64"), img("vulnerable")
	scanned := fakeScanner{clean.Digest: vulnInfo(), vulnerable.Digest: vulnInfo("CVE-2024-0001")}
	// What scan.Service.Security answers for an index: its platforms'
	// state, and no report.
	indexAnswer := scan.SecurityInfo{Status: meta.ScanScanned, VulnerabilityData: &scan.DataCoverage{Complete: true}}

	inner := index(entry(oci.MediaTypeImageManifest, vulnerable.Digest, "linux/amd64", ""))
	nested := index(entry(oci.MediaTypeImageIndex, inner.Digest, "linux/amd64", ""))
	noPlatform := index(entry(oci.MediaTypeImageManifest, clean.Digest, "linux/amd64", ""),
		entry(oci.MediaTypeImageManifest, vulnerable.Digest, "", ""))
	attested := index(entry(oci.MediaTypeImageManifest, clean.Digest, "linux/amd64", ""),
		entry(oci.MediaTypeImageManifest, vulnerable.Digest, "unknown/unknown", `{"vnd.docker.reference.type":"attestation-manifest"}`),
		entry(oci.MediaTypeImageManifest, vulnerable.Digest, "", `{"vnd.docker.reference.type":"attestation-manifest"}`))
	artifact := meta.Manifest{Digest: digest.FromString("an artifact"), MediaType: "application/vnd.example.thing.v1+json", Content: []byte(`{}`)}
	withArtifact := index(entry(oci.MediaTypeImageManifest, clean.Digest, "linux/amd64", ""),
		entry(artifact.MediaType, artifact.Digest, "", ""))
	// An index nested as deep as the gate goes, and one level deeper.
	deep := index(entry(oci.MediaTypeImageManifest, clean.Digest, "linux/amd64", ""))
	content := fakeContent{clean.Digest: clean, vulnerable.Digest: vulnerable, inner.Digest: inner, artifact.Digest: artifact}
	for range maxIndexDepth - 1 {
		content[deep.Digest] = deep
		deep = index(entry(oci.MediaTypeImageIndex, deep.Digest, "", ""))
	}
	tooDeep := index(entry(oci.MediaTypeImageIndex, deep.Digest, "", ""))
	for _, m := range []meta.Manifest{nested, noPlatform, attested, withArtifact, deep, tooDeep} {
		content[m.Digest] = m
		scanned[m.Digest] = indexAnswer
	}
	scanned[inner.Digest] = indexAnswer

	const policy = `{"tags":["15-*"],"policy":"scan.status == \"scanned\" && scan.counts.critical == 0"}`
	for _, tc := range []struct {
		name      string
		candidate meta.Manifest
		status    string
		critical  int64
		promoted  bool
		reason    string
	}{
		{"index in an index with a critical vulnerability", nested, "scanned", 1, false, "policy: scan.counts.critical == 0 is false"},
		{"entry without a platform with a critical vulnerability", noPlatform, "scanned", 1, false, "policy: scan.counts.critical == 0 is false"},
		{"attestations left out", attested, "scanned", 0, true, ""},
		{"an entry that is no image", withArtifact, "unsupported", 0, false, `policy: scan.status == "scanned" is false`},
		{"nested as deep as the gate goes", deep, "scanned", 0, true, ""},
		{"nested deeper", tooDeep, "unsupported", 0, false, `policy: scan.status == "scanned" is false`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gs := newFakeGates(t, policy, meta.Candidate{ID: 1, Repository: "team/app", Tag: "15-alpine", Digest: tc.candidate.Digest})
			s := New(Stores{Gates: gs, Content: content, Blobs: noBlobs{}, Scanner: scanned}, quiet)
			ev, err := s.Evaluate(ctx, 1)
			if err != nil {
				t.Fatal(err)
			}
			if ev.Scan.Status != tc.status || ev.Scan.Counts.Critical != tc.critical {
				t.Errorf("scan.status %q, scan.counts.critical %d (%s); want %q, %d", ev.Scan.Status, ev.Scan.Counts.Critical, ev.Scan.Reason, tc.status, tc.critical)
			}
			got := gs.state(1)
			if tc.promoted {
				if got.State != meta.CandidatePromoted {
					t.Fatalf("candidate %s %v, want promoted", got.State, got.Reasons)
				}
				return
			}
			if got.State != meta.CandidateBlocked || len(gs.promotions) != 0 {
				t.Fatalf("candidate %s (promotions %d), want blocked", got.State, len(gs.promotions))
			}
			if !strings.Contains(strings.Join(got.Reasons, "\n"), tc.reason) {
				t.Fatalf("reasons %q lack %q", got.Reasons, tc.reason)
			}
		})
	}
}

// TestGatePromotionRefusedByTheStore: a promotion the store refuses
// because the repository is read-only leaves the candidate pending with
// the reason; because the guarded tag became immutable, blocked with the
// reason (and promotion_blocked). Neither fails the gate job, which
// would retry in vain and hold the repository's later jobs behind it.
func TestGatePromotionRefusedByTheStore(t *testing.T) {
	ctx := context.Background()
	img := meta.Manifest{Digest: digest.FromString("image"), MediaType: oci.MediaTypeImageManifest,
		Content: []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)}
	content := fakeContent{img.Digest: img}
	for _, tc := range []struct {
		name   string
		err    error
		state  string
		reason string
	}{
		{"read-only repository", meta.ErrReadOnly, meta.CandidatePending, "read-only (READ_ONLY)"},
		{"immutable tag", &meta.ImmutableTagError{Tag: "15-alpine", Reason: "immutability policy p1 of organization team: every tag"},
			meta.CandidateBlocked, `tag "15-alpine" is immutable (immutability policy p1`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			gs := newFakeGates(t, `{"tags":["15-*"]}`, meta.Candidate{ID: 1, Repository: "team/app", Tag: "15-alpine", Digest: img.Digest})
			gs.promote = func(meta.Promotion) error { return tc.err }
			s := New(Stores{Gates: gs, Content: content, Blobs: noBlobs{}, Scanner: fakeScanner{img.Digest: vulnInfo()}}, quiet)
			job, _ := json.Marshal(Job{Repository: "team/app"})
			if err := s.Handle(ctx, meta.Job{Queue: Queue, Payload: job}); err != nil {
				t.Fatalf("the gate job failed (it would be retried): %v", err)
			}
			got := gs.state(1)
			if got.State != tc.state || !strings.Contains(strings.Join(got.Reasons, "\n"), tc.reason) {
				t.Fatalf("candidate %s %q, want %s with %q", got.State, got.Reasons, tc.state, tc.reason)
			}
			if n := len(gs.decisions); n != 1 || gs.decisions[0].State != tc.state {
				t.Fatalf("decisions %+v", gs.decisions)
			}
		})
	}
}

// TestGateChecksChangedDuringEvaluation: the promotion carries the checks
// the evaluation read; when the store refuses it because they changed
// (a check turned to fail meanwhile), the candidate is evaluated again on
// the new checks: blocked, not promoted. An override carries none.
func TestGateChecksChangedDuringEvaluation(t *testing.T) {
	ctx := context.Background()
	img := meta.Manifest{Digest: digest.FromString("image"), MediaType: oci.MediaTypeImageManifest,
		Content: []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)}
	content := fakeContent{img.Digest: img}
	gs := newFakeGates(t, `{"tags":["15-*"],"required_checks":["e2e"]}`, meta.Candidate{ID: 1, Repository: "team/app", Tag: "15-alpine", Digest: img.Digest})
	gs.checks = []meta.Check{{Name: "e2e", Status: StatusPass}}
	var seen []map[string]string
	gs.promote = func(p meta.Promotion) error {
		// The store's view: e2e failed after the evaluation read it.
		seen = append(seen, p.Checks)
		gs.checks = []meta.Check{{Name: "e2e", Status: StatusFail}}
		if p.Checks != nil && p.Checks["e2e"] != StatusFail {
			return meta.ErrChecksChanged
		}
		return nil
	}
	s := New(Stores{Gates: gs, Content: content, Blobs: noBlobs{}, Scanner: fakeScanner{img.Digest: vulnInfo()}}, quiet)
	ev, err := s.Evaluate(ctx, 1)
	if err != nil {
		t.Fatal(err)
	}
	if got := gs.state(1); got.State != meta.CandidateBlocked || ev.State != meta.CandidateBlocked || len(gs.promotions) != 0 {
		t.Fatalf("candidate %s %q (evaluation %s), promotions %d: want blocked on the failed check", got.State, got.Reasons, ev.State, len(gs.promotions))
	}
	if len(seen) != 1 || seen[0]["e2e"] != StatusPass {
		t.Fatalf("the promotion carried checks %v, want those evaluated", seen)
	}
	// A superuser's override promotes regardless of the checks.
	if _, err := s.Override(ctx, 1, "hotfix", "root"); err != nil {
		t.Fatal(err)
	}
	if got := gs.state(1); got.State != meta.CandidatePromoted || len(seen) != 2 || seen[1] != nil {
		t.Fatalf("override: candidate %s, checks carried %v", got.State, seen)
	}
	// Checks that keep changing leave the candidate to the next
	// evaluation, which their events queue: not a failed job.
	gs = newFakeGates(t, `{"tags":["15-*"]}`, meta.Candidate{ID: 2, Repository: "team/app", Tag: "15-alpine", Digest: img.Digest})
	gs.promote = func(meta.Promotion) error { return meta.ErrChecksChanged }
	s = New(Stores{Gates: gs, Content: content, Blobs: noBlobs{}, Scanner: fakeScanner{img.Digest: vulnInfo()}}, quiet)
	if _, err := s.Evaluate(ctx, 2); !errors.Is(err, meta.ErrChecksChanged) {
		t.Fatalf("evaluate under ever-changing checks: %v", err)
	}
	job, _ := json.Marshal(Job{Candidate: 2})
	if err := s.Handle(ctx, meta.Job{Queue: Queue, Payload: job}); err != nil {
		t.Fatalf("the gate job failed: %v", err)
	}
	if got := gs.state(2); got.State != meta.CandidatePending {
		t.Fatalf("candidate %s", got.State)
	}
}
