package web_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/feed"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// scanEnv is a registry with a scanner whose jobs the test runs itself
// (drain), and the UI's stores with that scanner.
type scanEnv struct {
	t      *testing.T
	db     *meta.DB
	driver storage.Driver
	svc    *scan.Service
	feed   *feed.Dispatcher
	host   string
}

func newScanEnv(t *testing.T) *scanEnv {
	t.Helper()
	db := metatest.Open(t, "sqlite")
	onPush := feed.New(db.Outbox(), []feed.Subscriber{scan.NewOnPush(db.Scans())}, feed.Options{})
	if err := onPush.Subscribe(context.Background()); err != nil {
		t.Fatal(err)
	}
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	srv := httptest.NewServer(registry.New(wire.RegistryStores(db), driver, registry.Options{Policy: policy, Logger: log}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	return &scanEnv{t: t, db: db, driver: driver, host: host, feed: onPush,
		svc: scan.New(wire.ScanStores(db), driver, scan.Options{Host: host, Version: "test", Logger: log})}
}

// stores are the UI's stores with the env's scanner and storage.
func (e *scanEnv) stores() web.Stores {
	st := wire.WebStores(e.db)
	st.Scanner, st.Blobs = e.svc, e.driver
	return st
}

// push writes an image of one layer of files (path → content) to
// repo:tag and returns its digest.
func (e *scanEnv) push(repo, tag string, files map[string]string) string {
	e.t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, p := range slices.Sorted(maps.Keys(files)) {
		if err := tw.WriteHeader(&tar.Header{Name: p, Mode: 0o644, Size: int64(len(files[p])), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}); err != nil {
			e.t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[p])); err != nil {
			e.t.Fatal(err)
		}
	}
	tw.Close()
	zw.Close()
	img, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1),
		static.NewLayer(buf.Bytes(), types.OCILayer))
	if err != nil {
		e.t.Fatal(err)
	}
	ref, err := name.ParseReference(e.host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		e.t.Fatal(err)
	}
	d, _ := img.Digest()
	return d.String()
}

