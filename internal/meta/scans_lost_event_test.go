package meta_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestScanLostOnItsLastAttemptIsAnnounced: a scan whose worker dies on
// its last attempt is failed by the claim that dead-letters it, and that
// claim announces it as the scanner would have: manifest_scanned, status
// failed, with the reason and the manifest's tags, in the repository of
// the scan. Webhook receivers hear of it, and gates waiting for the scan
// are evaluated again.
func TestScanLostOnItsLastAttemptIsAnnounced(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			m := manifestOf("lost scan")
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: m, Tag: "1.0", MoreTags: []string{"latest"}}); err != nil {
				t.Fatal(err)
			}
			d := m.Digest.String()
			if err := db.Scans().EnqueueScan(ctx, "acme/app", d); err != nil {
				t.Fatal(err)
			}
			for attempt := 1; attempt <= meta.DefaultJobMaxAttempts; attempt++ {
				if _, ok, err := db.Jobs().ClaimJob(ctx, meta.ScanQueue, "crashing", time.Millisecond); err != nil || !ok {
					t.Fatalf("attempt %d: %v %v", attempt, ok, err)
				}
				time.Sleep(3 * time.Millisecond) // the worker dies: its lease runs out
			}
			if _, ok, err := db.Jobs().ClaimJob(ctx, meta.ScanQueue, "rescuer", time.Minute); err != nil || ok {
				t.Fatalf("the lost job was claimed again: %v %v", ok, err)
			}
			if st, err := db.Scans().ManifestScan(ctx, d); err != nil || st.Status != meta.ScanFailed {
				t.Fatalf("scan %+v, %v; want failed", st, err)
			}
			evs, err := db.Outbox().EventsAfter(ctx, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			var scanned []meta.Event
			for _, e := range evs {
				if e.Kind == meta.EventManifestScanned {
					scanned = append(scanned, e)
				}
			}
			if len(scanned) != 1 {
				t.Fatalf("%d manifest_scanned events after the lost scan failed, want 1", len(scanned))
			}
			var data struct {
				Digest, Status, Reason string
				Tags                   []string
			}
			if err := json.Unmarshal(scanned[0].Data, &data); err != nil {
				t.Fatal(err)
			}
			if scanned[0].Repository != "acme/app" || data.Digest != d || data.Status != meta.ScanFailed ||
				!strings.Contains(data.Reason, "did not finish") || !slices.Equal(data.Tags, []string{"1.0", "latest"}) {
				t.Errorf("manifest_scanned in %q: %s; want acme/app, the digest, failed, why, tags 1.0 and latest", scanned[0].Repository, scanned[0].Data)
			}
		})
	}
}
