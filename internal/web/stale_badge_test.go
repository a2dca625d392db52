package web_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// monthOldVulns is the advisory store as it reads after a month without
// a fetch.
type monthOldVulns struct{ scan.Vulns }

func (m monthOldVulns) VulnSources(ctx context.Context) ([]meta.VulnSource, error) {
	srcs, err := m.Vulns.VulnSources(ctx)
	for i := range srcs {
		srcs[i].UpdatedAt = time.Now().Add(-30 * 24 * time.Hour)
	}
	return srcs, err
}

// TestStaleDataIsNotCleanOnThePage: a Debian 12 image without findings
// whose Debian data is a month old (past scan.vulndb.staleAfter) is not
// shown clean: its tag's row has a "stale data" badge, not the green
// "none known", and its manifest page says the data is stale and the
// image is not known to be clean, not "No vulnerability known".
func TestStaleDataIsNotCleanOnThePage(t *testing.T) {
	e := newScanEnv(t)
	e.importAll("Debian", zlibAdvisory)
	stores := wire.ScanStores(e.db)
	stores.Vulns = monthOldVulns{stores.Vulns}
	e.svc = scan.New(stores, e.driver, scan.Options{Host: e.host, Version: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	bash := "Package: bash\nStatus: install ok installed\nPriority: required\nArchitecture: amd64\nVersion: 5.2.15-2+b2\nDescription: shell\n\n"
	deb := e.push("acme/app", "deb", map[string]string{"etc/os-release": debian12OSRelease, "var/lib/dpkg/status": bash})
	e.drain()
	ui := newUI(t, e.stores(), web.Options{})

	status, body := get(t, ui, "/repository/acme/app", false)
	if status != http.StatusOK {
		t.Fatalf("GET the tags page = %d\n%.2000s", status, body)
	}
	row := tagRow(t, body, "deb")
	if strings.Contains(row, "none known") || strings.Contains(row, "badge ok") || strings.Contains(row, "sev-") {
		t.Errorf("the row of an image scanned on stale data says clean:\n%s", row)
	}
	if !strings.Contains(row, ">stale data</span>") || !strings.Contains(row, "advisories last updated 30 days ago") {
		t.Errorf("the row of an image scanned on stale data has no \"stale data\" badge saying why:\n%s", row)
	}

	status, body = get(t, ui, "/repository/acme/app/manifest/"+deb, false)
	if status != http.StatusOK {
		t.Fatalf("GET the manifest page = %d\n%.2000s", status, body)
	}
	if strings.Contains(body, "No vulnerability known") {
		t.Error("the manifest page of an image scanned on stale data says no vulnerability is known")
	}
	if !strings.Contains(body, `id="vulnerability-data"`) || !strings.Contains(body, "Stale vulnerability data</strong> for Debian:12") ||
		!strings.Contains(body, "not known to be clean") {
		t.Errorf("the manifest page has no notice that the data is stale and the image not known clean\n%s", body)
	}
}
