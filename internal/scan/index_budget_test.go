package scan_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/wire"
)

// packageReads counts the scan reports the scanner reads and the
// packages each holds.
type packageReads struct {
	scan.Results
	packages *[]int
}

func (c packageReads) ManifestScan(ctx context.Context, digest string) (meta.ManifestScan, error) {
	st, err := c.Results.ManifestScan(ctx, digest)
	var rep struct {
		Packages []json.RawMessage `json:"packages"`
	}
	if err == nil && len(st.Report) > 0 {
		if jerr := json.Unmarshal(st.Report, &rep); jerr != nil {
			return st, jerr
		}
	}
	*c.packages = append(*c.packages, len(rep.Packages))
	return st, err
}

// TestIndexSecurityPackageBudget: the security answer of an index
// decodes its platforms' reports only up to the per-image package bound
// in all (an index lists up to 64 platforms of up to 500,000 packages
// each, and anyone who may pull may ask): past it, it reads no further
// report and looks up no advisory, and answers with no data, not
// scanned, saying why, its data incomplete. Within the bound, the answer
// is the union, as before.
func TestIndexSecurityPackageBudget(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	e.importJSON(debRecord("DEBIAN-CVE-2026-0501", modifiedBase, "pkg0"))
	var images []string
	for i := range 3 {
		s := ""
		for p := range 4 {
			s += dpkgStanza(fmt.Sprintf("pkg%d", p), fmt.Sprintf("1.%d", i), true)
		}
		d, _ := e.push("acme/multi", fmt.Sprint("p", i), layer(t, map[string]string{"etc/os-release": debian12OSRelease, "var/lib/dpkg/status": s}))
		images = append(images, d)
	}
	e.drain()
	idx := e.putRawIndex("acme/multi", "latest", images)

	answer := func(budget int) (scan.SecurityInfo, []int, int) {
		t.Helper()
		var read []int
		ss := wire.ScanStores(e.db)
		ss.Results = packageReads{ss.Results, &read}
		cv := &countingVulns{Vulns: ss.Vulns}
		ss.Vulns = cv
		svc := scan.New(ss, e.driver, scan.Options{Host: e.host, Version: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
		scan.SetMaxImagePackages(svc, budget)
		info, err := svc.Security(context.Background(), "acme/multi", idx, true)
		if err != nil {
			t.Fatal(err)
		}
		calls, _ := cv.take()
		return info, read, calls
	}

	info, read, lookups := answer(6)
	before := 0
	for _, n := range read[:max(len(read)-1, 0)] {
		before += n
	}
	if before > 6 || len(read) > 2 {
		t.Errorf("with a budget of 6 packages, the answer read reports of %v packages: it went on past the budget", read)
	}
	if lookups != 0 {
		t.Errorf("past the budget, the answer looked advisories up %d times", lookups)
	}
	if info.Data != nil || info.Status == meta.ScanScanned || !strings.Contains(info.Reason, "6 packages") {
		t.Errorf("past the budget: status %s, reason %q, data %v; want no data, not scanned, the bound named", info.Status, info.Reason, info.Data != nil)
	}
	if info.VulnerabilityData == nil || info.VulnerabilityData.Complete {
		t.Errorf("past the budget, the answer says its data is complete: %+v", info.VulnerabilityData)
	}

	info, read, _ = answer(12)
	if info.Status != meta.ScanScanned || info.Data == nil || len(info.Data.Layer.Features) != 12 || len(read) != 3 {
		t.Errorf("within the budget: status %s %q, data %v, %d reports read; want scanned, 12 features, 3 reads", info.Status, info.Reason, info.Data != nil, len(read))
	}
}
