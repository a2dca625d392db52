package meta_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
)

// together runs fns at once (released by one barrier) and waits for all.
func together(fns ...func()) {
	var wg sync.WaitGroup
	start := make(chan struct{})
	for _, fn := range fns {
		wg.Go(func() {
			<-start
			fn()
		})
	}
	close(start)
	wg.Wait()
}

// gateEnv is a gated repository "mirror/node" guarding 15-*.
type gateEnv struct {
	t   *testing.T
	ctx context.Context
	db  *meta.DB
	// checkerID is robot ci+tester's, the gate's checker
	checkerID int64
}

// account creates user ns (unless it exists) and, with robot set, its
// robot ns+robot; it returns the id of the last.
func (e *gateEnv) account(ns, robot string) int64 {
	e.t.Helper()
	u, err := e.db.Users().UserByName(e.ctx, ns)
	if errors.Is(err, meta.ErrUserNotFound) {
		u, err = e.db.Users().CreateUser(e.ctx, meta.User{Username: ns, SecretHash: "x"})
	}
	if err != nil {
		e.t.Fatal(err)
	}
	if robot == "" {
		return u.ID
	}
	r, err := e.db.Users().CreateRobot(e.ctx, ns, robot, "x")
	if err != nil {
		e.t.Fatal(err)
	}
	return r.ID
}

func newGateEnv(t *testing.T, dialect string) *gateEnv {
	e := &gateEnv{t: t, ctx: context.Background(), db: metatest.Open(t, dialect)}
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf("published before the gate"), Tag: "14"})
	e.checkerID = e.account("ci", "tester")
	if err := e.db.Gates().PutGate(e.ctx, meta.Gate{Repository: "mirror/node", Tags: []string{"15-*"}, Checkers: []string{"ci+tester"},
		Config: json.RawMessage(`{"tags":["15-*"]}`)}); err != nil {
		t.Fatal(err)
	}
	return e
}

func (e *gateEnv) put(p meta.PutManifest) {
	e.t.Helper()
	if err := e.db.Manifests().PutManifest(e.ctx, p); err != nil {
		e.t.Fatal(err)
	}
}

