package meta_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

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
			if _, err := db.Notifications().FanOutEvents(ctx, 100); err != nil {
				t.Fatal(err)
			}
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
