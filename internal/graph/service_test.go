package graph_test

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// feed hands the outbox's new events to the service, then runs its due
// jobs, until nothing is left: the test plays dispatcher and worker.
type feed struct {
	e      *env
	svc    *graph.Service
	cursor int64
}

func (f *feed) run() {
	f.e.t.Helper()
	ctx := context.Background()
	for {
		evs, err := f.e.db.Outbox().EventsAfter(ctx, f.cursor, 100)
		if err != nil {
			f.e.t.Fatal(err)
		}
		for _, ev := range evs {
			if err := f.svc.OnEvent(ctx, ev); err != nil {
				f.e.t.Fatal(err)
			}
			f.cursor = ev.ID
		}
		j, ok, err := f.e.db.Jobs().ClaimJob(ctx, graph.Queue, "test", time.Minute)
		if err != nil {
			f.e.t.Fatal(err)
		}
		if !ok && len(evs) == 0 {
			return
		}
		if ok {
			if err := f.svc.Handle(ctx, j); err != nil {
				f.e.t.Fatal(err)
			}
			if err := f.e.db.Jobs().CompleteJob(ctx, j.ID, "test"); err != nil {
				f.e.t.Fatal(err)
			}
		}
	}
}

func (f *feed) fired() []map[string]any {
	f.e.t.Helper()
	evs, err := f.e.db.Outbox().EventsAfter(context.Background(), 0, 10000)
	if err != nil {
		f.e.t.Fatal(err)
	}
	var out []map[string]any
	for _, ev := range evs {
		if ev.Kind == meta.EventBaseImageUpdated {
			var d map[string]any
			json.Unmarshal(ev.Data, &d)
			d["_repository"] = ev.Repository
			out = append(out, d)
		}
	}
	return out
}

func newFeed(e *env, debounce time.Duration) *feed {
	svc := graph.New(e.x, e.db.Manifests(), e.db.Graph(), e.db.Scans(), e.db.Jobs(), graph.Options{Debounce: debounce})
	return &feed{e: e, svc: svc}
}

// TestBaseMoveFires: when the base tag moves, each image built on it fires
// once; an image on an unrelated base does not; a second level fires
// only once the level between is rebuilt; a replayed move fires nothing.
func TestBaseMoveFires(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect)
			f := newFeed(e, 0)
			base := image(t, nil, "linux/amd64", layer(t, "ubi 1.9-1", gzip.BestSpeed))
			e.push("mirror/ubi:1.9", base)
			// A public mirror: a private base of another namespace is not
			// named in the events (TestBaseMovedHidesPrivateBase).
			public := "public"
			if err := e.db.Repositories().UpdateRepository(context.Background(), "mirror/ubi", &public, nil, nil, nil); err != nil {
				t.Fatal(err)
			}
			other := image(t, nil, "linux/amd64", layer(t, "alpine", gzip.BestSpeed))
			e.push("mirror/alpine:3", other)
			f.run()
			runtime := image(t, base, "", layer(t, "jdk", gzip.BestSpeed))
			e.push("team/runtime:11", runtime)
			f.run()
			app := image(t, runtime, "", layer(t, "app", gzip.BestSpeed))
			e.push("team/app:v1", app)
			unrelated := image(t, other, "", layer(t, "tool", gzip.BestSpeed))
			e.push("team/tool:1", unrelated)
			f.run()
			if got := f.fired(); len(got) != 0 {
				t.Fatalf("fired before any move: %v", got)
			}
			// Upstream patches: 1.9 moves.
			patched := image(t, nil, "linux/amd64", layer(t, "ubi 1.9-2", gzip.BestSpeed))
			e.push("mirror/ubi:1.9", patched)
			f.run()
			got := f.fired()
			if len(got) != 1 || got[0]["_repository"] != "team/runtime" {
				t.Fatalf("after the base moved: %v", got)
			}
			base1, _ := got[0]["base"].(map[string]any)
			if base1["tag"] != "1.9" || base1["new_digest"] != string(digestOf(t, patched)) || base1["old_digest"] != string(digestOf(t, base)) {
				t.Fatalf("base of the event: %v", base1)
			}
			// The runtime is rebuilt on the patched base and pushed: now
			// the app fires.
			e.push("team/runtime:11", image(t, patched, "", layer(t, "jdk", gzip.BestSpeed)))
			f.run()
			got = f.fired()
			if len(got) != 2 || got[1]["_repository"] != "team/app" {
				t.Fatalf("after the runtime was rebuilt: %v", got)
			}
			// Moving 1.9 back and forth to digests already fired for adds
			// nothing new for what was rebuilt: the old runtime is no
			// longer tagged.
			e.push("mirror/ubi:1.9", base)
			e.push("mirror/ubi:1.9", patched)
			f.run()
			for _, ev := range f.fired()[2:] {
				if ev["_repository"] == "team/app" || ev["_repository"] == "team/tool" {
					t.Fatalf("fired for %v", ev)
				}
			}
		})
	}
}