func (e *gateEnv) manifest(d digest.Digest) meta.Manifest {
	e.t.Helper()
	m, err := e.db.Manifests().GetManifest(e.ctx, "mirror/node", "", d, false)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

func (e *gateEnv) tagged(tag string) digest.Digest {
	e.t.Helper()
	m, err := e.db.Manifests().GetManifest(e.ctx, "mirror/node", tag, "", false)
	if errors.Is(err, meta.ErrManifestNotFound) {
		return ""
	}
	if err != nil {
		e.t.Fatal(err)
	}
	return m.Digest
}

func (e *gateEnv) live(tag string) []meta.Candidate {
	e.t.Helper()
	cs, err := e.db.Gates().Candidates(e.ctx, "mirror/node", meta.CandidateQuery{Live: true, Tag: tag})
	if err != nil {
		e.t.Fatal(err)
	}
	return cs
}

func (e *gateEnv) events(kind string) []map[string]any {
	e.t.Helper()
	evs, err := e.db.Outbox().EventsAfter(e.ctx, 0, 1000)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []map[string]any
	for _, ev := range evs {
		if ev.Kind == kind {
			var d map[string]any
			json.Unmarshal(ev.Data, &d)
			out = append(out, d)
		}
	}
	return out
}

// TestGateHoldsAndPromotes: content for a guarded tag becomes a held
// candidate (the tag stays, promotion_pending instead of repo_push; an
// index's platforms and its referrers are held with it, and blobs only
// they reference); promotion moves the tag in one transaction with a
// unique immutable rollback tag, releases everything, writes the audit
// entry and announces repo_push and promotion_succeeded; it happens once.
func TestGateHoldsAndPromotes(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newGateEnv(t, dialect)
			ctx, db := e.ctx, e.db
			shared, own := blobOf("layer shared with 14"), blobOf("layer only the candidate has")
			for _, b := range []meta.Blob{shared, own} {
				if _, err := db.Blobs().StoreBlob(ctx, "mirror/node", b, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
					t.Fatal(err)
				}
			}
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf("image 14 with the shared layer"), Tag: "14-slim",
				Refs: []meta.Ref{{Digest: shared.Digest}}})
			child := manifestOf("15-alpine amd64")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: child, Refs: []meta.Ref{{Digest: shared.Digest}, {Digest: own.Digest}}})
			idx := indexOf("15-alpine index v1")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: idx, Tag: "15-alpine", Refs: []meta.Ref{{Digest: child.Digest, IsManifest: true}}})
			sig := referrerOf(t, "signature of the candidate", "application/vnd.dev.cosign.artifact.sig.v1+json",
				"application/vnd.dev.cosign.simplesigning.v1+json", idx.Digest)
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: sig})
			unguarded := manifestOf("unguarded latest")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: unguarded, Tag: "latest"})

			if got := e.tagged("15-alpine"); got != "" {
				t.Fatalf("the guarded tag moved to %s before promotion", got)
			}
			for _, d := range []digest.Digest{idx.Digest, child.Digest, sig.Digest} {
				if !e.manifest(d).Held {
					t.Errorf("%s is not held", d)
				}
			}
			if e.manifest(unguarded.Digest).Held || e.tagged("latest") != unguarded.Digest {
				t.Error("an unguarded tag of a gated repository was held")
			}
			if b, _ := db.Blobs().RepositoryBlob(ctx, "mirror/node", own.Digest); !b.Held {
				t.Error("a blob only the candidate references is readable")
			}
			if b, _ := db.Blobs().RepositoryBlob(ctx, "mirror/node", shared.Digest); b.Held {
				t.Error("a blob a published image shares with the candidate is held")
			}
			refs, _ := db.Manifests().Referrers(ctx, "mirror/node", idx.Digest, "")
			if len(refs) != 1 || !refs[0].Held {
				t.Errorf("referrers of the candidate: %+v", refs)
			}
			cands := e.live("15-alpine")
			if len(cands) != 1 || cands[0].Digest != idx.Digest || cands[0].State != meta.CandidatePending {
				t.Fatalf("candidates: %+v", cands)
			}
			if p := e.events(meta.EventPromotionPending); len(p) != 1 || p[0]["digest"] != idx.Digest.String() || p[0]["tag"] != "15-alpine" {
				t.Fatalf("promotion_pending: %v", p)
			}
			for _, push := range e.events(meta.EventRepoPush) {
				if push["digest"] == idx.Digest.String() {
					t.Fatalf("repo_push for a candidate: %v", push)
				}
			}
			// GC keeps the candidate although no tag points at it.
			dangling, err := db.Collector().DanglingManifests(ctx, time.Now().Add(time.Hour), 100)
			if err != nil {
				t.Fatal(err)
			}
			for _, c := range dangling {
				if c.Digest == idx.Digest {
					t.Fatal("garbage collection would collect a live candidate")
				}
			}
			keepers, _ := db.Collector().ManifestGCKeepers(ctx, "mirror/node", idx.Digest)
			if !slices.Equal(keepers.Candidates, []string{"15-alpine"}) {
				t.Errorf("gc keepers: %+v", keepers)
			}

			promote := meta.Promotion{CandidateID: cands[0].ID, RollbackTag: func(n int64) string { return fmt.Sprintf("15-alpine-%d", n) },
				Detail: json.RawMessage(`{"state":"promoted"}`), Actor: "berth-gate"}
			res, err := db.Gates().Promote(ctx, promote)
			if err != nil {
				t.Fatal(err)
			}
			if res.RollbackTag != "15-alpine-1" || e.tagged("15-alpine") != idx.Digest || e.tagged("15-alpine-1") != idx.Digest {
				t.Fatalf("promotion: %+v", res)
			}
			for _, d := range []digest.Digest{idx.Digest, child.Digest, sig.Digest} {
				if e.manifest(d).Held {
					t.Errorf("%s is still held after promotion", d)
				}
			}
			if b, _ := db.Blobs().RepositoryBlob(ctx, "mirror/node", own.Digest); b.Held {
				t.Error("the candidate's own layer is held after promotion")
			}
			if _, err := db.Gates().Promote(ctx, promote); !errors.Is(err, meta.ErrCandidateNotLive) {
				t.Fatalf("second promotion: %v", err)
			}
			pushes := e.events(meta.EventRepoPush)
			last := pushes[len(pushes)-1]
			if last["digest"] != idx.Digest.String() || fmt.Sprint(last["updated_tags"]) != "[15-alpine 15-alpine-1]" {
				t.Fatalf("repo_push of the promotion: %v", last)
			}
			if s := e.events(meta.EventPromotionSucceeded); len(s) != 1 || s[0]["rollback_tag"] != "15-alpine-1" {
				t.Fatalf("promotion_succeeded: %v", s)
			}
			audit, _ := db.Access().RepositoryAuditLog(ctx, "mirror/node", 0, 10)
			if !slices.ContainsFunc(audit, func(a meta.AuditEntry) bool { return a.Kind == "gate_promote" && a.Actor == "berth-gate" }) {
				t.Fatalf("no gate_promote audit entry: %+v", audit)
			}

			// The rollback tag is immutable: no push, retag or delete
			// moves it, nor does deleting its manifest.
			var imm *meta.ImmutableTagError
			err = db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf("overwrite"), Tag: "15-alpine-1"})
			if !errors.As(err, &imm) {
				t.Fatalf("push onto the rollback tag: %v", err)
			}
			if err := db.Manifests().MoveTag(ctx, "mirror/node", "15-alpine-1", unguarded.Digest, "alice"); !errors.As(err, &imm) {
				t.Fatalf("retag of the rollback tag: %v", err)
			}
			if err := db.Manifests().DeleteTag(ctx, "mirror/node", "15-alpine-1", "alice"); !errors.As(err, &imm) {
				t.Fatalf("delete of the rollback tag: %v", err)
			}
			if err := db.Manifests().DeleteManifest(ctx, "mirror/node", idx.Digest, "alice"); !errors.As(err, &imm) {
				t.Fatalf("delete of the rollback tag's manifest: %v", err)
			}

			// A second good change: -2; restore puts the tag back on -1.
			idx2 := indexOf("15-alpine index v2")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: idx2, Tag: "15-alpine", Refs: []meta.Ref{{Digest: child.Digest, IsManifest: true}}})
			c2 := e.live("15-alpine")
			promote.CandidateID = c2[0].ID
			if res, err := db.Gates().Promote(ctx, promote); err != nil || res.RollbackTag != "15-alpine-2" || res.Previous != idx.Digest {
				t.Fatalf("second promotion: %+v %v", res, err)
			}
			if err := db.Manifests().RestoreTag(ctx, "mirror/node", "15-alpine", idx.Digest, "alice"); err != nil {
				t.Fatal(err)
			}
			if e.tagged("15-alpine") != idx.Digest {
				t.Fatal("restore did not move the tag back")
			}
			if err := db.Manifests().RestoreTag(ctx, "mirror/node", "15-alpine", unguarded.Digest, "alice"); !errors.Is(err, meta.ErrTagHistoryNotFound) {
				t.Fatalf("restore to a digest the tag never had: %v", err)
			}
			// The digest rolled back from is not proposed again by a push
			// (or a mirror sync); a manual promotion may propose it.
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: idx2, Tag: "15-alpine"})
			if live := e.live("15-alpine"); len(live) != 0 {
				t.Fatalf("a rolled-back digest was proposed again: %+v", live)
			}
			if c, err := db.Gates().ManualCandidate(ctx, "mirror/node", "15-alpine", idx2.Digest, "root"); err != nil || c.State != meta.CandidatePending {
				t.Fatalf("manual candidate of a rolled-back digest: %+v %v", c, err)
			}
		})
	}
}

