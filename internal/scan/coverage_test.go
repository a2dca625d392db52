package scan_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/wire"
)

// logTo makes the env's scanner log to a buffer, with a staleness limit.
func (e *env) logTo(staleAfter time.Duration) *testenv.LogBuffer {
	var buf testenv.LogBuffer
	e.svc = scan.New(wire.ScanStores(e.db), e.driver, scan.Options{SBOM: false, Host: e.host, Version: "test", StaleAfter: staleAfter,
		Logger: slog.New(slog.NewTextHandler(&buf, nil))})
	return &buf
}

func ecosystemStatus(c *scan.DataCoverage) map[string]string {
	out := map[string]string{}
	if c == nil {
		return out
	}
	for _, e := range c.Ecosystems {
		k := e.Ecosystem
		if e.Release != "" {
			k = e.Release
		}
		out[k] = e.Status
	}
	return out
}

// TestNoDataIsNotClean: before any advisory is imported, a Debian image
// with packages is scanned (Quay's status stays "scanned") but its answer
// says the Debian data is missing, the scan logs a warning, and
// manifest_scanned carries the fact. Data for another release does not
// count; data for its release does; old data is stale.
func TestNoDataIsNotClean(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, index.Limits{})
			logs := e.logTo(0)
			ctx := context.Background()

			if err := e.svc.WarnIfNoData(ctx); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), "the vulnerability database is empty") {
				t.Fatalf("start on an empty database: %s", logs)
			}

			dgst, _ := e.push("acme/app", "1", debianLayer(t))
			empty, _ := e.push("acme/empty", "1", layer(t, map[string]string{"README": "nothing"}))
			e.drain()
			info := e.security("acme/app", dgst)
			if info.Status != meta.ScanScanned || info.Data == nil || len(info.Data.Layer.Features) != 4 {
				t.Fatalf("the endpoint keeps Quay's answer: %+v", info)
			}
			cov := info.VulnerabilityData
			if cov == nil || cov.Complete || !slices.Equal(cov.Missing, []string{"Debian:12"}) || len(cov.Ecosystems) != 1 {
				t.Fatalf("coverage with no data: %+v", cov)
			}
			if d := cov.Ecosystems[0]; d.Ecosystem != "Debian" || d.Release != "Debian:12" || d.Packages != 4 || d.Status != scan.DataMissing ||
				d.UpdatedAt != nil || !strings.Contains(d.Reason, "no advisories imported for Debian") {
				t.Fatalf("Debian: %+v", d)
			}
			if got := cov.FetchHint(); got != "berth admin vulndb fetch Debian" {
				t.Fatalf("hint: %q", got)
			}
			// The JSON the endpoint answers.
			b, _ := json.Marshal(info)
			if !strings.Contains(string(b), `"vulnerability_data":{"complete":false,"missing":["Debian:12"],"stale":[],"ecosystems":[{"ecosystem":"Debian","release":"Debian:12","packages":4,"status":"missing","records":0,`) {
				t.Fatalf("JSON: %s", b)
			}
			// An image without packages is complete: nothing to know.
			if c := e.security("acme/empty", empty).VulnerabilityData; c == nil || !c.Complete || len(c.Ecosystems) != 0 {
				t.Fatalf("an image without packages: %+v", c)
			}
			if !strings.Contains(logs.String(), "image scanned without current vulnerability data") || !strings.Contains(logs.String(), "missing=[Debian:12]") {
				t.Fatalf("scan log: %s", logs)
			}
			scanned, _ := e.events(0, meta.EventManifestScanned)
			var seen bool
			for _, ev := range scanned {
				if ev["digest"] == dgst {
					vd, _ := ev["vulnerability_data"].(map[string]any)
					seen = vd != nil && vd["complete"] == false && len(vd["missing"].([]any)) == 1
				}
			}
			if !seen {
				t.Fatalf("manifest_scanned: %v", scanned)
			}
			if got, err := e.svc.Coverage(ctx, dgst); err != nil || got.Complete {
				t.Fatalf("Coverage: %+v %v", got, err)
			}

			// Data for Debian 11 only: the image's release still has none.
			e.importJSON(record("DEBIAN-CVE-2026-1111", modifiedBase, `{"package":{"ecosystem":"Debian:11","name":"zlib"},"versions":["1"]}`))
			cov = e.security("acme/app", dgst).VulnerabilityData
			if cov.Complete || cov.Ecosystems[0].Records != 1 || !strings.Contains(cov.Ecosystems[0].Reason, "name no package of Debian:12") {
				t.Fatalf("another release's data: %+v", cov)
			}
			logs = e.logTo(0)
			if err := e.svc.WarnIfNoData(ctx); err != nil {
				t.Fatal(err)
			}
			if strings.Contains(logs.String(), "level=WARN") {
				t.Fatalf("a start with Debian data (of any release) warns: %s", logs)
			}

			e.importJSON(record("DEBIAN-CVE-2026-1212", modifiedBase, `{"package":{"ecosystem":"Debian:12","name":"nothing-installed"},"versions":["1"]}`))
			info = e.security("acme/app", dgst)
			cov = info.VulnerabilityData
			if !cov.Complete || len(cov.Missing) != 0 || len(cov.Stale) != 0 || ecosystemStatus(cov)["Debian:12"] != scan.DataCurrent ||
				cov.Ecosystems[0].UpdatedAt == nil || time.Since(*cov.Ecosystems[0].UpdatedAt) > time.Minute || cov.Reason() != "" {
				t.Fatalf("with data: %+v", cov)
			}

			// Stale: past the limit (here a nanosecond), still matched,
			// but not complete: a report on it is not clean.
			logs = e.logTo(time.Nanosecond)
			cov = e.security("acme/app", dgst).VulnerabilityData
			if cov.Complete || !slices.Equal(cov.Stale, []string{"Debian:12"}) || ecosystemStatus(cov)["Debian:12"] != scan.DataStale ||
				!strings.Contains(cov.Reason(), "advisories last updated") {
				t.Fatalf("stale: %+v", cov)
			}
			if err := e.svc.WarnIfNoData(ctx); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), "stale vulnerability data for ecosystems of stored images") {
				t.Fatalf("start with stale data: %s", logs)
			}
		})
	}
}

