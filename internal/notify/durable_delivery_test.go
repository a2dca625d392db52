package notify_test

import (
	"context"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/feed"
	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/wire"
)

// slowDisk stands in for a store whose log flush is still running: its
// WaitDurable returns only once the test releases it.
type slowDisk struct {
	release chan struct{}
	waits   atomic.Int64
}

func (d *slowDisk) WaitDurable(ctx context.Context) error {
	d.waits.Add(1)
	select {
	case <-d.release:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// TestDeliveryWaitsForDurability: a push's commit is visible (and its
// event numbered, its delivery queued and claimed, all laxly) before the
// flush that makes it survive a power cut has finished; the webhook goes
// out only once the store says everything committed so far is on disk,
// so a receiver never hears of a push a power cut then erases.
func TestDeliveryWaitsForDurability(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := metatest.Open(t, metatest.Dialects()[0])
	rcv := newReceiver(t)
	disk := &slowDisk{release: make(chan struct{})}
	released := false
	defer func() {
		if !released {
			close(disk.release)
		}
	}()
	stores := wire.NotifyStores(db)
	stores.Durable = disk
	key, _ := auth.LoadOrCreateKey("", t.TempDir()+"/k")
	sealer, _ := auth.NewSealer(key)
	guard, err := events.NewGuard([]string{"loopback"})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := notify.New(stores, sealer, notify.Options{Guard: guard, Logger: log,
		Server: events.Server{Host: "registry.example:5000", Scheme: "https"}})
	if _, err := svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: "webhook",
		Config: map[string]any{"url": rcv.srv.URL + "/hook"}}); err != nil {
		t.Fatal(err)
	}
	w := jobs.New(db.Jobs(), meta.NotifyQueue, svc.Deliver, jobs.Options{Concurrency: 2, Lease: 30 * time.Second,
		PollInterval: 20 * time.Millisecond, Logger: log})
	go w.Run(ctx)
	d := feed.New(db.Outbox(), []feed.Subscriber{notify.NewSubscriber(stores)}, feed.Options{Poll: 20 * time.Millisecond, Logger: log})
	go d.Run(ctx)

	push(t, db, "acme/app", "v1", 0)
	attempts := func() int {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return rcv.attempts
	}
	waitFor(t, "the delivery to be claimed", 10*time.Second, func() bool { return disk.waits.Load() > 0 || attempts() > 0 })
	time.Sleep(300 * time.Millisecond) // time enough for a POST to arrive
	early := attempts()
	if early != 0 {
		t.Fatalf("the receiver got %d requests before the push was on disk", early)
	}
	close(disk.release)
	released = true
	waitFor(t, "the delivery once the push is on disk", 10*time.Second, func() bool {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return rcv.attempts == 1 && len(rcv.order["acme/app"]) == 1
	})
}
