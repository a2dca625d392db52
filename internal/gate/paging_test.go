package gate

import (
	"context"
	"database/sql"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
)

// pagingImage is an image manifest without layers, made distinct by an
// annotation.
func pagingImage(name string) meta.Manifest {
	b := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":%q,"size":2},"layers":[],"annotations":{"name":%q}}`,
		oci.MediaTypeImageManifest, digest.FromString("{}"), name)
	return meta.Manifest{Digest: digest.FromBytes(b), MediaType: oci.MediaTypeImageManifest, Content: b}
}

// TestOldLiveCandidatesAreNotStarved: a repository with more live
// candidates than one page of a gate job (1,000) still has its oldest
// ones evaluated again. A check posted for the oldest candidate promotes
// it (the gate_check event's job), and so does the job of any other
// change to the repository (a push, a scan) after a pass for another old
// one. Before, both jobs read only the 1,000 newest live candidates: a
// pass posted for an older one never promoted it.
func TestOldLiveCandidatesAreNotStarved(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			dsn := metatest.DSN(t, dialect)
			db, err := meta.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			const repo = "team/app"
			put := func(p meta.PutManifest) {
				t.Helper()
				p.Repository = repo
				if err := db.Manifests().PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			put(meta.PutManifest{Manifest: pagingImage("published"), Tag: "latest"})
			if err := db.Gates().PutGate(ctx, meta.Gate{Repository: repo, Tags: []string{"rel-*"},
				Config: json.RawMessage(`{"tags":["rel-*"],"required_checks":["e2e"]}`)}); err != nil {
				t.Fatal(err)
			}
			// The two oldest candidates, then 1,000 newer ones: a push of
			// a manifest to a guarded tag, and its candidate copied for 999
			// more tags in one statement (as a push to 1,000 tags would
			// make them, far faster).
			first, second, newer := pagingImage("first"), pagingImage("second"), pagingImage("newer")
			put(meta.PutManifest{Manifest: first, Tag: "rel-first"})
			put(meta.PutManifest{Manifest: second, Tag: "rel-second"})
			put(meta.PutManifest{Manifest: newer, Tag: "rel-newer"})
			driver := map[string]string{"sqlite": "sqlite", "postgres": "pgx"}[dialect]
			raw, err := sql.Open(driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			if _, err := raw.ExecContext(ctx, `WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 999)
				INSERT INTO gate_candidates (repository_id, tag, digest, state, actor, created_at)
				SELECT c.repository_id, c.tag || '-' || CAST(n.i AS TEXT), c.digest, c.state, c.actor, c.created_at
				FROM gate_candidates c, n WHERE c.tag = 'rel-newer' ORDER BY n.i`); err != nil {
				t.Fatal(err)
			}
			if cs, err := db.Gates().Candidates(ctx, repo, meta.CandidateQuery{Live: true, Limit: 2000}); err != nil || len(cs) != 1002 {
				t.Fatalf("live candidates: %d %v", len(cs), err)
			}
			evs, err := db.Outbox().EventsAfter(ctx, 0, 100000)
			if err != nil {
				t.Fatal(err)
			}
			head := evs[len(evs)-1].ID

			s := New(Stores{Gates: db.Gates(), Content: db.Manifests(), Blobs: db.Blobs()}, quiet)
			tagged := func(tag string) digest.Digest {
				t.Helper()
				m, err := db.Manifests().GetManifest(ctx, repo, tag, "", false)
				if err != nil {
					t.Fatalf("tag %s: %v", tag, err)
				}
				return m.Digest
			}
			state := func(tag string) meta.Candidate {
				t.Helper()
				cs, err := db.Gates().Candidates(ctx, repo, meta.CandidateQuery{Tag: tag, Limit: 1})
				if err != nil || len(cs) != 1 {
					t.Fatalf("candidate of %s: %v %v", tag, cs, err)
				}
				return cs[0]
			}

			// A check posted: its gate_check event's jobs promote the
			// candidate it passes.
			if err := db.Gates().PostCheck(ctx, repo, first.Digest, meta.Check{Name: "e2e", Status: StatusPass, Actor: "ci"}); err != nil {
				t.Fatal(err)
			}
			evs, err = db.Outbox().EventsAfter(ctx, head, 100)
			if err != nil {
				t.Fatal(err)
			}
			q := &fakeQueue{}
			if err := NewSubscriber(db.Gates(), q).Handle(ctx, meta.Tx{}, evs); err != nil {
				t.Fatal(err)
			}
			for _, j := range q.jobs {
				if err := s.Handle(ctx, j); err != nil {
					t.Fatal(err)
				}
			}
			if c := state("rel-first"); c.State != meta.CandidatePromoted || tagged("rel-first") != first.Digest {
				t.Fatalf("the oldest candidate, after a pass posted for it: %s %q", c.State, c.Reasons)
			}

			// A pass for the next oldest, then a job of the repository's
			// live candidates (what a push or a scan queues).
			if err := db.Gates().PostCheck(ctx, repo, second.Digest, meta.Check{Name: "e2e", Status: StatusPass, Actor: "ci"}); err != nil {
				t.Fatal(err)
			}
			job, _ := json.Marshal(Job{Repository: repo})
			if err := s.Handle(ctx, meta.Job{Queue: Queue, Payload: job}); err != nil {
				t.Fatal(err)
			}
			if c := state("rel-second"); c.State != meta.CandidatePromoted || tagged("rel-second") != second.Digest {
				t.Fatalf("an old candidate, after the repository's job: %s %q", c.State, c.Reasons)
			}
			// The newer ones were evaluated too: waiting for e2e.
			for _, tag := range []string{"rel-newer", "rel-newer-999"} {
				if c := state(tag); c.State != meta.CandidatePending || len(c.Reasons) != 1 || c.Reasons[0] != `waiting for check "e2e"` {
					t.Fatalf("candidate of %s: %s %q", tag, c.State, c.Reasons)
				}
			}
		})
	}
}
