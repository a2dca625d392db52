package meta_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestScanLostOnItsLastAttemptFails: a scan whose worker dies on its last
// attempt (the process killed, out of memory) is dead-lettered by the
// next claim, which never runs the scanner's own failure handling; the
// scan is failed in that claim, not left queued for ever (clients, `berth
// vulns --wait` and gates waited on it).
func TestScanLostOnItsLastAttemptFails(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			const d = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
			if err := db.Scans().EnqueueScan(ctx, "acme/app", d); err != nil {
				t.Fatal(err)
			}
			for attempt := 1; attempt <= meta.DefaultJobMaxAttempts; attempt++ {
				j, ok, err := db.Jobs().ClaimJob(ctx, meta.ScanQueue, "crashing", time.Millisecond)
				if err != nil || !ok || j.Attempts != attempt {
					t.Fatalf("attempt %d: %+v %v %v", attempt, j, ok, err)
				}
				time.Sleep(3 * time.Millisecond) // the worker dies: its lease runs out
			}
			if j, ok, err := db.Jobs().ClaimJob(ctx, meta.ScanQueue, "rescuer", time.Minute); err != nil || ok {
				t.Fatalf("the lost job was claimed again: %+v %v %v", j, ok, err)
			}
			st, err := db.Scans().ManifestScan(ctx, d)
			if err != nil {
				t.Fatal(err)
			}
			if st.Status != meta.ScanFailed || !strings.Contains(st.Reason, "did not finish") {
				t.Fatalf("scan %s (%q), want failed", st.Status, st.Reason)
			}
		})
	}
}

// TestFirstScanQueuedOnce: requests that find a manifest never scanned at
// once (anonymous GETs of a public index's security) queue one scan job,
// not one each (each job would announce its result again).
func TestFirstScanQueuedOnce(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			const d = "sha256:1123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
			var fns []func()
			for range 5 {
				fns = append(fns, func() {
					if err := db.Scans().QueueFirstScan(ctx, "acme/app", d); err != nil {
						t.Error(err)
					}
				})
			}
			together(fns...)
			jobs, err := db.Jobs().Jobs(ctx, meta.ScanQueue, meta.JobPending, 0)
			if err != nil || len(jobs) != 1 {
				t.Fatalf("%d scan jobs queued (%v), want 1", len(jobs), err)
			}
		})
	}
}