// TestGateCandidatesAndDecisions: the newest candidate of a tag wins
// (older ones are superseded and never promoted), a mirror that syncs
// the same digest again makes no new candidate, promotion_blocked is
// announced once per set of reasons, checks are stored per manifest with
// a gate_check event, and deleting the gate releases what it held.
func TestGateCandidatesAndDecisions(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newGateEnv(t, dialect)
			ctx, db := e.ctx, e.db
			a, b := manifestOf("candidate a"), manifestOf("candidate b")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: a, Tag: "15-alpine"})
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: a, Tag: "15-alpine"}) // a sync again
			if n := len(e.events(meta.EventPromotionPending)); n != 1 {
				t.Fatalf("%d promotion_pending for one candidate synced twice", n)
			}
			first := e.live("15-alpine")[0]
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: b, Tag: "15-alpine"})
			live := e.live("15-alpine")
			if len(live) != 1 || live[0].Digest != b.Digest {
				t.Fatalf("live candidates: %+v", live)
			}
			if c, _ := db.Gates().Candidate(ctx, first.ID); c.State != meta.CandidateSuperseded {
				t.Fatalf("older candidate: %+v", c)
			}
			if _, err := db.Gates().Promote(ctx, meta.Promotion{CandidateID: first.ID, RollbackTag: func(n int64) string { return "x" }}); !errors.Is(err, meta.ErrCandidateNotLive) {
				t.Fatalf("promoting a superseded candidate: %v", err)
			}
			dec := meta.Decision{CandidateID: live[0].ID, State: meta.CandidateBlocked, Reasons: []string{`check "e2e" failed`},
				Detail: json.RawMessage(`{}`), Event: json.RawMessage(`{"digest":"` + b.Digest.String() + `","tags":["15-alpine"]}`)}
			for range 2 {
				if err := db.Gates().Decide(ctx, dec); err != nil {
					t.Fatal(err)
				}
			}
			if n := len(e.events(meta.EventPromotionBlocked)); n != 1 {
				t.Fatalf("%d promotion_blocked for one decision made twice", n)
			}
			dec.Reasons = []string{"policy: scan.counts.critical == 0 is false"}
			if err := db.Gates().Decide(ctx, dec); err != nil {
				t.Fatal(err)
			}
			if n := len(e.events(meta.EventPromotionBlocked)); n != 2 {
				t.Fatalf("%d promotion_blocked after the reasons changed", n)
			}
			if err := db.Gates().PostCheck(ctx, "mirror/node", b.Digest, meta.Check{Name: "e2e", Status: "pass", Actor: "ci+tester"}); err != nil {
				t.Fatal(err)
			}
			if err := db.Gates().PostCheck(ctx, "mirror/node", b.Digest, meta.Check{Name: "e2e", Status: "fail", Summary: "3 failed"}); err != nil {
				t.Fatal(err)
			}
			checks, _ := db.Gates().Checks(ctx, "mirror/node", b.Digest)
			if len(checks) != 1 || checks[0].Status != "fail" || checks[0].Summary != "3 failed" {
				t.Fatalf("checks: %+v", checks)
			}
			if n := len(e.events(meta.EventGateCheck)); n != 2 {
				t.Fatalf("%d gate_check events", n)
			}
			if err := db.Gates().PostCheck(ctx, "mirror/node", digest.FromString("nothing"), meta.Check{Name: "e2e", Status: "pass"}); !errors.Is(err, meta.ErrManifestNotFound) {
				t.Fatalf("check of an unknown manifest: %v", err)
			}
			ri, _ := db.Repositories().Repository(ctx, "mirror/node")
			if !ri.Gated || !slices.Equal(ri.CheckerIDs, []int64{e.checkerID}) {
				t.Fatalf("repository info: %+v", ri)
			}
			if err := db.Gates().DeleteGate(ctx, "mirror/node"); err != nil {
				t.Fatal(err)
			}
			if e.manifest(b.Digest).Held || len(e.live("15-alpine")) != 0 {
				t.Fatal("deleting the gate left content held or candidates live")
			}
			if ri, _ := db.Repositories().Repository(ctx, "mirror/node"); ri.Gated {
				t.Fatal("repository still flagged gated")
			}
		})
	}
}

