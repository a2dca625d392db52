package graph_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/gate"
	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// gated is a repository's gate over the graph: the gate service reads the
// bases the graph's jobs record, and the gate's feed subscriber turns the
// graph's events into its evaluations.
type gated struct {
	e     *env
	f     *feed
	gates *gate.Service
	seen  int64 // the gate subscriber's cursor
}

func newGated(t *testing.T, e *env, f *feed, repo, config string) *gated {
	t.Helper()
	if err := e.db.Gates().PutGate(context.Background(), meta.Gate{Repository: repo, Tags: []string{"prod"}, Config: json.RawMessage(config)}); err != nil {
		t.Fatal(err)
	}
	st := gate.Stores{Gates: e.db.Gates(), Content: e.db.Manifests(), Blobs: e.db.Blobs(), Storage: e.driver, Bases: e.db.Graph(), Registry: "reg.example"}
	g := &gated{e: e, f: f, gates: gate.New(st, slog.New(slog.DiscardHandler))}
	g.seen = g.head()
	return g
}

func (g *gated) head() int64 {
	evs, err := g.e.db.Outbox().EventsAfter(context.Background(), 0, 100000)
	if err != nil {
		g.e.t.Fatal(err)
	}
	if len(evs) == 0 {
		return 0
	}
	return evs[len(evs)-1].ID
}

// candidate is the newest candidate of repo:prod.
func (g *gated) candidate(repo string) meta.Candidate {
	g.e.t.Helper()
	cs, err := g.e.db.Gates().Candidates(context.Background(), repo, meta.CandidateQuery{Tag: "prod", Limit: 1})
	if err != nil || len(cs) == 0 {
		g.e.t.Fatalf("candidates of %s: %v %v", repo, cs, err)
	}
	return cs[0]
}

// evaluate evaluates a candidate as a job of the gate's queue does.
func (g *gated) evaluate(id int64) gate.Evaluation {
	g.e.t.Helper()
	ev, err := g.gates.Evaluate(context.Background(), id)
	if err != nil {
		g.e.t.Fatal(err)
	}
	return ev
}

// subscriber hands the events since the last call to the gate's feed
// subscriber and runs the jobs it queues: what the server does.
func (g *gated) subscriber() {
	g.e.t.Helper()
	ctx := context.Background()
	evs, err := g.e.db.Outbox().EventsAfter(ctx, g.seen, 100000)
	if err != nil {
		g.e.t.Fatal(err)
	}
	if len(evs) > 0 {
		g.seen = evs[len(evs)-1].ID
	}
	q := &jobList{}
	if err := gate.NewSubscriber(g.e.db.Gates(), q).Handle(ctx, meta.Tx{}, evs); err != nil {
		g.e.t.Fatal(err)
	}
	for _, j := range q.jobs {
		if err := g.gates.Handle(ctx, j); err != nil {
			g.e.t.Fatal(err)
		}
	}
}

type jobList struct{ jobs []meta.Job }

func (q *jobList) EnqueueIn(_ context.Context, _ meta.Tx, j meta.Job) (int64, error) {
	q.jobs = append(q.jobs, j)
	return int64(len(q.jobs)), nil
}

// runUntil runs the graph's events and jobs until the job indexing d is
// claimed: it returns that job, not run.
func (f *feed) runUntil(d digest.Digest) meta.Job {
	f.e.t.Helper()
	ctx := context.Background()
	evs, err := f.e.db.Outbox().EventsAfter(ctx, f.cursor, 100000)
	if err != nil {
		f.e.t.Fatal(err)
	}
	for _, ev := range evs {
		if err := f.svc.OnEvent(ctx, ev); err != nil {
			f.e.t.Fatal(err)
		}
		f.cursor = ev.ID
	}
	for {
		j, ok, err := f.e.db.Jobs().ClaimJob(ctx, graph.Queue, "test", time.Minute)
		if err != nil || !ok {
			f.e.t.Fatalf("no job indexes %s: %v", d, err)
		}
		var job graph.Job
		if err := json.Unmarshal(j.Payload, &job); err != nil {
			f.e.t.Fatal(err)
		}
		if job.Kind == "index" && job.Digest == d {
			return j
		}
		if err := f.svc.Handle(ctx, j); err != nil {
			f.e.t.Fatal(err)
		}
		if err := f.e.db.Jobs().CompleteJob(ctx, j.ID, "test"); err != nil {
			f.e.t.Fatal(err)
		}
	}
}

