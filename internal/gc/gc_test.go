package gc

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/feed"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
)

type env struct {
	db    *meta.DB
	store storage.Driver
	root  string
	c     *Collector
}

func newEnv(t *testing.T, dialect string, opts Options) *env {
	t.Helper()
	db := metatest.Open(t, dialect)
	root := t.TempDir()
	store, err := fs.New(root, fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	return &env{db: db, store: store, root: root, c: New(Stores{Uploads: db.Uploads(), Collector: db.Collector(), Retention: db.Collector(), Sweep: db.Collector()}, store, opts)}
}

// upload makes an upload session with n bytes written: in this version's
// layout (one file), or with legacy in an earlier version's (a directory
// holding data).
func (e *env) upload(t *testing.T, repo string, n int, legacy bool) string {
	t.Helper()
	ctx := context.Background()
	id := storage.NewUploadID()
	if legacy {
		id = uuid.NewString()
	}
	if err := e.db.Uploads().CreateUpload(ctx, meta.Upload{ID: id, Repository: repo}, 0); err != nil {
		t.Fatal(err)
	}
	e.leftover(t, id, n, time.Now())
	up, err := e.db.Uploads().ClaimUpload(ctx, repo, id, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.db.Uploads().AdvanceUpload(ctx, id, up.Claim, 0, int64(n), []byte{1}, nil); err != nil {
		t.Fatal(err)
	}
	return id
}

// leftover writes upload bytes with no session, last modified at mtime.
func (e *env) leftover(t *testing.T, id string, n int, mtime time.Time) {
	t.Helper()
	if err := e.store.PutContent(context.Background(), storage.UploadPath(id), make([]byte, n)); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{storage.UploadPath(id), storage.UploadRoot(id)} {
		if err := os.Chtimes(filepath.Join(e.root, filepath.FromSlash(p)), mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
}

func (e *env) exists(p string) bool {
	_, err := e.store.Stat(context.Background(), p)
	return err == nil
}

// TestUploadExpiry: sessions idle longer than the expiry go with their
// bytes; a session written recently, or claimed by a request, stays; bytes
// that no session owns go once they are older than the expiry.
func TestUploadExpiry(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, Options{UploadExpiry: time.Hour})
			idle := e.upload(t, "app", 1000, false)
			busy := e.upload(t, "app", 10, true)
			// Two hours later: both are idle, but one is being written.
			e.c.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
			if _, err := e.db.Uploads().ClaimUpload(ctx, "app", busy, time.Minute); err != nil {
				t.Fatal(err)
			}
			e.upload(t, "app", 10, true) // written now: idle too, two hours on
			// Leftovers in both layouts: an earlier version's directory
			// and this version's file.
			oldLeft, oldFlat, newLeft := uuid.NewString(), storage.NewUploadID(), storage.NewUploadID()
			e.leftover(t, oldLeft, 500, time.Now().Add(-3*time.Hour))
			e.leftover(t, oldFlat, 300, time.Now().Add(-3*time.Hour))
			e.leftover(t, newLeft, 7, time.Now().Add(3*time.Hour))

			dry, err := e.c.Pass(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			if !e.exists(storage.UploadRoot(idle)) || !e.exists(storage.UploadRoot(oldLeft)) {
				t.Fatal("a dry run deleted something")
			}
			rep, err := e.c.Pass(ctx, false)
			if err != nil {
				t.Fatal(err)
			}
			if dry.Uploads != rep.Uploads || dry.Leftovers != rep.Leftovers || dry.UploadBytes != rep.UploadBytes {
				t.Fatalf("dry run %+v differs from the pass %+v", dry, rep)
			}
			// idle and fresh are both idle two hours on; busy is claimed.
			if rep.Uploads != 2 || rep.UploadBytes != 1010 {
				t.Fatalf("expired %d uploads (%d bytes), want 2 (1010)", rep.Uploads, rep.UploadBytes)
			}
			if _, err := e.db.Uploads().GetUpload(ctx, "app", idle); err == nil || e.exists(storage.UploadRoot(idle)) {
				t.Fatal("the idle upload survived")
			}
			if _, err := e.db.Uploads().GetUpload(ctx, "app", busy); err != nil || !e.exists(storage.UploadRoot(busy)) {
				t.Fatalf("the claimed upload was expired: %v", err)
			}
			if rep.Leftovers != 2 || rep.LeftoverBytes != 800 || e.exists(storage.UploadRoot(oldLeft)) || e.exists(storage.UploadRoot(oldFlat)) ||
				!e.exists(storage.UploadRoot(newLeft)) {
				t.Fatalf("leftovers: %+v (old there: %v, new there: %v)", rep, e.exists(storage.UploadRoot(oldLeft)), e.exists(storage.UploadRoot(newLeft)))
			}
		})
	}
}

// TestUploadKeptWithinExpiry: a session written within the expiry stays.
func TestUploadKeptWithinExpiry(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "sqlite", Options{UploadExpiry: time.Hour})
	id := e.upload(t, "app", 10, false)
	rep, err := e.c.Pass(ctx, false)
	if err != nil || rep.Uploads != 0 || rep.Leftovers != 0 {
		t.Fatalf("pass: %+v %v", rep, err)
	}
	if _, err := e.db.Uploads().GetUpload(ctx, "app", id); err != nil || !e.exists(storage.UploadPath(id)) {
		t.Fatalf("a live upload went: %v", err)
	}
}