// TestGateConcurrentCandidates: pushes of different digests to one
// guarded tag racing with promotions: at most one candidate stays live,
// none is promoted twice, and every promotion has its own rollback tag.
func TestGateConcurrentCandidates(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newGateEnv(t, dialect)
			ctx, db := e.ctx, e.db
			var wg sync.WaitGroup
			errs := make(chan error, 64)
			for i := range 8 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := range 4 {
						m := manifestOf(fmt.Sprintf("racer %d %d", i, j))
						if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "mirror/node", Manifest: m, Tag: "15-alpine"}); err != nil {
							errs <- err
							return
						}
						cs, err := db.Gates().Candidates(ctx, "mirror/node", meta.CandidateQuery{Live: true, Tag: "15-alpine"})
						if err != nil {
							errs <- err
							return
						}
						for _, c := range cs {
							_, err := db.Gates().Promote(ctx, meta.Promotion{CandidateID: c.ID, RollbackTag: func(n int64) string { return fmt.Sprintf("15-alpine-%d", n) }})
							if err != nil && !errors.Is(err, meta.ErrCandidateNotLive) {
								errs <- err
								return
							}
						}
					}
				}()
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			if live := e.live("15-alpine"); len(live) > 1 {
				t.Fatalf("%d live candidates for one tag", len(live))
			}
			all, _ := db.Gates().Candidates(ctx, "mirror/node", meta.CandidateQuery{Limit: 100})
			rollbacks := map[string]bool{}
			for _, c := range all {
				if c.State == meta.CandidatePromoted {
					if rollbacks[c.RollbackTag] {
						t.Fatalf("rollback tag %s made twice", c.RollbackTag)
					}
					rollbacks[c.RollbackTag] = true
					if e.tagged(c.RollbackTag) != c.Digest {
						t.Fatalf("rollback tag %s does not point at its candidate", c.RollbackTag)
					}
				}
			}
			if n := len(e.events(meta.EventPromotionSucceeded)); n != len(rollbacks) {
				t.Fatalf("%d promotion_succeeded for %d promotions", n, len(rollbacks))
			}
		})
	}
}

// TestVulnImportAnnouncesDataChange: an import that applies advisories
// appends vulnerability_data_updated (the gate evaluates its live
// candidates again: a scan input changed); one that applies nothing
// appends nothing.
func TestVulnImportAnnouncesDataChange(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newGateEnv(t, dialect)
			rec := meta.VulnRecord{ID: "DSA-0001", Modified: "2026-11-30T00:00:00Z", Data: []byte(`{"id":"DSA-0001"}`),
				Keys: []meta.VulnKey{{Ecosystem: "Debian:12", Name: "openssl"}}}
			for range 2 {
				if _, err := e.db.VulnDB().ImportVulns(e.ctx, []meta.VulnRecord{rec}); err != nil {
					t.Fatal(err)
				}
			}
			if got := e.events(meta.EventVulnDataUpdated); len(got) != 1 {
				t.Fatalf("%d vulnerability_data_updated events for one applied import", len(got))
			}
		})
	}
}

