package web_test

import (
	"context"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// hugeReport is a scanner whose every report lists n packages, each with
// one vulnerability.
type hugeReport struct{ n int }

func (h hugeReport) Security(context.Context, string, meta.Manifest, bool) (scan.SecurityInfo, error) {
	fs := make([]scan.Feature, h.n)
	for i := range fs {
		fs[i] = scan.Feature{Name: fmt.Sprintf("pkg-%05d", i), Version: "1.0", NamespaceName: "debian:12",
			Vulnerabilities: []scan.Vulnerability{{Name: fmt.Sprintf("CVE-2024-%05d", i), Severity: "High", FixedBy: "1.1"}}}
	}
	return scan.SecurityInfo{Status: meta.ScanScanned, Data: &scan.SecurityData{Layer: scan.SecurityLayer{Features: fs}},
		VulnerabilityData: &scan.DataCoverage{Complete: true}}, nil
}

func (hugeReport) Coverages(context.Context, []string) (map[string]scan.DataCoverage, error) {
	return map[string]scan.DataCoverage{}, nil
}

// TestManifestPageBoundsAHugeReport: an image of 50,000 packages, each
// vulnerable, shows at most 500 vulnerabilities and 500 packages to an
// anonymous visitor, says how many are not shown and where they all are
// (the CSV export, the security API), and still counts every
// vulnerability by severity. Before, it rendered all 100,000 rows.
func TestManifestPageBoundsAHugeReport(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	d := putManifest(t, db, "acme/app", "v1", meta.Manifest{Content: image("app")})
	st := wire.WebStores(db)
	st.Scanner = hugeReport{50000}
	ui := newUI(t, st, web.Options{})
	status, body := get(t, ui, "/repository/acme/app/manifest/"+d.String(), false)
	if status != http.StatusOK {
		t.Fatalf("GET the manifest page = %d\n%.2000s", status, body)
	}
	if n := strings.Count(body, `<tr><td>CVE-`); n == 0 || n > 500 {
		t.Errorf("the page lists %d vulnerabilities, want 1 to 500", n)
	}
	if n := len(regexp.MustCompile(`<tr><td>pkg-\d+</td>`).FindAllString(body, -1)); n == 0 || n > 500 {
		t.Errorf("the page lists %d packages, want 1 to 500", n)
	}
	if !strings.Contains(body, "49,500 more vulnerabilities") || !strings.Contains(body, "49,500 more packages") {
		t.Errorf("the page does not say how many vulnerabilities and packages it leaves out\n%.2000s", body[max(0, len(body)-6000):])
	}
	if !strings.Contains(body, "vulnerabilities.csv") || !strings.Contains(body, "/security") {
		t.Errorf("the page does not point to the CSV and the security API")
	}
	if !strings.Contains(body, `<span class="sev sev-high">High 50000</span>`) {
		t.Errorf("the counts by severity are not the report's")
	}
	if len(body) > 256<<10 {
		t.Errorf("the page is %d bytes", len(body))
	}
}