// TestCoverageOfEcosystems: each ecosystem of an image is reported on
// its own (OS packages by release, language packages by ecosystem); an
// unknown distribution's packages are unsupported, hence missing; an
// index reports each platform and their union.
func TestCoverageOfEcosystems(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	e.logTo(0)
	e.importJSON(record("ALPINE-CVE-2026-1", modifiedBase, `{"package":{"ecosystem":"Alpine:v3.19","name":"musl"},"versions":["0"]}`))
	mixed, _ := e.push("acme/mixed", "1", alpineLayer(t), goBinaryLayer(t))
	odd, _ := e.push("acme/odd", "1", debianLayer(t), layer(t, map[string]string{"etc/os-release": "ID=plan9\nVERSION_ID=4\n"}))
	e.drain()

	cov := e.security("acme/mixed", mixed).VulnerabilityData
	if st := ecosystemStatus(cov); st["Alpine:v3.19"] != scan.DataCurrent || st["Go"] != scan.DataMissing || len(st) != 2 ||
		cov.Complete || !slices.Equal(cov.Missing, []string{"Go"}) {
		t.Fatalf("Alpine and Go: %+v", cov)
	}
	cov = e.security("acme/odd", odd).VulnerabilityData
	if st := ecosystemStatus(cov); st["plan9"] != scan.DataUnsupported || cov.Complete || cov.FetchHint() != "" ||
		!strings.Contains(cov.Reason(), "cannot match the packages of this distribution") {
		t.Fatalf("unknown distribution: %+v", cov)
	}

	idx := e.pushIndex("acme/mixed", "multi", mixed)
	e.drain()
	info := e.security("acme/mixed", idx)
	if info.Status != meta.ScanScanned || len(info.Manifests) != 1 || info.Manifests[0].VulnerabilityData == nil ||
		info.VulnerabilityData == nil || info.VulnerabilityData.Complete || !slices.Equal(info.VulnerabilityData.Missing, []string{"Go"}) {
		t.Fatalf("index: %+v", info)
	}
}

