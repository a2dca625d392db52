package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/notify"
)

// TestSlowEmailTrialHoldsTheOthers: while the trial delivery of an email
// notification disabled for a while waits on a slow relay (up to
// events.EmailTimeout), the notification's other deliveries are held, on
// a clock moved past the old hold (2 × events.DeliveryTimeout, shorter
// than EmailTimeout): a second trial went out then, and its failure
// doubled the disable again.
func TestSlowEmailTrialHoldsTheOthers(t *testing.T) {
	ctx := context.Background()
	relay, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer relay.Close()
	var conns atomic.Int32
	accepted := make(chan struct{}, 4)
	var open sync.WaitGroup
	var mu sync.Mutex
	var held []net.Conn
	open.Add(1)
	go func() { // accepts, never greets: a relay that hangs
		defer open.Done()
		for {
			c, err := relay.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			conns.Add(1)
			accepted <- struct{}{}
		}
	}()
	defer func() {
		relay.Close()
		open.Wait()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	}()

	db, svc := newService(t, notify.Options{SMTPAddr: relay.Addr().String(), SMTPFrom: "berth@example.com",
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	n, err := svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: "email",
		Config: map[string]any{"email": "ops@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	for range meta.MaxNotificationFailures {
		if _, err := db.Notifications().NotificationFailed(ctx, n.ID, meta.NotificationFailure{Reason: "relay down",
			DisableFor: notify.DefaultDisableFor, MaxDisableFor: notify.DefaultMaxDisableFor}); err != nil {
			t.Fatal(err)
		}
	}
	if fresh := mustNotification(t, db, n.ID); !fresh.Disabled() || fresh.DisabledUntilReset() {
		t.Fatalf("not disabled for a while: %+v", fresh)
	}
	push(t, db, "ns/app", "v1", 1)
	push(t, db, "ns/app", "v2", 2)
	evs, err := db.Outbox().EventsAfter(ctx, 0, 10)
	if err != nil || len(evs) < 2 {
		t.Fatalf("events: %v %v", evs, err)
	}
	job := func(id int64, e meta.Event) meta.Job {
		payload, _ := json.Marshal(meta.DeliveryJob{NotificationID: n.ID, EventID: e.ID})
		return meta.Job{ID: id, Queue: meta.NotifyQueue, Payload: payload, Attempts: 1, MaxAttempts: 10}
	}

	// The disable has run out: the first delivery is the trial.
	base := time.Now().Add(notify.DefaultDisableFor + time.Second)
	var offset atomic.Int64
	svc.SetClock(func() time.Time { return base.Add(time.Duration(offset.Load())) })
	trialCtx, stopTrial := context.WithCancel(ctx)
	trialDone := make(chan error, 1)
	go func() { trialDone <- svc.Deliver(trialCtx, job(1, evs[0])) }()
	select {
	case <-accepted:
	case err := <-trialDone:
		t.Fatalf("the trial ended before reaching the relay: %v", err)
	case <-time.After(10 * time.Second):
		t.Fatal("the trial did not reach the relay")
	}

	// Past 2 × DeliveryTimeout, the trial still well within EmailTimeout.
	offset.Store(int64(2*events.DeliveryTimeout + 5*time.Second))
	if 2*events.DeliveryTimeout+5*time.Second >= events.EmailTimeout {
		t.Fatal("the clock is not moved into the trial's email timeout")
	}
	secondCtx, stopSecond := context.WithTimeout(ctx, 2*time.Second)
	err = svc.Deliver(secondCtx, job(2, evs[1]))
	stopSecond()
	if got := conns.Load(); got != 1 {
		t.Errorf("%d connections to the relay while the trial runs, want 1", got)
	}
	if err == nil || !errors.Is(err, notify.ErrPaused) {
		t.Errorf("second delivery: %v, want held", err)
	}
	stopTrial()
	<-trialDone
}