// TestBaseMoveDebounce: a base tag that moves and moves back within the
// debounce window fires nothing; one that stays fires once.
func TestBaseMoveDebounce(t *testing.T) {
	e := newEnv(t, "sqlite")
	f := newFeed(e, 300*time.Millisecond)
	base := image(t, nil, "linux/amd64", layer(t, "base", gzip.BestSpeed))
	e.push("mirror/b:1", base)
	f.run()
	e.push("team/app:1", image(t, base, "", layer(t, "app", gzip.BestSpeed)))
	f.run()
	flap := image(t, nil, "linux/amd64", layer(t, "flap", gzip.BestSpeed))
	e.push("mirror/b:1", flap)
	e.push("mirror/b:1", base)
	f.run()
	time.Sleep(400 * time.Millisecond)
	f.run()
	if got := f.fired(); len(got) != 0 {
		t.Fatalf("a flap fired: %v", got)
	}
	e.push("mirror/b:1", flap)
	f.run()
	time.Sleep(400 * time.Millisecond)
	f.run()
	if got := f.fired(); len(got) != 1 {
		t.Fatalf("a move that stayed: %v", got)
	}
}

// TestNoStormWhenManyTagsMove: a base reached through 1,000 tags, all
// moved to a patched image in one push: each image built on it fires once.
func TestNoStormWhenManyTagsMove(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "sqlite")
	f := newFeed(e, 0)
	base := image(t, nil, "linux/amd64", layer(t, "base", gzip.BestSpeed))
	bd := e.push("mirror/b:0", base)
	patched := image(t, nil, "linux/amd64", layer(t, "patched", gzip.BestSpeed))
	pd := e.push("mirror/b:patched", patched)
	tags := make([]string, 1000)
	for i := range tags {
		tags[i] = fmt.Sprintf("t%d", i)
	}
	retag := func(d digest.Digest) {
		t.Helper()
		m, err := e.db.Manifests().GetManifest(ctx, "mirror/b", "", d, true)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "mirror/b", Manifest: m, Tag: tags[0], MoreTags: tags[1:]}); err != nil {
			t.Fatal(err)
		}
	}
	retag(bd)
	f.run()
	for i := range 3 {
		e.push(fmt.Sprintf("team/app%d:1", i), image(t, base, "", layer(t, fmt.Sprintf("app %d", i), gzip.BestSpeed)))
	}
	f.run()
	retag(pd)
	f.run()
	got := f.fired()
	if len(got) != 3 {
		t.Fatalf("%d base_image_updated for 3 images on a base reached through 1,000 moved tags", len(got))
	}
}