// TestRollbackTagNames: a template that does not vary with the count
// ({tag}-{digest12}) gives a digest promoted again a numbered name
// instead of failing (it looped on the taken name, and the error stalled
// the repository's evaluations); a guarded tag of 128 characters gets a
// rollback tag cut to 128, still unique. Every name is a valid tag.
func TestRollbackTagNames(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newGateEnv(t, dialect)
			ctx := e.ctx
			byDigest := func(tag string, d digest.Digest) func(int64) string {
				return func(int64) string { return tag + "-" + d.Encoded()[:12] }
			}
			promote := func(tag string, m meta.Manifest, name func(int64) string) string {
				t.Helper()
				cs := e.live(tag)
				if len(cs) != 1 {
					c, err := e.db.Gates().ManualCandidate(ctx, "mirror/node", tag, m.Digest, "alice")
					if err != nil {
						t.Fatal(err)
					}
					cs = []meta.Candidate{c}
				}
				res, err := e.db.Gates().Promote(ctx, meta.Promotion{CandidateID: cs[0].ID, RollbackTag: name, Actor: "alice"})
				if err != nil {
					t.Fatalf("promote %s to %s: %v", m.Digest, tag, err)
				}
				if err := oci.ValidateTag(res.RollbackTag); err != nil {
					t.Fatalf("rollback tag %q: %v", res.RollbackTag, err)
				}
				if e.tagged(res.RollbackTag) != m.Digest {
					t.Fatalf("rollback tag %s points at %s", res.RollbackTag, e.tagged(res.RollbackTag))
				}
				return res.RollbackTag
			}
			a, b := manifestOf("a of 15-alpine"), manifestOf("b of 15-alpine")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: a, Tag: "15-alpine"})
			first := promote("15-alpine", a, byDigest("15-alpine", a.Digest))
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: b, Tag: "15-alpine"})
			promote("15-alpine", b, byDigest("15-alpine", b.Digest))
			again := promote("15-alpine", a, byDigest("15-alpine", a.Digest))
			if again == first || !strings.HasPrefix(again, first+"-") {
				t.Fatalf("a promoted again: rollback tag %q (the first was %q)", again, first)
			}

			long := "15-" + strings.Repeat("x", 125)
			c := manifestOf("c of a long tag")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: c, Tag: long})
			name := promote(long, c, func(n int64) string { return fmt.Sprintf("%s-%d", long, n) })
			if len(name) != 128 || !strings.HasSuffix(name, "-1") {
				t.Fatalf("rollback tag of a 128-character tag: %q", name)
			}
		})
	}
}

// TestGateDeletedDuringAPush: pushes to a guarded tag race deletions of
// the gate. Whatever the order, once the gate is gone nothing in the
// repository is held and no candidate is live, and the tag can be
// pushed and read. On PostgreSQL a push that had read the gate before the
// delete committed its candidate after it: the manifest stayed held for
// ever, invisible to readers, with no gate to promote it.
func TestGateDeletedDuringAPush(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newGateEnv(t, dialect)
			ctx := e.ctx
			gate := meta.Gate{Repository: "mirror/node", Tags: []string{"15-*"}, Config: json.RawMessage(`{"tags":["15-*"]}`)}
			for round := range 30 {
				together(func() {
					e.put(meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf(fmt.Sprintf("round %d", round)), Tag: "15-alpine"})
				}, func() {
					if err := e.db.Gates().DeleteGate(ctx, "mirror/node"); err != nil {
						t.Error(err)
					}
				})
				if t.Failed() {
					return
				}
				held, err := e.db.HeldManifests(ctx, "mirror/node")
				if err != nil {
					t.Fatal(err)
				}
				if len(held) > 0 || len(e.live("")) > 0 {
					t.Fatalf("round %d: with the gate deleted, %d manifests are held and %d candidates live", round, len(held), len(e.live("")))
				}
				if err := e.db.Gates().PutGate(ctx, gate); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestDecisionsUnderAChangedGate: a promotion decided under a gate that
// was replaced since is refused (ErrGateChanged: the replacement
// evaluates the candidate again under the new configuration), and one
// under the current gate goes through; a decision racing a DeleteGate
// never brings the candidate it withdrew back to life.
func TestDecisionsUnderAChangedGate(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newGateEnv(t, dialect)
			ctx := e.ctx
			gate := meta.Gate{Repository: "mirror/node", Tags: []string{"15-*"}, Config: json.RawMessage(`{"tags":["15-*"]}`)}
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf("candidate"), Tag: "15-alpine"})
			old, err := e.db.Gates().GetGate(ctx, "mirror/node")
			if err != nil {
				t.Fatal(err)
			}
			gate.Config = json.RawMessage(`{"tags":["15-*"],"required_checks":["e2e"]}`)
			if err := e.db.Gates().PutGate(ctx, gate); err != nil {
				t.Fatal(err)
			}
			c := e.live("15-alpine")[0]
			name := func(n int64) string { return fmt.Sprintf("15-alpine-%d", n) }
			if _, err := e.db.Gates().Promote(ctx, meta.Promotion{CandidateID: c.ID, RollbackTag: name, GateUpdatedAt: old.UpdatedAt}); !errors.Is(err, meta.ErrGateChanged) {
				t.Fatalf("promotion decided under the replaced gate: %v", err)
			}
			if len(e.live("15-alpine")) != 1 || e.tagged("15-alpine") != "" {
				t.Fatal("the refused promotion changed the candidate or the tag")
			}
			cur, _ := e.db.Gates().GetGate(ctx, "mirror/node")
			if _, err := e.db.Gates().Promote(ctx, meta.Promotion{CandidateID: c.ID, RollbackTag: name, GateUpdatedAt: cur.UpdatedAt}); err != nil {
				t.Fatalf("promotion under the current gate: %v", err)
			}

			for round := range 30 {
				e.put(meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf(fmt.Sprintf("race %d", round)), Tag: "15-alpine"})
				c := e.live("15-alpine")[0]
				together(func() {
					err := e.db.Gates().Decide(ctx, meta.Decision{CandidateID: c.ID, State: meta.CandidateBlocked, Reasons: []string{"round"},
						Detail: json.RawMessage(`{}`), Event: json.RawMessage(`{}`)})
					if err != nil && !errors.Is(err, meta.ErrCandidateNotLive) {
						t.Error(err)
					}
				}, func() {
					if err := e.db.Gates().DeleteGate(ctx, "mirror/node"); err != nil {
						t.Error(err)
					}
				})
				if live := e.live(""); len(live) > 0 {
					t.Fatalf("round %d: a decision brought back a candidate the gate's deletion withdrew: %+v", round, live)
				}
				if err := e.db.Gates().PutGate(ctx, gate); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}