// TestPrune: dispatched events, finished jobs, attempts and audit entries
// past their retention go, except an event a held delivery still needs and
// events not dispatched yet (that the notification subscriber of the feed
// has not handled).
func TestPrune(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, Options{UploadExpiry: time.Hour})
			db := e.db
			// A notification on repo_push of "held": its delivery stays
			// pending (no worker runs here).
			if _, err := db.Notifications().CreateNotification(ctx, meta.Notification{UUID: uuid.NewString(), Scope: meta.ScopeRepository, Target: "held",
				Event: meta.EventRepoPush, Method: "webhook", Config: json.RawMessage(`{"url":"http://example.invalid/"}`)}); err != nil {
				t.Fatal(err)
			}
			push := func(repo string) {
				cfg := []byte(`{}` + repo)
				b := meta.Blob{Digest: digest.FromBytes(cfg), Size: int64(len(cfg))}
				if _, err := db.Blobs().StoreBlob(ctx, repo, b, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
					t.Fatal(err)
				}
				m := []byte(`{"schemaVersion":2,"config":{"digest":"` + b.Digest.String() + `"}}`)
				if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: repo, Tag: "v1", Refs: []meta.Ref{{Digest: b.Digest}},
					Manifest: meta.Manifest{Digest: digest.FromBytes(m), MediaType: "application/vnd.oci.image.manifest.v1+json", Content: m}}); err != nil {
					t.Fatal(err)
				}
			}
			push("held")
			push("other")
			fanOut := feed.New(db.Outbox(), []feed.Subscriber{notify.NewSubscriber(notify.Stores{Listeners: db.Notifications(), Jobs: db.Jobs()})}, feed.Options{})
			if err := fanOut.Drain(ctx); err != nil {
				t.Fatal(err)
			}
			push("late") // not dispatched
			if err := db.Access().AppendAudit(ctx, meta.AuditEntry{Kind: "test", Actor: "t"}); err != nil {
				t.Fatal(err)
			}
			var newest int64
			for range 2 {
				done, _ := db.Jobs().EnqueueJob(ctx, meta.Job{Queue: "test", Payload: json.RawMessage(`{}`), MaxAttempts: 1})
				j, ok, err := db.Jobs().ClaimJob(ctx, "test", "w", time.Minute)
				if err != nil || !ok || j.ID != done {
					t.Fatalf("claim: %v %v", ok, err)
				}
				if err := db.Jobs().CompleteJob(ctx, j.ID, "w"); err != nil {
					t.Fatal(err)
				}
				newest = done
			}
			before, _ := db.Outbox().EventsAfter(ctx, 0, 1000)
			time.Sleep(2 * time.Millisecond)
			r := meta.Retention{Events: time.Microsecond, DoneJobs: time.Microsecond, DeadJobs: time.Microsecond, Attempts: time.Microsecond, Audit: time.Microsecond}
			dry, err := db.Collector().Prune(ctx, r, true)
			if err != nil {
				t.Fatal(err)
			}
			got, err := db.Collector().Prune(ctx, r, false)
			if err != nil {
				t.Fatal(err)
			}
			if dry != got {
				t.Fatalf("dry run %+v, pass %+v", dry, got)
			}
			after, _ := db.Outbox().EventsAfter(ctx, 0, 1000)
			left := map[string]int{}
			for _, ev := range after {
				left[ev.Repository]++
			}
			// held: its repo_push is needed by the pending delivery (its
			// repo_created is not); late: nothing dispatched; other: all gone.
			if left["held"] != 1 || left["other"] != 0 || left["late"] != 2 {
				t.Fatalf("events left %v (of %d), pruned %+v", left, len(before), got)
			}
			if got.Events != int64(len(before)-len(after)) || got.Jobs != 1 || got.Audit < 1 {
				t.Fatalf("pruned %+v", got)
			}
			// The newest job of a queue stays (schedulers read it).
			if jobs, _ := db.Jobs().Jobs(ctx, "test", "", 10); len(jobs) != 1 || jobs[0].ID != newest {
				t.Fatalf("done jobs left: %+v, want only %d", jobs, newest)
			}
			if jobs, _ := db.Jobs().Jobs(ctx, meta.NotifyQueue, "", 10); len(jobs) != 1 {
				t.Fatalf("the pending delivery went: %+v", jobs)
			}
		})
	}
}

