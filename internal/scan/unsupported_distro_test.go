package scan_test

import (
	"context"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan/index"
)

// TestUnsupportedDistributionIsNotClean: an image whose os-release names
// a distribution Berth has no advisories' scheme for (Arch Linux, whose
// pacman database Berth does not read) has no packages found and no gap
// recorded; its report is still not complete: its OS packages are not
// known at all. The answer of the security endpoint (which a gate
// reads), the coverage of its stored summary (the tags page) and the
// manifest_scanned event all say so.
func TestUnsupportedDistributionIsNotClean(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	arch, _ := e.push("acme/arch", "1", layer(t, map[string]string{
		"etc/os-release":                         "NAME=\"Arch Linux\"\nID=arch\nBUILD_ID=rolling\n",
		"var/lib/pacman/local/zlib-1.3.1-2/desc": "%NAME%\nzlib\n\n%VERSION%\n1:1.3.1-2\n",
	}))
	e.drain()
	ctx := context.Background()

	m, err := e.db.Manifests().GetManifest(ctx, "acme/arch", "", mustDigest(t, arch), true)
	if err != nil {
		t.Fatal(err)
	}
	info, err := e.svc.Security(ctx, "acme/arch", m, true)
	if err != nil {
		t.Fatal(err)
	}
	if info.Status != meta.ScanScanned || info.VulnerabilityData == nil {
		t.Fatalf("status %s, coverage %v; want scanned with coverage", info.Status, info.VulnerabilityData)
	}
	if cov := info.VulnerabilityData; cov.Complete || len(cov.Missing) != 1 || cov.Missing[0] != "arch" {
		t.Errorf("security answer: complete %v, missing %q; want incomplete, arch missing", cov.Complete, cov.Missing)
	} else if st := ecosystemStatus(cov)["arch"]; st != "unsupported" {
		t.Errorf("arch: %s (%s), want unsupported", st, cov.Reason())
	}
	if cov, err := e.svc.Coverage(ctx, arch); err != nil || cov.Complete {
		t.Errorf("Coverage: complete %v, %v; want incomplete", cov.Complete, err)
	}
	covs, err := e.svc.Coverages(ctx, []string{arch})
	if cov, ok := covs[arch]; err != nil || !ok || cov.Complete {
		t.Errorf("Coverages (from the stored summary): %+v, %v; want incomplete", covs, err)
	}
	scanned, _ := e.events(0, meta.EventManifestScanned)
	if len(scanned) != 1 {
		t.Fatalf("%d manifest_scanned events, want 1", len(scanned))
	}
	if vd, _ := scanned[0]["vulnerability_data"].(map[string]any); vd == nil || vd["complete"] != false {
		t.Errorf("manifest_scanned vulnerability_data %v, want complete false", scanned[0]["vulnerability_data"])
	}
}
