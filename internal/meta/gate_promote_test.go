package meta_test

import (
	"encoding/json"
	"errors"
	"fmt"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// candidateFor pushes a manifest for guarded tag 15-alpine and returns
// its live candidate.
func (e *gateEnv) candidateFor(text string) meta.Candidate {
	e.t.Helper()
	m := manifestOf(text)
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: m, Tag: "15-alpine"})
	live := e.live("15-alpine")
	if len(live) != 1 || live[0].Digest != m.Digest {
		e.t.Fatalf("candidates: %+v", live)
	}
	return live[0]
}

func promotionOf(c meta.Candidate, checks map[string]string) meta.Promotion {
	return meta.Promotion{CandidateID: c.ID, RollbackTag: func(n int64) string { return fmt.Sprintf("15-alpine-%d", n) },
		Detail: json.RawMessage(`{"state":"promoted"}`), Actor: "berth-gate", Checks: checks}
}

// TestPromoteRefusedInAReadOnlyRepository: a promotion (a checker's pass,
// a finished scan) does not move a tag of a READ_ONLY repository: the
// tag stays, the candidate stays live and held, no event is appended;
// once the repository takes writes again it is promoted.
func TestPromoteRefusedInAReadOnlyRepository(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newGateEnv(t, dialect)
			c := e.candidateFor("15-alpine, pushed before the repository was made read-only")
			state := "READ_ONLY"
			if err := e.db.Repositories().UpdateRepository(e.ctx, "mirror/node", nil, &state, nil, nil); err != nil {
				t.Fatal(err)
			}
			before := len(e.events(meta.EventRepoPush))
			if _, err := e.db.Gates().Promote(e.ctx, promotionOf(c, nil)); !errors.Is(err, meta.ErrReadOnly) {
				t.Fatalf("promotion in a read-only repository: %v", err)
			}
			if got := e.tagged("15-alpine"); got != "" {
				t.Fatalf("the guarded tag of a read-only repository moved to %s", got)
			}
			if live := e.live("15-alpine"); len(live) != 1 || live[0].ID != c.ID || !e.manifest(c.Digest).Held {
				t.Fatalf("the candidate after a refused promotion: %+v", live)
			}
			if n := len(e.events(meta.EventRepoPush)); n != before || len(e.events(meta.EventPromotionSucceeded)) != 0 {
				t.Fatal("a refused promotion appended events")
			}
			state = "NORMAL"
			if err := e.db.Repositories().UpdateRepository(e.ctx, "mirror/node", nil, &state, nil, nil); err != nil {
				t.Fatal(err)
			}
			if _, err := e.db.Gates().Promote(e.ctx, promotionOf(c, nil)); err != nil || e.tagged("15-alpine") != c.Digest {
				t.Fatalf("promotion once the repository takes writes: %v", err)
			}
		})
	}
}

// TestPromoteRefusedWhenChecksChanged: a promotion carries the checks its
// evaluation read; a check changed, posted or of another status since
// refuses it (nothing moves, the candidate stays live); the same checks,
// or none asked for (an override), promote.
func TestPromoteRefusedWhenChecksChanged(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newGateEnv(t, dialect)
			c := e.candidateFor("15-alpine with checks")
			post := func(name, status string) {
				t.Helper()
				if err := e.db.Gates().PostCheck(e.ctx, "mirror/node", c.Digest, meta.Check{Name: name, Status: status, Actor: "ci"}); err != nil {
					t.Fatal(err)
				}
			}
			post("e2e", "pass")
			evaluated := map[string]string{"e2e": "pass"}
			post("e2e", "fail") // after the evaluation read it
			for _, checks := range []map[string]string{evaluated, {}, {"e2e": "pass", "perf": "pass"}} {
				if _, err := e.db.Gates().Promote(e.ctx, promotionOf(c, checks)); !errors.Is(err, meta.ErrChecksChanged) {
					t.Fatalf("promotion evaluated on %v, the checks being e2e=fail: %v", checks, err)
				}
			}
			if e.tagged("15-alpine") != "" || len(e.live("15-alpine")) != 1 {
				t.Fatal("a refused promotion moved the tag or decided the candidate")
			}
			post("e2e", "pass")
			post("perf", "pass")
			if _, err := e.db.Gates().Promote(e.ctx, promotionOf(c, evaluated)); !errors.Is(err, meta.ErrChecksChanged) {
				t.Fatalf("promotion evaluated before a check was posted: %v", err)
			}
			if _, err := e.db.Gates().Promote(e.ctx, promotionOf(c, map[string]string{"e2e": "pass", "perf": "pass"})); err != nil || e.tagged("15-alpine") != c.Digest {
				t.Fatalf("promotion on the checks as they are: %v", err)
			}
			// Nil checks (an override) are not compared.
			c2 := e.candidateFor("15-alpine overridden")
			if err := e.db.Gates().PostCheck(e.ctx, "mirror/node", c2.Digest, meta.Check{Name: "e2e", Status: "fail", Actor: "ci"}); err != nil {
				t.Fatal(err)
			}
			if _, err := e.db.Gates().Promote(e.ctx, promotionOf(c2, nil)); err != nil {
				t.Fatalf("override: %v", err)
			}
		})
	}
}

// TestPromoteOntoAnImmutableTag: a guarded tag an immutability policy
// covers since its candidate arrived is not moved: Promote answers
// *meta.ImmutableTagError and changes nothing, and a manual candidate for
// it is refused the same way.
func TestPromoteOntoAnImmutableTag(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newGateEnv(t, dialect)
			first := e.candidateFor("15-alpine v1")
			if _, err := e.db.Gates().Promote(e.ctx, promotionOf(first, nil)); err != nil {
				t.Fatal(err)
			}
			c := e.candidateFor("15-alpine v2")
			if _, err := e.db.Policies().CreateTagPolicy(e.ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "mirror", Repository: "mirror/node",
				TagPattern: "^15-", TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			var imm *meta.ImmutableTagError
			if _, err := e.db.Gates().Promote(e.ctx, promotionOf(c, nil)); !errors.As(err, &imm) || imm.Tag != "15-alpine" {
				t.Fatalf("promotion onto an immutable tag: %v", err)
			}
			if e.tagged("15-alpine") != first.Digest || len(e.live("15-alpine")) != 1 {
				t.Fatal("a refused promotion moved the tag or decided the candidate")
			}
			other := manifestOf("15-alpine v3, by digest")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: other})
			if _, err := e.db.Gates().ManualCandidate(e.ctx, "mirror/node", "15-alpine", other.Digest, "root"); !errors.As(err, &imm) {
				t.Fatalf("manual candidate for an immutable tag: %v", err)
			}
		})
	}
}