// vanishing lists an upload's file that is gone by the time it is looked
// at: an upload that finished between the collector's listing and its
// look at the entry.
type vanishing struct {
	storage.Driver
	dir, name string
}

func (v vanishing) List(ctx context.Context, p string) ([]string, error) {
	out, err := v.Driver.List(ctx, p)
	if err == nil && p == v.dir {
		out = append(out, v.dir+"/"+v.name)
	}
	return out, err
}

// warnings counts the records at level WARN or above.
type warnings struct {
	slog.Handler
	n *atomic.Int32
}

func (w warnings) Handle(ctx context.Context, r slog.Record) error {
	if r.Level >= slog.LevelWarn {
		w.n.Add(1)
	}
	return nil
}

// TestLeftoverGoneMeanwhile: an upload's file that goes between the
// collector's listing and its look at it (the upload finished) is skipped
// quietly; the pass goes on and removes the real leftovers.
func TestLeftoverGoneMeanwhile(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, metatest.Dialects()[0], Options{UploadExpiry: time.Hour})
	old := storage.NewUploadID()
	e.leftover(t, old, 100, time.Now().Add(-3*time.Hour))
	gone := storage.NewUploadID()
	dir := path.Dir(storage.UploadPath(old))
	gone = gone[:len(gone)-2] + old[len(old)-2:] // in the same directory
	var n atomic.Int32
	c := New(Stores{Uploads: e.db.Uploads(), Collector: e.db.Collector(), Retention: e.db.Collector()},
		vanishing{e.store, dir, gone}, Options{UploadExpiry: time.Hour, Logger: slog.New(warnings{slog.NewTextHandler(io.Discard, nil), &n})})
	rep, err := c.Pass(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Leftovers != 1 || e.exists(storage.UploadRoot(old)) {
		t.Fatalf("leftovers %+v; the old one still there: %v", rep, e.exists(storage.UploadRoot(old)))
	}
	if n.Load() != 0 {
		t.Fatalf("%d warnings for an upload that finished while the pass ran", n.Load())
	}
}