// TestIndexJobOneWrite: run by a job worker, the graph's index job writes
// an image's rows in the transaction that completes the job, so that a
// job costs a claim and one completion; the bases are recorded as when
// the indexer runs alone.
func TestIndexJobOneWrite(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect)
			ctx := context.Background()
			base := image(t, nil, "linux/amd64", layer(t, "os", gzip.BestSpeed))
			bd := e.push("mirror/base:1", base)
			app := image(t, base, "", layer(t, "app", gzip.BestSpeed))
			ad := e.push("team/app:1", app)
			svc := graph.New(e.x, e.db.Manifests(), e.db.Graph(), e.db.Scans(), e.db.Jobs(), graph.Options{})
			e.announce(svc)
			writes0, _, counted := e.db.WriterWait()
			w := jobs.New(e.db.Jobs(), graph.Queue, svc.Handle, jobs.Options{PollInterval: 10 * time.Millisecond})
			wctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); w.Run(wctx) }()
			deadline := time.Now().Add(20 * time.Second)
			for {
				a, _ := e.db.Graph().Indexed(ctx, "team/app", ad)
				b, _ := e.db.Graph().Indexed(ctx, "mirror/base", bd)
				f, err := e.db.Figures(ctx)
				if err != nil {
					t.Fatal(err)
				}
				q := f.Queues[graph.Queue]
				if a && b && q.Pending == 0 && q.Running == 0 {
					break
				}
				if time.Now().After(deadline) {
					t.Fatalf("not indexed after 20s: app %v, base %v, jobs %+v", a, b, q)
				}
				time.Sleep(10 * time.Millisecond)
			}
			stop()
			<-done
			e.expectBases("team/app", ad, want{"mirror/base", "1", graph.MethodLayers, bd, 1})
			if counted {
				// Two jobs: at most a claim and a completion each (a chain
				// claims the second in the first's completion), 4; written
				// on their own, the rows took a transaction more per job, 6.
				// One more is allowed for a sweep of the queue's held jobs.
				writes1, _, _ := e.db.WriterWait()
				n := writes1 - writes0
				t.Logf("%d write transactions", n)
				if n > 5 || n < 2 {
					t.Errorf("%d write transactions for two index jobs, want 2 to 4 (5 at most)", n)
				}
			}
		})
	}
}

// deletingManifests returns a manifest, then deletes its repository: the
// repository goes while the graph's job indexes the manifest.
type deletingManifests struct {
	graph.ManifestStore
	db *meta.DB
}

func (d deletingManifests) GetManifest(ctx context.Context, repo, tag string, dg digest.Digest, withContent bool) (meta.Manifest, error) {
	m, err := d.ManifestStore.GetManifest(ctx, repo, tag, dg, withContent)
	if err == nil {
		if derr := d.db.Repositories().DeleteRepository(ctx, repo, "test"); derr != nil {
			return m, derr
		}
	}
	return m, err
}

// TestIndexJobRepositoryDeleted: a repository deleted while the graph's
// job indexes one of its images ends the job at once (nothing to record:
// the repository's graph went with it), instead of failing the job's
// completion and holding the job, and its repository's next ones, until
// the lease runs out.
func TestIndexJobRepositoryDeleted(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect)
			ctx := context.Background()
			app := image(t, nil, "linux/amd64", layer(t, "deleted app", gzip.BestSpeed))
			e.push("team/gone:1", app)
			x := graph.NewIndexer(deletingManifests{e.db.Manifests(), e.db}, e.db.Graph(), e.driver, nil)
			svc := graph.New(x, e.db.Manifests(), e.db.Graph(), e.db.Scans(), e.db.Jobs(), graph.Options{})
			e.announce(svc)
			if f, err := e.db.Figures(ctx); err != nil || f.Queues[graph.Queue].Pending == 0 {
				t.Fatalf("no index job queued: %+v, %v", f.Queues[graph.Queue], err)
			}
			const lease = time.Minute
			w := jobs.New(e.db.Jobs(), graph.Queue, svc.Handle, jobs.Options{PollInterval: 10 * time.Millisecond, Lease: lease})
			wctx, stop := context.WithCancel(ctx)
			done := make(chan struct{})
			go func() { defer close(done); w.Run(wctx) }()
			defer func() { stop(); <-done }()
			deadline := time.Now().Add(lease / 3)
			for {
				f, err := e.db.Figures(ctx)
				if err != nil {
					t.Fatal(err)
				}
				q := f.Queues[graph.Queue]
				if q.Pending == 0 && q.Running == 0 {
					if q.Dead > 0 {
						t.Fatalf("index job dead-lettered: %+v", q)
					}
					return
				}
				if time.Now().After(deadline) {
					t.Fatalf("index job of a deleted repository not done after %s (its lease is %s): %+v", lease/3, lease, q)
				}
				time.Sleep(10 * time.Millisecond)
			}
		})
	}
}

