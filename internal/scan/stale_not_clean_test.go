package scan_test

import (
	"context"
	"io"
	"log/slog"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/wire"
)

// agedVulns is the advisory store as it reads after no fetch for age:
// every ecosystem's data was last updated that long ago.
type agedVulns struct {
	scan.Vulns
	age time.Duration
}

func (a agedVulns) VulnSources(ctx context.Context) ([]meta.VulnSource, error) {
	srcs, err := a.Vulns.VulnSources(ctx)
	for i := range srcs {
		srcs[i].UpdatedAt = time.Now().Add(-a.age)
	}
	return srcs, err
}

// TestStaleDataIsNotClean: a Debian 12 image whose Debian advisories were
// last updated 30 days ago (past the default staleAfter, 7 days) has no
// finding, yet it is not clean: its coverage is not complete (the
// security endpoint, Coverage and Coverages, which the tags page reads,
// all say so, with the ecosystem listed stale and why), and its
// manifest_scanned event says complete false. With current data the
// same image is complete.
func TestStaleDataIsNotClean(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, index.Limits{})
			ctx := context.Background()
			// Debian 12 data, none of it affecting the image.
			e.importJSON(record("DEBIAN-CVE-2026-1212", modifiedBase, `{"package":{"ecosystem":"Debian:12","name":"nothing-installed"},"versions":["1"]}`))
			stores := wire.ScanStores(e.db)
			stores.Vulns = agedVulns{Vulns: stores.Vulns, age: 30 * 24 * time.Hour}
			e.svc = scan.New(stores, e.driver, scan.Options{Host: e.host, Version: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})

			dgst, _ := e.push("acme/app", "1", debianLayer(t))
			e.drain()
			info := e.security("acme/app", dgst)
			if info.Status != meta.ScanScanned || info.Data == nil || vulnCount(info) != 0 {
				t.Fatalf("scan: %+v", info)
			}
			cov := info.VulnerabilityData
			if cov == nil || cov.Complete || !slices.Equal(cov.Stale, []string{"Debian:12"}) || ecosystemStatus(cov)["Debian:12"] != scan.DataStale ||
				!strings.Contains(cov.Reason(), "advisories last updated 30 days ago") {
				t.Fatalf("30-day-old data: %+v; want not complete, Debian:12 stale", cov)
			}
			if got, err := e.svc.Coverage(ctx, dgst); err != nil || got.Complete {
				t.Fatalf("Coverage (the gate's) = %+v, %v; want not complete", got, err)
			}
			if covs, err := e.svc.Coverages(ctx, []string{dgst}); err != nil || covs[dgst].Complete || len(covs[dgst].Stale) != 1 {
				t.Fatalf("Coverages (the tags page's) = %+v, %v; want not complete", covs, err)
			}
			scanned, _ := e.events(0, meta.EventManifestScanned)
			var said any = "no event"
			for _, ev := range scanned {
				if ev["digest"] == dgst {
					vd, _ := ev["vulnerability_data"].(map[string]any)
					said = vd["complete"]
				}
			}
			if said != false {
				t.Fatalf("manifest_scanned says complete %v with stale data; want false", said)
			}

			// The same image with current data is complete.
			e.svc = scan.New(wire.ScanStores(e.db), e.driver, scan.Options{Host: e.host, Version: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			if cov := e.security("acme/app", dgst).VulnerabilityData; cov == nil || !cov.Complete || len(cov.Stale) != 0 {
				t.Fatalf("current data: %+v; want complete", cov)
			}
		})
	}
}

func vulnCount(info scan.SecurityInfo) int {
	n := 0
	if info.Data != nil {
		for _, f := range info.Data.Layer.Features {
			n += len(f.Vulnerabilities)
		}
	}
	return n
}