// TestHeldDependentsAreNotListed: a gate's held candidate built on a base
// is not among the base's dependents (whoever reads both repositories
// would learn of the candidate) until it is promoted.
func TestHeldDependentsAreNotListed(t *testing.T) {
	e := newGateEnv(t, "sqlite")
	ctx := e.ctx
	base := manifestOf("a base")
	e.put(meta.PutManifest{Repository: "library/base", Manifest: base, Tag: "1"})
	ri, err := e.db.Repositories().Repository(ctx, "library/base")
	if err != nil {
		t.Fatal(err)
	}
	cand := manifestOf("a candidate on the base")
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: cand, Tag: "15-alpine"})
	if err := e.db.Graph().SetBases(ctx, "mirror/node", cand.Digest, []meta.BaseLink{{RepositoryID: ri.ID, Digest: base.Digest, Method: "layers", Level: 1, Layers: 1}}); err != nil {
		t.Fatal(err)
	}
	deps, err := e.db.Graph().Dependents(ctx, "library/base", base.Digest, true, 100)
	if err != nil || len(deps) != 0 {
		t.Fatalf("dependents while the candidate is held: %+v %v", deps, err)
	}
	c := e.live("15-alpine")[0]
	if _, err := e.db.Gates().Promote(ctx, meta.Promotion{CandidateID: c.ID, RollbackTag: func(n int64) string { return fmt.Sprintf("15-alpine-%d", n) }}); err != nil {
		t.Fatal(err)
	}
	if deps, err = e.db.Graph().Dependents(ctx, "library/base", base.Digest, true, 100); err != nil || len(deps) != 1 || deps[0].Digest != cand.Digest {
		t.Fatalf("dependents once promoted: %+v %v", deps, err)
	}
}

// TestRetagOfARolledBackDigest: after a restore rolled a guarded tag
// back from a digest, a retag of that digest onto the tag says so
// (ErrRolledBack) rather than that it became the tag's candidate (it did
// not: a rolled-back digest is proposed again only manually).
func TestRetagOfARolledBackDigest(t *testing.T) {
	e := newGateEnv(t, "sqlite")
	ctx := e.ctx
	name := func(n int64) string { return fmt.Sprintf("15-alpine-%d", n) }
	a, b := manifestOf("a"), manifestOf("b")
	for _, m := range []meta.Manifest{a, b} {
		e.put(meta.PutManifest{Repository: "mirror/node", Manifest: m, Tag: "15-alpine"})
		if _, err := e.db.Gates().Promote(ctx, meta.Promotion{CandidateID: e.live("15-alpine")[0].ID, RollbackTag: name}); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.db.Manifests().RestoreTag(ctx, "mirror/node", "15-alpine", a.Digest, "alice"); err != nil {
		t.Fatal(err)
	}
	if err := e.db.Manifests().MoveTag(ctx, "mirror/node", "15-alpine", b.Digest, "alice"); !errors.Is(err, meta.ErrRolledBack) {
		t.Fatalf("retag of the rolled-back digest: %v", err)
	}
	if len(e.live("15-alpine")) != 0 || e.tagged("15-alpine") != a.Digest {
		t.Fatal("the refused retag changed the tag or made a candidate")
	}
	c := manifestOf("c")
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: c})
	if err := e.db.Manifests().MoveTag(ctx, "mirror/node", "15-alpine", c.Digest, "alice"); !errors.Is(err, meta.ErrGuardedTag) || len(e.live("15-alpine")) != 1 {
		t.Fatalf("retag of another digest: %v", err)
	}
	// b promoted by hand after its rollback, then c promoted: a retag of b
	// is still not proposed (it was rolled back from once), and says so.
	mb, err := e.db.Gates().ManualCandidate(ctx, "mirror/node", "15-alpine", b.Digest, "alice")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Gates().Promote(ctx, meta.Promotion{CandidateID: mb.ID, RollbackTag: name}); err != nil {
		t.Fatal(err)
	}
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: c, Tag: "15-alpine"})
	if _, err := e.db.Gates().Promote(ctx, meta.Promotion{CandidateID: e.live("15-alpine")[0].ID, RollbackTag: name}); err != nil {
		t.Fatal(err)
	}
	if err := e.db.Manifests().MoveTag(ctx, "mirror/node", "15-alpine", b.Digest, "alice"); !errors.Is(err, meta.ErrRolledBack) {
		t.Fatalf("retag of a digest rolled back from once, promoted by hand since: %v", err)
	}
}

