package main

import (
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/scan"
)

// TestVulnsStaleDataIsMissing: without --max-data-age, an image whose
// data is stale (30 days old, past the server's staleAfter) is "missing
// data", exit status 4, with the stale ecosystem named and the command
// that fetches it: whether the server says complete false or, as a
// server before that rule said, complete true. --allow-missing-data
// accepts it as any missing data.
func TestVulnsStaleDataIsMissing(t *testing.T) {
	now := time.Now()
	at := now.Add(-30 * 24 * time.Hour)
	for _, complete := range []bool{false, true} {
		cov := &scan.DataCoverage{Complete: complete, Missing: []string{}, Stale: []string{"Debian:12"},
			Ecosystems: []scan.EcosystemData{{Ecosystem: "Debian", Release: "Debian:12", Packages: 4, Status: scan.DataStale, Records: 10, UpdatedAt: &at,
				Reason: "advisories last updated 30 days ago, more than 7 days"}}}
		missing := dataProblems(cov, 0, now)
		if !strings.Contains(missing, "Debian:12") || !strings.Contains(missing, "30 days ago") || !strings.Contains(missing, "berth admin vulndb fetch Debian") {
			t.Errorf("complete %v: missing %q; want the stale Debian:12 named, why, and the fetch command (exit 4)", complete, missing)
		}
	}
	// Current data is no problem.
	cov := &scan.DataCoverage{Complete: true, Missing: []string{}, Stale: []string{},
		Ecosystems: []scan.EcosystemData{{Ecosystem: "Debian", Release: "Debian:12", Packages: 4, Status: scan.DataCurrent, Records: 10, UpdatedAt: &now}}}
	if missing := dataProblems(cov, 0, now); missing != "" {
		t.Errorf("current data: %q", missing)
	}
}
