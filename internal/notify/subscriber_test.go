package notify_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/berth-dev/berth/internal/feed"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/wire"
)

// fanOut hands every event of the feed to the notification subscriber.
func fanOut(t *testing.T, db *meta.DB) {
	t.Helper()
	d := feed.New(db.Outbox(), []feed.Subscriber{notify.NewSubscriber(wire.NotifyStores(db))}, feed.Options{})
	if err := d.Drain(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestVulnerabilityLevelFilter applies Quay's rule at fan-out: a
// vulnerability_found notification with level L hears a vulnerability
// whose priority index (0 Critical .. 5 Unknown) is at most L.
func TestVulnerabilityLevelFilter(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			levels := map[string]string{"high": `{"level":1}`, "high-string": `{"level":"1"}`, "by-name": `{"level":"Medium"}`, "all": `{}`}
			ids := map[int64]string{}
			for title, cfg := range levels {
				n, err := db.Notifications().CreateNotification(ctx, meta.Notification{UUID: "uuid-" + title, Scope: "registry", Event: meta.EventVulnerabilityFound,
					Method: "webhook", Title: title, Config: json.RawMessage(`{"url":"https://example.com"}`), EventConfig: json.RawMessage(cfg)})
				if err != nil {
					t.Fatal(err)
				}
				ids[n.ID] = title
			}
			var evs []meta.Event
			for _, p := range []string{"Critical", "High", "Medium", "Low", "Unknown"} {
				evs = append(evs, meta.Event{Kind: meta.EventVulnerabilityFound, Repository: "acme/app", Actor: "test",
					Data: json.RawMessage(fmt.Sprintf(`{"vulnerability":{"id":"V-%s","priority":%q}}`, p, p))})
			}
			if err := db.Scans().AppendEvents(ctx, evs); err != nil {
				t.Fatal(err)
			}
			fanOut(t, db)
			jobs, err := db.Jobs().Jobs(ctx, meta.NotifyQueue, "", 100)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for _, j := range jobs {
				var d meta.DeliveryJob
				json.Unmarshal(j.Payload, &d)
				got[ids[d.NotificationID]]++
			}
			want := map[string]int{"high": 2, "high-string": 2, "by-name": 3, "all": 5}
			if fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("deliveries per notification: %v, want %v", got, want)
			}
		})
	}
}
