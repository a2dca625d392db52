package meta_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestScanSummaryMigration: a scan stored before coverage summaries
// (schema version 30) keeps its report and has no summary after the
// upgrade; its summary can be filled in once, unless the scan was stored
// again since. A scan stored now keeps its summary, a failed one none;
// ScanSummaries answers hundreds of digests at once.
func TestScanSummaryMigration(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db, err := meta.OpenAt(ctx, metatest.DSN(t, d), 30)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			const old = "sha256:0ld"
			if err := db.Exec(ctx, "INSERT INTO manifest_scans (digest, status, reason, indexer_version, report, updated_at) VALUES (?, ?, '', 1, ?, ?)",
				old, meta.ScanScanned, []byte(`{"packages":[]}`), time.Now().UnixMicro()); err != nil {
				t.Fatal(err)
			}
			if err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			scans := db.Scans()
			sums, err := scans.ScanSummaries(ctx, []string{old, "sha256:unknown"})
			if err != nil || len(sums) != 1 || sums[old].Status != meta.ScanScanned || sums[old].Summary != nil {
				t.Fatalf("summaries after the upgrade = %+v, %v; want the old scan, scanned, without summary", sums, err)
			}
			ms, err := scans.ManifestScan(ctx, old)
			if err != nil || string(ms.Report) != `{"packages":[]}` {
				t.Fatalf("the old report: %q %v", ms.Report, err)
			}
			if ok, err := scans.FillScanSummary(ctx, old, ms.UpdatedAt.Add(-time.Second), []byte(`{"v":1}`)); err != nil || ok {
				t.Fatalf("fill the summary of a scan stored since = %v, %v; want not stored", ok, err)
			}
			if ok, err := scans.FillScanSummary(ctx, old, ms.UpdatedAt, []byte(`{"v":1}`)); err != nil || !ok {
				t.Fatalf("fill the summary = %v, %v", ok, err)
			}
			if ok, err := scans.FillScanSummary(ctx, old, ms.UpdatedAt, []byte(`{"v":2}`)); err != nil || ok {
				t.Fatalf("fill a summary again = %v, %v; want not stored", ok, err)
			}
			if sums, err := scans.ScanSummaries(ctx, []string{old}); err != nil || string(sums[old].Summary) != `{"v":1}` {
				t.Fatalf("the filled summary: %+v %v", sums, err)
			}

			// Scans stored now: hundreds, more than one statement's worth.
			var digests []string
			for i := range 700 {
				dg := fmt.Sprintf("sha256:%064x", i)
				digests = append(digests, dg)
				if err := scans.SaveScan(ctx, meta.ScanResult{Digest: dg, Status: meta.ScanScanned, IndexerVersion: 1, Report: []byte(`{}`),
					Summary: []byte(fmt.Sprintf(`{"v":1,"n":%d}`, i))}); err != nil {
					t.Fatal(err)
				}
			}
			sums, err = scans.ScanSummaries(ctx, digests)
			if err != nil || len(sums) != len(digests) {
				t.Fatalf("summaries of %d scans: %d, %v", len(digests), len(sums), err)
			}
			for i, dg := range digests {
				if want := fmt.Sprintf(`{"v":1,"n":%d}`, i); string(sums[dg].Summary) != want {
					t.Fatalf("summary of scan %d = %q, want %q", i, sums[dg].Summary, want)
				}
			}
			if err := scans.SaveScan(ctx, meta.ScanResult{Digest: digests[0], Status: meta.ScanFailed, Reason: "gone"}); err != nil {
				t.Fatal(err)
			}
			if sums, err := scans.ScanSummaries(ctx, digests[:1]); err != nil || sums[digests[0]].Status != meta.ScanFailed || sums[digests[0]].Summary != nil {
				t.Fatalf("a failed scan's summary: %+v %v", sums, err)
			}
		})
	}
}