// announce hands the events so far to the graph's service, which queues
// their index jobs.
func (e *env) announce(svc *graph.Service) {
	e.t.Helper()
	ctx := context.Background()
	evs, err := e.db.Outbox().EventsAfter(ctx, 0, 100)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, ev := range evs {
		if err := svc.OnEvent(ctx, ev); err != nil {
			e.t.Fatal(err)
		}
	}
}

// TestRetagIsNotIndexedAgain: a retag (the API's move of a tag to a
// stored manifest, a gate's promotion, a restore) stores nothing new, so
// the graph does not index the image again (which rewrote its bases and
// dropped those recorded through a tag that has moved since): its
// repo_push says new_manifest false, where the field used to be left out
// and read as new.
func TestRetagIsNotIndexedAgain(t *testing.T) {
	e := newEnv(t, "sqlite")
	ctx := context.Background()
	svc := graph.New(e.x, e.db.Manifests(), e.db.Graph(), e.db.Scans(), e.db.Jobs(), graph.Options{})
	d := e.push("team/app:1", image(t, nil, "linux/amd64", layer(t, "app", gzip.BestSpeed)))
	if err := e.db.Manifests().MoveTag(ctx, "team/app", "stable", d, "alice"); err != nil {
		t.Fatal(err)
	}
	evs, err := e.db.Outbox().EventsAfter(ctx, 0, 100)
	if err != nil {
		t.Fatal(err)
	}
	last := evs[len(evs)-1]
	if last.Kind != meta.EventRepoPush || !strings.Contains(string(last.Data), `"new_manifest":false`) {
		t.Fatalf("the retag's event: %s %s", last.Kind, last.Data)
	}
	js, err := svc.Jobs(ctx, last)
	if err != nil {
		t.Fatal(err)
	}
	for _, j := range js {
		if strings.HasPrefix(j.OrderingKey, "index|") {
			t.Fatalf("a retag queued an index job: %s", j.Payload)
		}
	}
	var push meta.Event
	for _, ev := range evs {
		if ev.Kind == meta.EventRepoPush {
			push = ev
			break
		}
	}
	first, err := svc.Jobs(ctx, push)
	if err != nil || len(first) != 1 || !strings.HasPrefix(first[0].OrderingKey, "index|") {
		t.Fatalf("the push's jobs: %+v %v", first, err)
	}
}

// TestRetagOntoAGuardedTagIsIndexed: a candidate made by moving a guarded
// tag onto a stored manifest (promotion_pending, new_manifest false) is
// indexed all the same: its gate waits until the graph has looked at it,
// and a manifest stored before the graph recorded everything it looks at
// has no record yet.
func TestRetagOntoAGuardedTagIsIndexed(t *testing.T) {
	e := newEnv(t, "sqlite")
	ctx := context.Background()
	svc := graph.New(e.x, e.db.Manifests(), e.db.Graph(), e.db.Scans(), e.db.Jobs(), graph.Options{})
	ev := meta.Event{Kind: meta.EventPromotionPending, Repository: "team/app",
		Data: json.RawMessage(`{"digest":"sha256:` + strings.Repeat("a", 64) + `","media_type":"application/vnd.oci.image.index.v1+json","tag":"15","candidate":1,"new_manifest":false}`)}
	js, err := svc.Jobs(ctx, ev)
	if err != nil || len(js) != 1 || js[0].OrderingKey != "index|team/app" {
		t.Fatalf("the retagged candidate's jobs: %+v %v", js, err)
	}
}
