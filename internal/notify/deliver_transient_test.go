package notify_test

import (
	"context"
	"encoding/json"
	"errors"
	"testing"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/wire"
)

// failingOutbox fails every read of an event as a database would that
// cannot be reached.
type failingOutbox struct{}

func (failingOutbox) EventByID(context.Context, int64) (meta.Event, error) {
	return meta.Event{}, errors.New("get event: connection refused")
}

// TestDeliverEventReadFails: a delivery whose event cannot be read because
// the store failed is retried (its event is still there), while one whose
// event is gone is dead-lettered at once: no retry brings it back.
func TestDeliverEventReadFails(t *testing.T) {
	ctx := context.Background()
	db := metatest.Open(t, metatest.Dialects()[0])
	sealer, _ := auth.NewSealer(make([]byte, 32))
	guard, err := events.NewGuard([]string{"loopback"})
	if err != nil {
		t.Fatal(err)
	}
	stores := wire.NotifyStores(db)
	n, err := notify.New(stores, sealer, notify.Options{Guard: guard}).Create(ctx, meta.ScopeRegistry, "", "root",
		notify.Input{Event: "repo_push", Method: "webhook", Config: map[string]any{"url": "http://127.0.0.1:9/hook"}})
	if err != nil {
		t.Fatal(err)
	}
	payload, _ := json.Marshal(meta.DeliveryJob{NotificationID: n.ID, EventID: 12345})
	job := meta.Job{ID: 1, Queue: meta.NotifyQueue, Payload: payload, Attempts: 1, MaxAttempts: 10}

	err = notify.New(stores, sealer, notify.Options{Guard: guard}).Deliver(ctx, job)
	if err == nil || !jobs.IsPermanent(err) || !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("deliver an event that is gone: %v, want a permanent not-found error", err)
	}
	stores.Outbox = failingOutbox{}
	err = notify.New(stores, sealer, notify.Options{Guard: guard}).Deliver(ctx, job)
	if err == nil || jobs.IsPermanent(err) {
		t.Fatalf("deliver while the store fails: %v, want an error to retry", err)
	}
}