func waitsForTheGraph(t *testing.T, ev gate.Evaluation) {
	t.Helper()
	if ev.State != meta.CandidatePending || len(ev.Reasons) != 1 || ev.Reasons[0] != "waiting for the base-image graph" || ev.Checks[gate.CheckBase] != "pending" {
		t.Fatalf("before the graph indexed the candidate: %s %q, checks %v", ev.State, ev.Reasons, ev.Checks)
	}
}

// TestGateWaitsForTheGraph: a gate that reads the base (berth/base
// required, or a policy naming base) waits until the graph has indexed
// the candidate, and the graph's graph_indexed event evaluates it again.
// Before, the gate and the graph ran apart: evaluated first, a candidate
// built on a base that had moved on passed berth/base (nothing was known
// of its base) and was promoted. A candidate the graph cannot index (an
// image without layers) is decided too once the graph has looked at it,
// and an index waits for its own job, not only its platforms'.
func TestGateWaitsForTheGraph(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect)
			f := newFeed(e, 0)
			v1img := image(t, nil, "linux/amd64", layer(t, "os 1", gzip.BestSpeed))
			e.push("team/base:1", v1img)
			e.push("team/app:scratch", image(t, nil, "linux/amd64", layer(t, "scratch", gzip.BestSpeed)))
			f.run()
			g := newGated(t, e, f, "team/app", `{"tags":["prod"],"required_checks":["berth/base"]}`)
			// The base moves on: an application built on its first version
			// is stale.
			e.push("team/base:1", image(t, nil, "linux/amd64", layer(t, "os 2", gzip.BestSpeed)))
			f.run()
			g.subscriber()

			e.push("team/app:prod", image(t, v1img, "", layer(t, "app", gzip.BestSpeed)))
			c := g.candidate("team/app")
			waitsForTheGraph(t, g.evaluate(c.ID))
			g.subscriber() // its promotion_pending: still waiting
			if c = g.candidate("team/app"); c.State != meta.CandidatePending {
				t.Fatalf("candidate %s %q before the graph ran", c.State, c.Reasons)
			}
			f.run()
			g.subscriber() // graph_indexed
			if c = g.candidate("team/app"); c.State != meta.CandidateBlocked || len(c.Reasons) != 1 || !strings.HasPrefix(c.Reasons[0], `check "berth/base" failed`) {
				t.Fatalf("after the graph indexed it: %s %q", c.State, c.Reasons)
			}

			// An image the graph does not index: decided once it looked.
			e.push("team/app:prod", image(t, nil, "linux/amd64"))
			c = g.candidate("team/app")
			waitsForTheGraph(t, g.evaluate(c.ID))
			f.run()
			g.subscriber()
			if c = g.candidate("team/app"); c.State != meta.CandidatePromoted {
				t.Fatalf("an image without layers, after the graph looked at it: %s %q", c.State, c.Reasons)
			}

			// An index: its platforms are indexed on their own first; the
			// gate waits for the index's own job, which may name the base.
			app := image(t, v1img, "", layer(t, "app 2", gzip.BestSpeed))
			idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
				mutate.IndexAddendum{Add: app, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}})
			id := e.push("team/app:prod", idx)
			held := f.runUntil(id)
			if ok, err := e.db.Graph().Indexed(ctx, "team/app", digestOf(t, app)); err != nil || !ok {
				t.Fatalf("the platform was not indexed on its own: %v", err)
			}
			c = g.candidate("team/app")
			waitsForTheGraph(t, g.evaluate(c.ID))
			if err := f.svc.Handle(ctx, held); err != nil {
				t.Fatal(err)
			}
			if err := e.db.Jobs().CompleteJob(ctx, held.ID, "test"); err != nil {
				t.Fatal(err)
			}
			f.run()
			g.subscriber()
			if c = g.candidate("team/app"); c.State != meta.CandidateBlocked || len(c.Reasons) != 1 || !strings.HasPrefix(c.Reasons[0], `check "berth/base" failed`) {
				t.Fatalf("the index, after the graph indexed it: %s %q", c.State, c.Reasons)
			}
		})
	}
}