// TestGateLockOrder: on PostgreSQL, pushes (of a new candidate, and again
// of a held one, as a gated mirror's sync does), retags, restores and
// promotions race gate replacements and deletions without deadlocking:
// each takes the gate's row before the manifests and candidates, in the
// order PutGate and DeleteGate do (deadlocks were retried, after
// PostgreSQL's one-second detection, each time).
func TestGateLockOrder(t *testing.T) {
	dialect := "postgres"
	if !slices.Contains(metatest.Dialects(), dialect) {
		t.Skip("SKIP: PostgreSQL only (BERTH_TEST_POSTGRES_DSN)")
	}
	e := newGateEnv(t, dialect)
	ctx := e.ctx
	gate := meta.Gate{Repository: "mirror/node", Tags: []string{"15-*"}, Config: json.RawMessage(`{"tags":["15-*"]}`)}
	name := func(n int64) string { return fmt.Sprintf("15-alpine-%d", n) }
	held := manifestOf("held, pushed again by every sync")
	for round := range 20 {
		e.put(meta.PutManifest{Repository: "mirror/node", Manifest: held, Tag: "15-alpine"})
		fresh := manifestOf(fmt.Sprintf("round %d", round))
		e.put(meta.PutManifest{Repository: "mirror/node", Manifest: fresh})
		together(func() {
			e.db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "mirror/node", Manifest: held, Tag: "15-alpine"})
		}, func() {
			e.db.Manifests().MoveTag(ctx, "mirror/node", "15-slim", fresh.Digest, "alice")
		}, func() {
			if cs := e.live(""); len(cs) > 0 {
				g, err := e.db.Gates().GetGate(ctx, "mirror/node")
				if err == nil {
					e.db.Gates().Promote(ctx, meta.Promotion{CandidateID: cs[0].ID, RollbackTag: name, GateUpdatedAt: g.UpdatedAt})
				}
			}
		}, func() {
			if round%2 == 0 {
				e.db.Gates().DeleteGate(ctx, "mirror/node")
			} else {
				e.db.Gates().PutGate(ctx, gate)
			}
		})
		if err := e.db.Gates().PutGate(ctx, gate); err != nil {
			t.Fatal(err)
		}
	}
	if n := e.db.Deadlocks(); n > 0 {
		t.Fatalf("%d transactions deadlocked", n)
	}
}

// TestManualCandidateNeedsTheGate: a manual candidate is made only while
// the gate exists (its row read FOR SHARE, so that a DeleteGate at the
// same moment waits and withdraws it); with no gate, ErrGateNotFound.
func TestManualCandidateNeedsTheGate(t *testing.T) {
	e := newGateEnv(t, "sqlite")
	m := manifestOf("by hand")
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: m})
	if err := e.db.Gates().DeleteGate(e.ctx, "mirror/node"); err != nil {
		t.Fatal(err)
	}
	if _, err := e.db.Gates().ManualCandidate(e.ctx, "mirror/node", "15-alpine", m.Digest, "alice"); !errors.Is(err, meta.ErrGateNotFound) {
		t.Fatalf("a manual candidate with no gate: %v", err)
	}
	if live := e.live(""); len(live) != 0 {
		t.Fatalf("live candidates with no gate: %+v", live)
	}
}