// pushIndex writes an OCI index of image manifests of repo to repo:tag.
func (e *scanEnv) pushIndex(repo, tag string, images ...string) {
	e.t.Helper()
	var descs []string
	for _, image := range images {
		d, err := oci.ParseDigest(image)
		if err != nil {
			e.t.Fatal(err)
		}
		m, err := e.db.Manifests().GetManifest(context.Background(), repo, "", d, false)
		if err != nil {
			e.t.Fatal(err)
		}
		descs = append(descs, fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d,"platform":{"os":"linux","architecture":"amd64"}}`, m.MediaType, image, m.Size))
	}
	body := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + strings.Join(descs, ",") + `]}`
	req, _ := http.NewRequest(http.MethodPut, "http://"+e.host+"/v2/"+repo+"/manifests/"+tag, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/vnd.oci.image.index.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("push index: %d", resp.StatusCode)
	}
}

// drain queues the scans of what was pushed and runs scan jobs until none
// is ready.
func (e *scanEnv) drain() {
	e.t.Helper()
	ctx := context.Background()
	if err := e.feed.Drain(ctx); err != nil {
		e.t.Fatal(err)
	}
	for range 1000 {
		j, ok, err := e.db.Jobs().ClaimJob(ctx, meta.ScanQueue, "test", time.Minute)
		if err != nil {
			e.t.Fatal(err)
		}
		if !ok {
			return
		}
		if err := e.svc.Handle(ctx, j); err != nil {
			e.t.Fatalf("scan job %s: %v", j.Payload, err)
		}
		if err := e.db.Jobs().CompleteJob(ctx, j.ID, "test"); err != nil {
			e.t.Fatal(err)
		}
	}
	e.t.Fatal("scan jobs never ran out")
}

// importAll imports OSV records given as JSON objects as all the
// advisories of ecosystem (recorded as imported, as a fetch of its
// all.zip records it).
func (e *scanEnv) importAll(ecosystem string, records ...string) {
	e.t.Helper()
	ctx := context.Background()
	im := scan.NewImporter(e.db.VulnDB(), nil)
	if err := im.JSON(ctx, strings.NewReader("["+strings.Join(records, ",")+"]"), "test"); err != nil {
		e.t.Fatal(err)
	}
	if _, err := im.Finish(ctx); err != nil {
		e.t.Fatal(err)
	}
	if err := e.db.VulnDB().TouchVulnSource(ctx, ecosystem); err != nil {
		e.t.Fatal(err)
	}
}

const (
	debian12OSRelease = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n"
	zlibStatus        = "Package: zlib\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: 1:1.2.13.dfsg-1\nDescription: zlib\n\n"
	// zlibAdvisory affects the zlib of zlibStatus.
	zlibAdvisory = `{"id":"DEBIAN-CVE-2026-0001","modified":"2026-01-01T00:00:00Z","summary":"zlib overflow",
	  "affected":[{"package":{"ecosystem":"Debian:12","name":"zlib"},"ecosystem_specific":{"urgency":"high"},
	    "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1:1.2.13.dfsg-1+deb12u1"}]}]}]}`
	// apkInstalled is an Alpine package database: in a Debian image,
	// packages Berth does not match (the image's data is incomplete).
	apkInstalled = "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\no:musl\nT:the musl c library\n\n"
)

// debianImage is a Debian 12 image with zlib installed, and the extra
// files.
func debianImage(extra map[string]string) map[string]string {
	files := map[string]string{"etc/os-release": debian12OSRelease, "var/lib/dpkg/status": zlibStatus}
	maps.Copy(files, extra)
	return files
}

// tagRow is the tags table's row of tag.
func tagRow(t *testing.T, body, tag string) string {
	t.Helper()
	for _, row := range strings.Split(body, "<tr>") {
		if strings.Contains(row, ">"+tag+"</a></th>") {
			row, _, _ = strings.Cut(row, "</tr>")
			return row
		}
	}
	t.Fatalf("no row of tag %s in\n%.3000s", tag, body)
	return ""
}

// TestSecurityWithoutDataIsNotClean: an image scanned without
// vulnerability data for its ecosystems (an empty database, a Debian 12
// image) is never shown clean: its tag's row has no green "none known"
// but a neutral "no data" badge (an index of it too), its manifest page
// says the data is incomplete and why (and, to a superuser only, the
// command that fetches it), and its CSV export is named incomplete. An
// image with complete data and no finding stays "none known" and "No
// vulnerability known"; findings of an incomplete image are "at least".
func TestSecurityWithoutDataIsNotClean(t *testing.T) {
	e := newScanEnv(t)
	deb := e.push("acme/app", "deb", debianImage(nil))
	plain := e.push("acme/app", "plain", map[string]string{"README": "no packages"})
	e.pushIndex("acme/app", "multi", deb)
	e.drain()
	ui := newUI(t, e.stores(), web.Options{})

	status, body := get(t, ui, "/repository/acme/app", false)
	if status != http.StatusOK {
		t.Fatalf("GET the tags page = %d\n%.2000s", status, body)
	}
	for _, tag := range []string{"deb", "multi"} {
		row := tagRow(t, body, tag)
		if strings.Contains(row, "none known") || strings.Contains(row, "badge ok") {
			t.Errorf("the row of %s, scanned without data, says clean:\n%s", tag, row)
		}
		if !strings.Contains(row, "no data") || !strings.Contains(row, "no advisories imported for Debian") {
			t.Errorf("the row of %s does not say it has no data, and why:\n%s", tag, row)
		}
	}
	if row := tagRow(t, body, "plain"); !strings.Contains(row, `<span class="badge ok">none known</span>`) {
		t.Errorf("the row of an image with complete data and no finding is not clean:\n%s", row)
	}

	status, body = get(t, ui, "/repository/acme/app/manifest/"+deb, false)
	if status != http.StatusOK {
		t.Fatalf("GET the manifest page = %d\n%.2000s", status, body)
	}
	if strings.Contains(body, "No vulnerability known") {
		t.Error("the manifest page of an image without data says no vulnerability is known")
	}
	if !strings.Contains(body, `id="vulnerability-data"`) || !strings.Contains(body, "Debian:12") ||
		!strings.Contains(body, "no advisories imported for Debian") {
		t.Errorf("the manifest page has no notice of incomplete data with its reason\n%s", body)
	}
	if !strings.Contains(body, "berth admin vulndb fetch Debian") {
		t.Error("the manifest page does not tell a superuser the command that fetches the data")
	}
	if _, body := get(t, ui, "/repository/acme/app/manifest/"+plain, false); !strings.Contains(body, "No vulnerability known") ||
		strings.Contains(body, `id="vulnerability-data"`) {
		t.Error("the manifest page of an image with complete data and no finding does not say no vulnerability is known")
	}

	// The CSV export says so in its name (a file of no rows is no proof).
	req := httptest.NewRequest(http.MethodGet, "/repository/acme/app/manifest/"+deb+"/vulnerabilities.csv", nil)
	rec := httptest.NewRecorder()
	ui.ServeHTTP(rec, req)
	if cd := rec.Header().Get("Content-Disposition"); rec.Code != http.StatusOK || !strings.Contains(cd, "-incomplete.csv") ||
		!strings.Contains(rec.Header().Get("Berth-Vulnerability-Data"), "incomplete") {
		t.Errorf("the CSV of an image without data = %d, %q, %q", rec.Code, cd, rec.Header().Get("Berth-Vulnerability-Data"))
	}
	req = httptest.NewRequest(http.MethodGet, "/repository/acme/app/manifest/"+plain+"/vulnerabilities.csv", nil)
	rec = httptest.NewRecorder()
	ui.ServeHTTP(rec, req)
	if cd := rec.Header().Get("Content-Disposition"); strings.Contains(cd, "incomplete") || rec.Header().Get("Berth-Vulnerability-Data") != "complete" {
		t.Errorf("the CSV of an image with complete data: %q, %q", cd, rec.Header().Get("Berth-Vulnerability-Data"))
	}

	// A reader who is no superuser sees the notice and its reason, not the
	// operator's command.
	reader := newUI(t, e.stores(), web.Options{Auth: readOnlyPublic{public: map[string]bool{"acme/app": true}}})
	_, body = get(t, reader, "/repository/acme/app/manifest/"+deb, false)
	if !strings.Contains(body, `id="vulnerability-data"`) || !strings.Contains(body, "no advisories imported for Debian") ||
		strings.Contains(body, "berth admin vulndb fetch") {
		t.Errorf("a reader's manifest page: notice and reason without the command wanted\n%s", body)
	}

	// With Debian 12 data: a Debian image is complete, its findings
	// counted as they are; one that also has packages Berth cannot match
	// (apk in Debian) is incomplete, its findings "at least".
	e.importAll("Debian", zlibAdvisory)
	e.push("acme/app", "deb2", debianImage(map[string]string{"README": "2"}))
	mixed := e.push("acme/app", "mixed", debianImage(map[string]string{"lib/apk/db/installed": apkInstalled}))
	e.drain()
	_, body = get(t, ui, "/repository/acme/app", false)
	if row := tagRow(t, body, "deb2"); !strings.Contains(row, "sev-") || strings.Contains(row, "at least") || strings.Contains(row, "incomplete") {
		t.Errorf("the row of a complete image with a finding:\n%s", row)
	}
	if row := tagRow(t, body, "mixed"); !strings.Contains(row, "at least") || !strings.Contains(row, "sev-") ||
		!strings.Contains(row, "incomplete data") || strings.Contains(row, "badge ok") {
		t.Errorf("the row of an incomplete image with a finding:\n%s", row)
	}
	_, body = get(t, ui, "/repository/acme/app/manifest/"+mixed, false)
	if !strings.Contains(body, `id="vulnerability-data"`) || !strings.Contains(body, "at least") || !strings.Contains(body, "apk packages") {
		t.Errorf("the manifest page of an incomplete image with a finding\n%s", body)
	}
}

// countingScanner counts the images whose coverage a page reads.
type countingScanner struct {
	web.Scanner
	coverages *int
}

func (c countingScanner) Coverages(ctx context.Context, digests []string) (map[string]scan.DataCoverage, error) {
	*c.coverages += len(digests)
	return c.Scanner.Coverages(ctx, digests)
}

// TestTagsPageBoundsCoverageReads: the tags page reads the data coverage
// of at most 50 images; an index whose platforms do not fit is "not
// checked", never "none known", and the rows that fit keep their answer.
func TestTagsPageBoundsCoverageReads(t *testing.T) {
	e := newScanEnv(t)
	var images []string
	for i := range 51 {
		images = append(images, e.push("acme/app", fmt.Sprint("v", i), map[string]string{"README": fmt.Sprint("image ", i)}))
	}
	e.pushIndex("acme/app", "multi", images...)
	e.drain()
	st := e.stores()
	reads := 0
	st.Scanner = countingScanner{st.Scanner, &reads}
	ui := newUI(t, st, web.Options{})
	status, body := get(t, ui, "/repository/acme/app", false)
	if status != http.StatusOK {
		t.Fatalf("GET the tags page = %d\n%.2000s", status, body)
	}
	if reads > 50 {
		t.Errorf("the tags page read the coverage of %d images, want at most 50", reads)
	}
	if row := tagRow(t, body, "multi"); !strings.Contains(row, "not checked") || strings.Contains(row, "none known") {
		t.Errorf("the row of an index of 51 images:\n%s", row)
	}
	if row := tagRow(t, body, "v50"); !strings.Contains(row, `<span class="badge ok">none known</span>`) {
		t.Errorf("the row of an image with complete data and no finding:\n%s", row)
	}
}

// countingResults counts the reads of whole scan reports
// (meta.Scans.ManifestScan) by the scanner.
type countingResults struct {
	scan.Results
	reports *int
}

func (c countingResults) ManifestScan(ctx context.Context, digest string) (meta.ManifestScan, error) {
	*c.reports++
	return c.Results.ManifestScan(ctx, digest)
}

// hiddenSummaries, with noSummaries, makes the scans look as if they had
// no coverage summary (as those stored before summaries were).
type hiddenSummaries struct {
	scan.Summaries
	noSummaries bool
}

func (c hiddenSummaries) ScanSummaries(ctx context.Context, digests []string) (map[string]meta.ScanSummary, error) {
	sums, err := c.Summaries.ScanSummaries(ctx, digests)
	if c.noSummaries {
		for d, s := range sums {
			s.Summary = nil
			sums[d] = s
		}
	}
	return sums, err
}

func (c hiddenSummaries) FillScanSummary(ctx context.Context, digest string, at time.Time, summary []byte) (bool, error) {
	if c.noSummaries {
		return false, nil
	}
	return c.Summaries.FillScanSummary(ctx, digest, at, summary)
}

// scannerCounting is the env's scanner counting its reads of whole scan
// reports in reports, and seeing no coverage summaries with noSummaries.
func (e *scanEnv) scannerCounting(reports *int, noSummaries bool) *scan.Service {
	ss := wire.ScanStores(e.db)
	ss.Results = countingResults{ss.Results, reports}
	ss.Summaries = hiddenSummaries{ss.Summaries, noSummaries}
	return scan.New(ss, e.driver, scan.Options{Host: e.host, Version: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// TestTagsPageReadsNoScanReport: the tags page of many scanned images
// says whether each one's data is complete without reading any image's
// whole scan report (tens of MB for an image of many packages): it reads
// the summaries stored with the reports.
func TestTagsPageReadsNoScanReport(t *testing.T) {
	e := newScanEnv(t)
	for i := range 30 {
		e.push("acme/app", fmt.Sprint("v", i), map[string]string{"README": fmt.Sprint("image ", i)})
	}
	e.push("acme/app", "deb", debianImage(nil))
	e.drain()
	reports := 0
	st := e.stores()
	st.Scanner = e.scannerCounting(&reports, false)
	ui := newUI(t, st, web.Options{Auth: readOnlyPublic{public: map[string]bool{"acme/app": true}}})
	status, body := get(t, ui, "/repository/acme/app", false)
	if status != http.StatusOK {
		t.Fatalf("GET the tags page = %d\n%.2000s", status, body)
	}
	if reports != 0 {
		t.Errorf("the tags page of 31 scanned images read %d whole scan reports, want none", reports)
	}
	for i := range 30 {
		if row := tagRow(t, body, fmt.Sprint("v", i)); !strings.Contains(row, `<span class="badge ok">none known</span>`) {
			t.Errorf("the row of an image with complete data and no finding:\n%s", row)
		}
	}
	if row := tagRow(t, body, "deb"); !strings.Contains(row, "no data") || !strings.Contains(row, "no advisories imported for Debian") {
		t.Errorf("the row of an image without data:\n%s", row)
	}
}

// TestTagsPageBoundsReportReadsWithoutSummaries: images scanned before
// coverage summaries were stored have their whole report read, two per
// page at most; the rows of the others say "not checked", never "none
// known".
func TestTagsPageBoundsReportReadsWithoutSummaries(t *testing.T) {
	e := newScanEnv(t)
	for i := range 10 {
		e.push("acme/app", fmt.Sprint("v", i), map[string]string{"README": fmt.Sprint("image ", i)})
	}
	e.drain()
	reports := 0
	st := e.stores()
	st.Scanner = e.scannerCounting(&reports, true)
	ui := newUI(t, st, web.Options{})
	status, body := get(t, ui, "/repository/acme/app", false)
	if status != http.StatusOK {
		t.Fatalf("GET the tags page = %d\n%.2000s", status, body)
	}
	if reports > 2 {
		t.Errorf("the tags page of 10 images without summaries read %d whole scan reports, want at most 2", reports)
	}
	clean, unchecked := 0, 0
	for i := range 10 {
		row := tagRow(t, body, fmt.Sprint("v", i))
		switch {
		case strings.Contains(row, `<span class="badge ok">none known</span>`):
			clean++
		case strings.Contains(row, "not checked"):
			unchecked++
		default:
			t.Errorf("the row of an image with complete data and no finding:\n%s", row)
		}
	}
	if clean != reports || unchecked != 10-reports {
		t.Errorf("%d rows clean and %d not checked after %d reports read", clean, unchecked, reports)
	}
	if reports == 0 {
		t.Error("no report read: the rows scanned before summaries are never checked")
	}
}