// TestGateWaitsForTheGraphOnlyWhenItReadsTheBase: a gate that neither
// requires berth/base nor names base in its policy decides at once.
func TestGateWaitsForTheGraphOnlyWhenItReadsTheBase(t *testing.T) {
	e := newEnv(t, "sqlite")
	f := newFeed(e, 0)
	e.push("team/app:scratch", image(t, nil, "linux/amd64", layer(t, "scratch", gzip.BestSpeed)))
	f.run()
	g := newGated(t, e, f, "team/app", `{"tags":["prod"],"policy":"tag == \"prod\""}`)
	e.push("team/app:prod", image(t, nil, "linux/amd64", layer(t, "app", gzip.BestSpeed)))
	c := g.candidate("team/app")
	if ev := g.evaluate(c.ID); ev.State != meta.CandidatePromoted {
		t.Fatalf("%s %q", ev.State, ev.Reasons)
	}
}

// TestPolicyCannotReadAPrivateBaseOfAnotherNamespace: a policy reads the
// base's reference as the evaluation shows it: a base in another
// tenant's private repository is not named, so neither a result nor an
// error of the policy can carry its name into the candidate's reasons,
// the API and the promotion_blocked event. Before, base.reference was
// the full name, and `{"x": true}[base.reference]` failed with an error
// naming it.
func TestPolicyCannotReadAPrivateBaseOfAnotherNamespace(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect)
			f := newFeed(e, 0)
			secret := image(t, nil, "linux/amd64", layer(t, "secret os", gzip.BestSpeed))
			e.push("secret/ubuntu:22.04", secret) // private: the default
			e.push("team/app:scratch", image(t, nil, "linux/amd64", layer(t, "scratch", gzip.BestSpeed)))
			f.run()
			g := newGated(t, e, f, "team/app", `{"tags":["prod"],"policy":"{\"x\": true}[base.reference] && base.known"}`)
			e.push("team/app:prod", image(t, secret, "", layer(t, "app", gzip.BestSpeed)))
			f.run()
			g.subscriber()
			c := g.candidate("team/app")
			if c.State != meta.CandidateBlocked || len(c.Reasons) == 0 || !strings.HasPrefix(c.Reasons[0], "policy error:") {
				t.Fatalf("candidate %s %q", c.State, c.Reasons)
			}
			if strings.Contains(strings.Join(c.Reasons, "\n"), "secret/ubuntu") || strings.Contains(string(c.Decision), "secret/ubuntu") {
				t.Fatalf("the candidate's reasons name the private base: %q %s", c.Reasons, c.Decision)
			}
			evs, err := e.db.Outbox().EventsAfter(ctx, 0, 100000)
			if err != nil {
				t.Fatal(err)
			}
			for _, ev := range evs {
				if ev.Repository == "team/app" && strings.Contains(string(ev.Data), "secret/ubuntu") {
					t.Fatalf("%s of team/app names the private base: %s", ev.Kind, ev.Data)
				}
			}
			// The base is known, without its name.
			g2 := newGated(t, e, f, "team/app", `{"tags":["prod"],"policy":"base.known && base.reference == \"\" && base.digest != \"\""}`)
			if ev := g2.evaluate(c.ID); ev.State != meta.CandidatePromoted {
				t.Fatalf("%s %q", ev.State, ev.Reasons)
			}
		})
	}
}