// TestAutoPruneKeepsRollbackTags: a gate's rollback tags, immutable by
// themselves (not by a policy), are never pruned by an auto-prune policy
// that covers them.
func TestAutoPruneKeepsRollbackTags(t *testing.T) {
	e := newGateEnv(t, "sqlite")
	ctx := e.ctx
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf("promoted"), Tag: "15-alpine"})
	if _, err := e.db.Gates().Promote(ctx, meta.Promotion{CandidateID: e.live("15-alpine")[0].ID, RollbackTag: func(n int64) string { return fmt.Sprintf("15-alpine-%d", n) }}); err != nil {
		t.Fatal(err)
	}
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf("old build"), Tag: "old-build"})
	if _, err := e.db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyAutoPrune, Namespace: "mirror", Repository: "mirror/node",
		Method: "creation_date", Value: "1s", TagPattern: "^(15-alpine-|old-)", TagPatternMatches: true}); err != nil {
		t.Fatal(err)
	}
	gone, err := e.db.Manifests().PruneRepository(ctx, "mirror/node", time.Now().Add(time.Hour), "pruner")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(gone, []string{"old-build"}) || e.tagged("15-alpine-1") == "" {
		t.Fatalf("pruned %v; the rollback tag is at %q", gone, e.tagged("15-alpine-1"))
	}
}

// TestGateCheckersAreAccounts: a gate's checkers are the accounts it named,
// by id. An account deleted and created again under the same name (a new
// organization of a deleted one's name with a robot of the old one's
// name, or a new user "bob") is not a checker: before, checkers were
// names, and the new account could read held candidates and pass checks.
// A name no account has is refused; an upgrade carries the names over.
func TestGateCheckersAreAccounts(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newGateEnv(t, dialect)
			ctx, db := e.ctx, e.db
			bob := e.account("bob", "")
			cfg := json.RawMessage(`{"tags":["15-*"]}`)
			if err := db.Gates().PutGate(ctx, meta.Gate{Repository: "mirror/node", Tags: []string{"15-*"}, Checkers: []string{"ci+tester", "bob"}, Config: cfg}); err != nil {
				t.Fatal(err)
			}
			allowed := func(id int64, kind auth.Kind, name string) bool {
				t.Helper()
				ri, err := db.Repositories().Repository(ctx, "mirror/node")
				if err != nil {
					t.Fatal(err)
				}
				return auth.Allowed(auth.Identity{Kind: kind, ID: id, Name: name}, auth.Repo{Name: ri.Name, Exists: true, Public: true, State: ri.State, CheckerIDs: ri.CheckerIDs},
					auth.Standing{}, auth.ActionChecks)
			}
			if !allowed(e.checkerID, auth.KindRobot, "ci+tester") || !allowed(bob, auth.KindUser, "bob") {
				t.Fatal("the gate's checkers may not check")
			}
			if allowed(bob, auth.KindToken, "bob") {
				t.Fatal("an access token with a checker's id and name checks without the checks scope")
			}
			if err := db.Users().DeleteUser(ctx, "ci+tester"); err != nil {
				t.Fatal(err)
			}
			if err := db.Users().DeleteUser(ctx, "bob"); err != nil {
				t.Fatal(err)
			}
			newRobot, newBob := e.account("ci", "tester"), e.account("bob", "")
			if allowed(newRobot, auth.KindRobot, "ci+tester") || allowed(newBob, auth.KindUser, "bob") {
				t.Fatal("an account created again under a checker's name is a checker")
			}
			if g, err := db.Gates().GetGate(ctx, "mirror/node"); err != nil || len(g.Checkers) != 0 {
				t.Fatalf("the gate's checkers after their accounts were deleted: %v, %v", g.Checkers, err)
			}
			var unknown *meta.UnknownCheckerError
			if err := db.Gates().PutGate(ctx, meta.Gate{Repository: "mirror/node", Tags: []string{"15-*"}, Checkers: []string{"nobody"}, Config: cfg}); !errors.As(err, &unknown) || unknown.Name != "nobody" {
				t.Fatalf("a checker nobody is: %v", err)
			}

			// An upgrade from version 28: the names become the accounts
			// that have them.
			dsn := metatest.DSN(t, dialect)
			old, err := meta.OpenAt(ctx, dsn, 28)
			if err != nil {
				t.Fatal(err)
			}
			defer old.Close()
			carol, err := old.Users().CreateUser(ctx, meta.User{Username: "carol", SecretHash: "x"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := old.Users().CreateUser(ctx, meta.User{Username: "carol_2", SecretHash: "x"}); err != nil {
				t.Fatal(err)
			}
			if err := old.Exec(ctx, "INSERT INTO repositories (name, visibility, gated, gate_checkers, created_at) VALUES ('carol/app', 'private', 1, ?, 1)", "carol\ngone"); err != nil {
				t.Fatal(err)
			}
			if err := old.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			ri, err := old.Repositories().Repository(ctx, "carol/app")
			if err != nil || !slices.Equal(ri.CheckerIDs, []int64{carol.ID}) {
				t.Fatalf("checkers after the upgrade: %v, %v (want carol's id %d alone)", ri.CheckerIDs, err, carol.ID)
			}
		})
	}
}
