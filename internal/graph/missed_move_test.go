package graph_test

import (
	"compress/gzip"
	"context"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// handOut hands the graph the new events of repository repo only (and
// moves the cursor past every new event): the test orders the graph's
// jobs as the per-repository and per-tag job keys allow in production.
func (f *feed) handOut(evs []meta.Event, repo string) {
	f.e.t.Helper()
	for _, ev := range evs {
		if ev.Repository == repo {
			if err := f.svc.OnEvent(context.Background(), ev); err != nil {
				f.e.t.Fatal(err)
			}
		}
		f.cursor = max(f.cursor, ev.ID)
	}
}

// work runs the graph's due jobs with a job worker (as production does:
// an index job writes in its completion, jobs.OnComplete) until none is
// pending or running.
func (f *feed) work() {
	f.e.t.Helper()
	stop := runWorker(f.svc, f.e.db, 5*time.Millisecond)
	defer stop()
	graphIdle(f.e.t, f.e.db)
}

// runWorker starts a job worker running svc's jobs, polling every
// interval; the function it returns stops the worker and waits for it.
func runWorker(svc *graph.Service, db *meta.DB, interval time.Duration) (stop func()) {
	w := jobs.New(db.Jobs(), graph.Queue, svc.Handle, jobs.Options{PollInterval: interval})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	return func() { cancel(); <-done }
}

// graphIdle waits until no graph job is pending or running (at most 20
// s), failing t if one was dead-lettered.
func graphIdle(t *testing.T, db *meta.DB) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		fig, err := db.Figures(context.Background())
		if err != nil {
			t.Fatal(err)
		}
		q := fig.Queues[graph.Queue]
		if q.Pending == 0 && q.Running == 0 {
			if q.Dead > 0 {
				t.Fatalf("graph jobs dead-lettered: %+v", q)
			}
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("graph jobs not done after 20s: %+v", q)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestBaseMovedBeforeDependentIndexed: an application pushed on a base
// whose tag moves before the application is indexed (index jobs are
// ordered per repository, a tag's move jobs per tag: the move's job can
// run first, and finds nothing built on the tag) fires
// base_image_updated for that move once it is indexed, is shown stale,
// and fires when the tag moves again. Before, the move was lost for good:
// with a second tag (1.9-1) still on the old base, the base was recorded
// through 1.9-1 alone (not stale, and later moves of 1.9 fired nothing);
// without it, stale but never fired for.
func TestBaseMovedBeforeDependentIndexed(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		for _, tc := range []struct {
			name      string
			secondTag bool
			worker    bool
		}{{"two-tags/worker", true, true}, {"two-tags/direct", true, false}, {"one-tag/worker", false, true}} {
			t.Run(dialect+"/"+tc.name, func(t *testing.T) {
				ctx := context.Background()
				e := newEnv(t, dialect)
				f := newFeed(e, 0)
				run := f.run
				if tc.worker {
					run = func() {
						evs, err := e.db.Outbox().EventsAfter(ctx, f.cursor, 1000)
						if err != nil {
							t.Fatal(err)
						}
						for _, ev := range evs {
							if err := f.svc.OnEvent(ctx, ev); err != nil {
								t.Fatal(err)
							}
							f.cursor = ev.ID
						}
						f.work()
					}
				}
				base := image(t, nil, "linux/amd64", layer(t, "ubi 1.9-1", gzip.BestSpeed))
				bd := e.push("mirror/x:1.9", base)
				if tc.secondTag {
					if err := e.db.Manifests().MoveTag(ctx, "mirror/x", "1.9-1", bd, "mirror"); err != nil {
						t.Fatal(err)
					}
				}
				public := "public"
				if err := e.db.Repositories().UpdateRepository(ctx, "mirror/x", &public, nil, nil, nil); err != nil {
					t.Fatal(err)
				}
				run()
				ad := e.push("team/app:v1", image(t, base, "", layer(t, "app", gzip.BestSpeed)))
				patched := image(t, nil, "linux/amd64", layer(t, "ubi 1.9-2", gzip.BestSpeed))
				pd := e.push("mirror/x:1.9", patched)
				// The move's job runs before the application's index job.
				evs, err := e.db.Outbox().EventsAfter(ctx, f.cursor, 1000)
				if err != nil {
					t.Fatal(err)
				}
				f.handOut(evs, "mirror/x")
				run()
				if got := firedFor(f, "team/app"); len(got) != 0 {
					t.Fatalf("fired before team/app was indexed: %v", got)
				}
				f.handOut(evs, "team/app")
				run()
				got := firedFor(f, "team/app")
				if len(got) != 1 {
					t.Fatalf("%d base_image_updated for team/app, whose base tag moved before it was indexed; want 1: %v", len(got), got)
				}
				if b, _ := got[0]["base"].(map[string]any); b["repository"] != "mirror/x" || b["tag"] != "1.9" || b["old_digest"] != bd.String() || b["new_digest"] != pd.String() {
					t.Fatalf("the event's base: %v", got[0]["base"])
				}
				deps, err := e.db.Graph().Dependents(ctx, "mirror/x", bd, false, 10)
				if err != nil || len(deps) != 1 || deps[0].Digest != ad || !deps[0].Stale {
					t.Fatalf("dependents of the old base (team/app, stale): %+v %v", deps, err)
				}
				run()
				if got := firedFor(f, "team/app"); len(got) != 1 {
					t.Fatalf("fired again: %v", got)
				}
				// 1.9 moves again: team/app fires for it too.
				again := image(t, nil, "linux/amd64", layer(t, "ubi 1.9-3", gzip.BestSpeed))
				cd := e.push("mirror/x:1.9", again)
				run()
				got = firedFor(f, "team/app")
				if len(got) != 2 {
					t.Fatalf("%d base_image_updated for team/app after 1.9 moved again, want 2: %v", len(got), got)
				}
				if b, _ := got[1]["base"].(map[string]any); b["tag"] != "1.9" || b["old_digest"] != bd.String() || b["new_digest"] != cd.String() {
					t.Fatalf("the second event's base: %v", got[1]["base"])
				}
			})
		}
	}
}

// TestBaseMovedTwiceComparesFromBuiltOn: a base tag that moves A→B→C
// within the debounce window fires once for an image built on A, with
// old_digest A and what A→C fixed: the CVE that B fixed is reported.
// Without debounce, an image not rebuilt between the two moves hears the
// same of the second. Before, the event said old_digest B and compared
// B with C only: the CVE fixed by A→B was never reported.
func TestBaseMovedTwiceComparesFromBuiltOn(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		for _, debounce := range []time.Duration{300 * time.Millisecond, 0} {
			t.Run(dialect+"/"+debounce.String(), func(t *testing.T) {
				ctx := context.Background()
				e := newEnv(t, dialect)
				f := newFeed(e, debounce)
				scanned := func(d digest.Digest, vulns ...meta.ScanVuln) {
					t.Helper()
					if err := e.db.Scans().SaveScan(ctx, meta.ScanResult{Digest: d.String(), Status: meta.ScanScanned, Vulns: vulns}); err != nil {
						t.Fatal(err)
					}
				}
				wait := func() {
					f.run()
					if debounce > 0 {
						time.Sleep(debounce + 100*time.Millisecond)
						f.run()
					}
				}
				a := image(t, nil, "linux/amd64", layer(t, "base A", gzip.BestSpeed))
				ad := e.push("mirror/b:1", a)
				public := "public"
				if err := e.db.Repositories().UpdateRepository(ctx, "mirror/b", &public, nil, nil, nil); err != nil {
					t.Fatal(err)
				}
				scanned(ad, meta.ScanVuln{VulnID: "CVE-2026-0001", Package: "openssl@3.0.1", Severity: "High"})
				wait()
				e.push("team/app:1", image(t, a, "", layer(t, "app", gzip.BestSpeed)))
				wait()
				b := image(t, nil, "linux/amd64", layer(t, "base B", gzip.BestSpeed))
				c := image(t, nil, "linux/amd64", layer(t, "base C", gzip.BestSpeed))
				bd, cd := digestOf(t, b), digestOf(t, c)
				scanned(bd)
				scanned(cd, meta.ScanVuln{VulnID: "CVE-2026-0002", Package: "zlib@1.3", Severity: "Low"})
				e.push("mirror/b:1", b)
				if debounce == 0 {
					f.run()
				}
				e.push("mirror/b:1", c)
				wait()
				got := firedFor(f, "team/app")
				last := got[len(got)-1]
				if debounce > 0 && len(got) != 1 {
					t.Fatalf("%d base_image_updated for team/app, want 1: %v", len(got), got)
				}
				if debounce == 0 && len(got) != 2 {
					t.Fatalf("%d base_image_updated for team/app, want 2: %v", len(got), got)
				}
				if base, _ := last["base"].(map[string]any); base["old_digest"] != ad.String() || base["new_digest"] != cd.String() {
					t.Fatalf("the event's base: %v, want old_digest %s (what team/app is built on)", last["base"], ad)
				}
				fixed, _ := last["fixed_vulnerabilities"].([]any)
				added, _ := last["new_vulnerabilities"].([]any)
				if last["vulnerabilities_compared"] != true || len(fixed) != 1 || len(added) != 1 {
					t.Fatalf("vulnerabilities: fixed %v, new %v, compared %v; want CVE-2026-0001 fixed, CVE-2026-0002 new", fixed, added, last["vulnerabilities_compared"])
				}
				if v, _ := fixed[0].(map[string]any); v["id"] != "CVE-2026-0001" {
					t.Fatalf("fixed: %v", fixed)
				}
				if v, _ := added[0].(map[string]any); v["id"] != "CVE-2026-0002" {
					t.Fatalf("new: %v", added)
				}
			})
		}
	}
}