// TestWarnIfNoDataNamesEcosystemsInUse: with data for one ecosystem, the
// start warning names the stored images' ecosystems that have none.
func TestWarnIfNoDataNamesEcosystemsInUse(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	e.importJSON(record("GO-2026-1", modifiedBase, `{"package":{"ecosystem":"Go","name":"example.com/x"},"versions":["1.0.0"]}`))
	e.push("acme/app", "1", debianLayer(t))
	e.drain()
	logs := e.logTo(0)
	if err := e.svc.WarnIfNoData(context.Background()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "no vulnerability data for ecosystems of stored images") || !strings.Contains(logs.String(), "ecosystems=[Debian]") ||
		!strings.Contains(logs.String(), `fix="berth admin vulndb fetch Debian"`) {
		t.Fatalf("start log: %s", logs)
	}
	ecos, err := e.db.VulnDB().PackageEcosystems(context.Background())
	if err != nil || !slices.Equal(ecos, []string{"Debian:12"}) {
		t.Fatalf("package ecosystems: %v %v", ecos, err)
	}
}

// TestRedHatCoverage: a UBI image's RPMs are matched through Red Hat's
// content-set mapping, so Red Hat advisories alone are not data for it:
// the mapping is needed, and an image without content manifests has none.
func TestRedHatCoverage(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	e.logTo(0)
	ctx := context.Background()
	e.importJSON(rhsa("RHSA-2026:0001", "Moderate", [3]string{"Red Hat:enterprise_linux:8::baseos", "zlib", "0:1.2.11-19.el8_6"}))
	ubi, _ := e.push("ubi8/ubi", "8.6", ubiLayer(t))
	rpmdb, err := os.ReadFile("testdata/ubi8-rpmdb.sqlite")
	if err != nil {
		t.Fatal(err)
	}
	bare, _ := e.push("acme/rhel", "1", layer(t, map[string]string{"etc/os-release": "ID=\"rhel\"\nVERSION_ID=\"8.6\"\n",
		"var/lib/rpm/rpmdb.sqlite": string(rpmdb)}))
	e.drain()
	cov := e.security("ubi8/ubi", ubi).VulnerabilityData
	if st := ecosystemStatus(cov); st["Red Hat"] != scan.DataMissing || cov.Complete || !strings.Contains(cov.Reason(), "repository-to-cpe.json") ||
		cov.FetchHint() != "berth admin vulndb fetch 'Red Hat'" {
		t.Fatalf("without the mapping: %+v", cov)
	}
	if _, err := scan.ImportCPEMapping(ctx, e.db.VulnDB(), strings.NewReader(ubiMapping)); err != nil {
		t.Fatal(err)
	}
	e.drain()
	if cov = e.security("ubi8/ubi", ubi).VulnerabilityData; !cov.Complete || ecosystemStatus(cov)["Red Hat"] != scan.DataCurrent {
		t.Fatalf("with the mapping: %+v", cov)
	}
	cov = e.security("acme/rhel", bare).VulnerabilityData
	if cov.Complete || ecosystemStatus(cov)["Red Hat"] != scan.DataMissing || !strings.Contains(cov.Reason(), "names no content sets") {
		t.Fatalf("RHEL without content manifests: %+v", cov)
	}
}

// TestRedHatCoverageOtherStream: with the mapping imported, advisories for
// another RHEL stream only (RHEL 9) do not cover a UBI 8 image: it is not
// reported clean.
func TestRedHatCoverageOtherStream(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	e.logTo(0)
	ctx := context.Background()
	e.importJSON(rhsa("RHSA-2026:0009", "Moderate", [3]string{"Red Hat:enterprise_linux:9::baseos", "zlib", "0:1.2.11-40.el9"}))
	if _, err := scan.ImportCPEMapping(ctx, e.db.VulnDB(), strings.NewReader(ubiMapping)); err != nil {
		t.Fatal(err)
	}
	ubi, _ := e.push("ubi8/ubi", "8.6", ubiLayer(t))
	e.drain()
	cov := e.security("ubi8/ubi", ubi).VulnerabilityData
	if cov.Complete || ecosystemStatus(cov)["Red Hat"] != scan.DataMissing || !strings.Contains(cov.Reason(), "no advisories imported for") {
		t.Fatalf("UBI 8 with RHEL 9 advisories only: %+v", cov)
	}
}
