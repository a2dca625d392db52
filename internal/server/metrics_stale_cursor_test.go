package server_test

import (
	"database/sql"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestOutboxLagLeavesAbandonedSubscribers: registry_outbox_lag_events
// lists a change-feed subscriber while the retention of events still
// waits for it (seen within the longer of gc.retention.events and a
// week), and not once it is abandoned: its lag would only grow.
func TestOutboxLagLeavesAbandonedSubscribers(t *testing.T) {
	day := 24 * time.Hour
	for _, dialect := range metatest.Dialects() {
		for _, c := range []struct {
			name            string
			events          time.Duration // gc.retention.events
			listed, dropped time.Duration // how long ago the subscriber was last seen
		}{
			{"default retention", 30 * day, 8 * day, 31 * day},
			{"retention under a week", day, 6 * day, 8 * day},
		} {
			t.Run(dialect+"/"+c.name, func(t *testing.T) {
				srv, _, cfg := serveServer(t, dialect, func(cfg *config.Config) {
					cfg.Metrics.Addr = "127.0.0.1:0"
					cfg.GC.Retention.Events = c.events
				})
				driver := "sqlite"
				if dialect == "postgres" {
					driver = "pgx"
				}
				raw, err := sql.Open(driver, cfg.DatabaseURL())
				if err != nil {
					t.Fatal(err)
				}
				defer raw.Close()
				if dialect == "sqlite" {
					// The server writes too: wait for its lock rather than
					// fail with SQLITE_BUSY (one connection, so the pragma
					// holds for every statement).
					raw.SetMaxOpenConns(1)
					if _, err := raw.Exec("PRAGMA busy_timeout = 10000"); err != nil {
						t.Fatal(err)
					}
				}
				// Scanning is off: no process runs its subscriber, which was
				// last seen when it was on.
				lastSeen := func(ago time.Duration) {
					t.Helper()
					q := "UPDATE feed_cursors SET seen_at = ? WHERE name = ?"
					if dialect == "postgres" {
						q = "UPDATE feed_cursors SET seen_at = $1 WHERE name = $2"
					}
					res, err := raw.Exec(q, time.Now().Add(-ago).UnixMicro(), meta.SubscriberScan)
					if err != nil {
						t.Fatal(err)
					}
					if n, _ := res.RowsAffected(); n != 1 {
						t.Fatalf("no cursor for %s", meta.SubscriberScan)
					}
				}
				listed := func() bool {
					t.Helper()
					code, body := get(t, "http://"+metricsAddr(t, srv)+"/metrics", "")
					if code != 200 {
						t.Fatalf("scrape: %d %s", code, body)
					}
					_, ok := parseScrape(t, body).value("registry_outbox_lag_events", map[string]string{"subscriber": meta.SubscriberScan})
					return ok
				}
				lastSeen(c.listed)
				if !listed() {
					t.Errorf("a subscriber seen %v ago (gc.retention.events %v) is not listed: the retention still waits for it", c.listed, c.events)
				}
				lastSeen(c.dropped)
				if listed() {
					t.Errorf("a subscriber seen %v ago (gc.retention.events %v) is listed: the retention no longer waits for it", c.dropped, c.events)
				}
			})
		}
	}
}
