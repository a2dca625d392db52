package meta_test

import (
	"context"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestWaitDurableHoldsUntilThePushIsFlushed: on an SQLite store with
// SyncFull, a push's commit is visible while its log flush runs, and the
// lax work the feed and the job queue do on it (numbering its event,
// queueing a delivery, claiming it) does not wait for that flush; a
// handler that would tell the outside world (a webhook) first calls
// WaitDurable, which returns only once the push is on disk.
func TestWaitDurableHoldsUntilThePushIsFlushed(t *testing.T) {
	ctx := context.Background()
	db, err := meta.Open(ctx, filepath.Join(t.TempDir(), "meta.db"), meta.SyncFull())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Outbox().Subscribe(ctx, "durable-test"); err != nil {
		t.Fatal(err)
	}
	cfg := meta.Blob{Digest: digest.FromString("cfg"), Size: 3}
	if _, err := db.Blobs().StoreBlob(ctx, "acme/app", cfg, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
		t.Fatal(err)
	}

	// From here every flush of the log waits for release: the disk is
	// slow, and the power may go before it finishes.
	var held atomic.Int64
	release := make(chan struct{})
	meta.SetLogSync(db, func(string) error {
		held.Add(1)
		<-release
		return nil
	})
	released := false
	defer func() {
		if !released {
			close(release)
		}
	}()

	pushed := make(chan error, 1)
	go func() {
		content := []byte(`{"schemaVersion":2}`)
		m := meta.Manifest{Digest: digest.FromBytes(content), MediaType: "application/vnd.oci.image.manifest.v1+json", Content: content}
		pushed <- db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: m,
			Refs: []meta.Ref{{Digest: cfg.Digest}}, Tag: "v1", Actor: "alice"})
	}()

	// The dispatcher numbers the push's event and the notification
	// subscriber queues its delivery, laxly, while the push's flush runs.
	queue := func(ctx context.Context, tx meta.Tx, evs []meta.Event) error {
		for _, e := range evs {
			if e.Kind != meta.EventRepoPush {
				continue
			}
			if _, err := db.Jobs().EnqueueIn(ctx, tx, meta.Job{Queue: meta.NotifyQueue, Payload: []byte(`{}`)}); err != nil {
				return err
			}
		}
		return nil
	}
	deadline := time.Now().Add(10 * time.Second)
	var job meta.Job
	for {
		if time.Now().After(deadline) {
			t.Fatal("the push's event never reached the feed's subscriber")
		}
		_, handled, errs, err := db.Outbox().SequenceConsumeAll(ctx, 100, []meta.Consumer{{Name: "durable-test", Fn: queue}})
		if err != nil || errs[0] != nil {
			t.Fatal(err, errs[0])
		}
		if handled[0] > 0 {
			j, ok, err := db.Jobs().ClaimJob(ctx, meta.NotifyQueue, "worker", time.Minute)
			if err != nil {
				t.Fatal(err)
			}
			if ok {
				job = j
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	select {
	case err := <-pushed:
		t.Fatalf("the push returned (%v) before its log flush finished", err)
	default:
	}
	if held.Load() == 0 {
		t.Fatal("the push's commit did not wait for a flush of the log")
	}

	// The delivery worker holds job; before it sends, it waits.
	waited := make(chan error, 1)
	go func() { waited <- db.WaitDurable(ctx) }()
	select {
	case err := <-waited:
		t.Fatalf("WaitDurable returned (%v) while the push's log flush was still running: job %d would announce a push a power cut can lose", err, job.ID)
	case <-time.After(300 * time.Millisecond):
	}
	close(release)
	released = true
	select {
	case err := <-waited:
		if err != nil {
			t.Fatalf("WaitDurable: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("WaitDurable did not return after the flush finished")
	}
	if err := <-pushed; err != nil {
		t.Fatalf("push: %v", err)
	}

	// A cancelled wait gives up with its context's error.
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := db.WaitDurable(cctx); err == nil {
		t.Error("WaitDurable with a cancelled context returned nil")
	}
}

// TestWaitDurableWithoutLogFlush: a store whose commits are durable when
// they are visible (PostgreSQL), or that flushes nothing (SQLite without
// SyncFull), has nothing to wait for.
func TestWaitDurableWithoutLogFlush(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			db := metatest.Open(t, dialect)
			start := time.Now()
			if err := db.WaitDurable(context.Background()); err != nil {
				t.Fatalf("WaitDurable: %v", err)
			}
			if d := time.Since(start); d > time.Second {
				t.Errorf("WaitDurable took %v with nothing to flush", d)
			}
		})
	}
}
