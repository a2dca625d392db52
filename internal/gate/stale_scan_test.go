package gate

import (
	"context"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
)

// TestScanInputStaleDataIsNoData: an image scanned without findings
// against advisories older than the staleness limit is no_data, saying
// the data is too old, and berth/scan fails: whether its coverage says
// complete false (the scanner's answer) or, as a scanner before that
// rule answered, complete true with the ecosystem listed stale.
func TestScanInputStaleDataIsNoData(t *testing.T) {
	ctx := context.Background()
	d := digest.FromString("stale image")
	m := meta.Manifest{Digest: d, MediaType: "application/vnd.oci.image.manifest.v1+json", Content: []byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a","size":2},"layers":[]}`)}
	for _, complete := range []bool{false, true} {
		info := scan.SecurityInfo{Status: meta.ScanScanned,
			Data: &scan.SecurityData{Layer: scan.SecurityLayer{Features: []scan.Feature{{Name: "zlib", Version: "1:1.2.13.dfsg-1", Vulnerabilities: []scan.Vulnerability{}}}}},
			VulnerabilityData: &scan.DataCoverage{Complete: complete, Missing: []string{}, Stale: []string{"Debian:12"},
				Ecosystems: []scan.EcosystemData{{Ecosystem: "Debian", Release: "Debian:12", Packages: 4, Status: scan.DataStale,
					Reason: "advisories last updated 30 days ago (2026-01-01T00:00:00Z), more than 7 days"}}}}
		s := New(Stores{Content: fakeContent{d: m}, Blobs: noBlobs{}, Scanner: fakeScanner{d: info}}, nil)
		sc, reason, err := s.scanInput(ctx, "mirror/debian", m, mustParse(t, m), "Critical")
		if err != nil {
			t.Fatal(err)
		}
		if sc.Status != "no_data" || !strings.Contains(reason, "too old") || !strings.Contains(reason, "30 days ago") {
			t.Fatalf("complete %v: scan %+v, reason %q; want no_data, the data too old", complete, sc, reason)
		}
		if got := scanCheck(sc, "Critical"); got != StatusFail {
			t.Fatalf("complete %v: berth/scan %s on stale data; want fail", complete, got)
		}
	}
}
