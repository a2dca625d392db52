package graph_test

import (
	"compress/gzip"
	"context"
	"database/sql"
	"encoding/json"
	"io"
	"log/slog"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// envOn is newEnv on a store the test opened itself.
func envOn(t *testing.T, db *meta.DB) *env {
	t.Helper()
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	srv := httptest.NewServer(registry.New(wire.RegistryStores(db), driver, registry.Options{Policy: policy, Logger: log}))
	t.Cleanup(srv.Close)
	return &env{t: t, db: db, host: strings.TrimPrefix(srv.URL, "http://"), x: graph.NewIndexer(db.Manifests(), db.Graph(), driver, log), driver: driver}
}

// pushImage pushes an image as push does, from any goroutine.
func (e *env) pushImage(repo string, img v1.Image) error {
	ref, err := name.ParseReference(e.host+"/"+repo, name.Insecure)
	if err != nil {
		return err
	}
	return remote.Write(ref, img)
}

// tagMoveWaits reports whether a transaction of the test's schema waits
// for a lock on a row of its tags (holding the row's tuple lock, waiting
// for the transaction that holds the row).
func tagMoveWaits(t *testing.T, raw *sql.DB) bool {
	t.Helper()
	var waits bool
	if err := raw.QueryRow(`SELECT EXISTS (SELECT 1 FROM pg_locks w JOIN pg_locks l ON l.pid = w.pid
		WHERE NOT w.granted AND l.granted AND l.locktype = 'tuple' AND l.relation = 'tags'::regclass)`).Scan(&waits); err != nil {
		t.Fatal(err)
	}
	return waits
}

// TestBaseMoveDuringIndexCommitFires (PostgreSQL): a base tag moved while
// the transaction recording an image built on it is open, after it read
// where the tag points, fires for the image once. The recording holds
// the tag (FOR SHARE): the move waits for it to commit, and its job then
// finds the image. Before, the move committed at once and its job ran
// while the image was not yet visible, and the recording, having read the
// old digest, caught up with nothing: neither fired, ever.
//
// The transaction is held open by a hook of the job's completion after
// the graph's own (jobs.OnComplete); the test tells the move waiting for
// the tag's row from its not waiting by PostgreSQL's lock table. SQLite
// has one writer: a move waits for any open write transaction.
func TestBaseMoveDuringIndexCommitFires(t *testing.T) {
	ctx := context.Background()
	dsn := metatest.DSN(t, "postgres")
	db, err := meta.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	raw, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { raw.Close() })
	e := envOn(t, db)
	f := newFeed(e, 0)
	base := image(t, nil, "linux/amd64", layer(t, "ubi 1", gzip.BestSpeed))
	bd := e.push("mirror/x:1", base)
	public := "public"
	if err := db.Repositories().UpdateRepository(ctx, "mirror/x", &public, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
	f.run()
	ad := e.push("team/app:v1", image(t, base, "", layer(t, "app", gzip.BestSpeed)))
	evs, err := db.Outbox().EventsAfter(ctx, f.cursor, 1000)
	if err != nil {
		t.Fatal(err)
	}
	f.handOut(evs, "team/app")

	// The application's index job, run by a worker, its completion held
	// open once the graph has written its rows and read the base tag.
	paused, release := make(chan struct{}), make(chan struct{})
	var pauseOnce, releaseOnce sync.Once
	unpause := func() { releaseOnce.Do(func() { close(release) }) }
	handler := func(ctx context.Context, j meta.Job) error {
		err := f.svc.Handle(ctx, j)
		var job graph.Job
		if err == nil && json.Unmarshal(j.Payload, &job) == nil && job.Repository == "team/app" && job.Tag == "" {
			jobs.OnComplete(ctx, func(context.Context, meta.Tx) error {
				pauseOnce.Do(func() { close(paused) })
				<-release
				return nil
			})
		}
		return err
	}
	w := jobs.New(db.Jobs(), graph.Queue, handler, jobs.Options{PollInterval: 5 * time.Millisecond})
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.Run(wctx) }()
	stop := func() { unpause(); cancel(); <-done }
	defer stop()
	select {
	case <-paused:
	case <-time.After(20 * time.Second):
		t.Fatal("team/app's index job did not complete")
	}

	// The base tag moves meanwhile.
	patched := image(t, nil, "linux/amd64", layer(t, "ubi 2", gzip.BestSpeed))
	pd := digestOf(t, patched)
	moved := make(chan error, 1)
	go func() { moved <- e.pushImage("mirror/x:1", patched) }()
	deadline := time.Now().Add(20 * time.Second)
wait:
	for !tagMoveWaits(t, raw) {
		if time.Now().After(deadline) {
			t.Fatal("the move neither finished nor waited for the tag")
		}
		select {
		case err := <-moved:
			if err != nil {
				t.Fatal(err)
			}
			// The move committed while the image's rows are not: its
			// job runs now.
			moved = nil
			f.run()
			break wait
		case <-time.After(5 * time.Millisecond):
		}
	}
	unpause()
	if moved != nil {
		if err := <-moved; err != nil {
			t.Fatal(err)
		}
	}
	f.run()
	graphIdle(t, db)
	stop()
	f.run()
	got := firedFor(f, "team/app")
	if len(got) != 1 {
		t.Fatalf("%d base_image_updated for team/app, whose base tag moved while it was recorded; want 1: %v", len(got), got)
	}
	if b, _ := got[0]["base"].(map[string]any); b["old_digest"] != bd.String() || b["new_digest"] != pd.String() || got[0]["digest"] != ad.String() {
		t.Fatalf("the event: %v", got[0])
	}
}
