package scan_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/wire"
)

// reportReads counts the scanner's reads of stored scan reports
// (meta.Scans.ManifestScan).
type reportReads struct {
	scan.Results
	n *int
}

func (c reportReads) ManifestScan(ctx context.Context, digest string) (meta.ManifestScan, error) {
	*c.n++
	return c.Results.ManifestScan(ctx, digest)
}

// countingService is the env's scanner counting its report reads in n.
func (e *env) countingService(n *int) *scan.Service {
	ss := wire.ScanStores(e.db)
	ss.Results = reportReads{ss.Results, n}
	return scan.New(ss, e.driver, scan.Options{Host: e.host, Version: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// putRawIndex pushes an OCI index of the entries (image manifests of
// repo, by digest; one may repeat) to repo:tag and returns its manifest.
func (e *env) putRawIndex(repo, tag string, entries []string) meta.Manifest {
	e.t.Helper()
	ctx := context.Background()
	sizes := map[string]int64{}
	descs := make([]string, len(entries))
	for i, d := range entries {
		if _, ok := sizes[d]; !ok {
			m, err := e.db.Manifests().GetManifest(ctx, repo, "", mustDigest(e.t, d), false)
			if err != nil {
				e.t.Fatal(err)
			}
			sizes[d] = m.Size
		}
		descs[i] = fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d,"platform":{"os":"linux","architecture":"amd64"}}`,
			oci.MediaTypeImageManifest, d, sizes[d])
	}
	body := `{"schemaVersion":2,"mediaType":"` + oci.MediaTypeImageIndex + `","manifests":[` + strings.Join(descs, ",") + `]}`
	req, _ := http.NewRequest(http.MethodPut, "http://"+e.host+"/v2/"+repo+"/manifests/"+tag, strings.NewReader(body))
	req.Header.Set("Content-Type", oci.MediaTypeImageIndex)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("push an index of %d entries (%d bytes): %d", len(entries), len(body), resp.StatusCode)
	}
	m, err := e.db.Manifests().GetManifest(ctx, repo, "", digest.FromString(body), true)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

// TestIndexSecurityReadsEachPlatformOnce: the security answer of an
// index that lists one image 15,000 times (as a push under the 4 MiB
// manifest cap may) reads that image's report once and lists the
// platform once, its data complete.
func TestIndexSecurityReadsEachPlatformOnce(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	img, _ := e.push("acme/app", "v1", layer(t, map[string]string{"README": "no packages"}))
	e.drain()
	entries := make([]string, 15000)
	for i := range entries {
		entries[i] = img
	}
	idx := e.putRawIndex("acme/app", "multi", entries)
	reads := 0
	info, err := e.countingService(&reads).Security(context.Background(), "acme/app", idx, true)
	if err != nil {
		t.Fatal(err)
	}
	if reads != 1 {
		t.Errorf("the security answer of an index naming one image 15,000 times read %d scan reports, want 1", reads)
	}
	if info.Status != meta.ScanScanned || len(info.Manifests) != 1 || info.Manifests[0].Digest != img ||
		info.VulnerabilityData == nil || !info.VulnerabilityData.Complete {
		t.Errorf("the answer: status %s, %d platforms, coverage %+v; want scanned, the one image, complete", info.Status, len(info.Manifests), info.VulnerabilityData)
	}
}

// TestIndexSecurityReadsAtMost64Platforms: of an index of 65 distinct
// images, all scanned with complete data, the security answer reads 64
// reports and says its data is incomplete (and why); an index of 64 of
// them is complete.
func TestIndexSecurityReadsAtMost64Platforms(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	var images []string
	for i := range 65 {
		d, _ := e.push("acme/app", fmt.Sprint("v", i), layer(t, map[string]string{"README": fmt.Sprint("image ", i)}))
		images = append(images, d)
	}
	e.drain()
	ctx := context.Background()

	reads := 0
	svc := e.countingService(&reads)
	info, err := svc.Security(ctx, "acme/app", e.putRawIndex("acme/app", "all", images), true)
	if err != nil {
		t.Fatal(err)
	}
	if reads > 64 {
		t.Errorf("the security answer of an index of 65 images read %d scan reports, want at most 64", reads)
	}
	if info.VulnerabilityData == nil || info.VulnerabilityData.Complete {
		t.Errorf("the answer of an index of 65 images says its data is complete: %+v", info.VulnerabilityData)
	}
	if info.Status == meta.ScanScanned || !strings.Contains(info.Reason, "64") {
		t.Errorf("the answer of an index of 65 images: status %s, reason %q; want it not scanned, saying it reads 64", info.Status, info.Reason)
	}

	reads = 0
	info, err = svc.Security(ctx, "acme/app", e.putRawIndex("acme/app", "most", images[:64]), true)
	if err != nil {
		t.Fatal(err)
	}
	if info.Status != meta.ScanScanned || len(info.Manifests) != 64 || info.VulnerabilityData == nil || !info.VulnerabilityData.Complete || reads != 64 {
		t.Errorf("the answer of an index of 64 images: status %s %q, %d platforms, coverage %+v, %d reads; want scanned, 64, complete, 64",
			info.Status, info.Reason, len(info.Manifests), info.VulnerabilityData, reads)
	}
}
