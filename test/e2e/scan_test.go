package e2e

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// The Debian fixture of internal/scan (real .deb contents of Debian 12):
// zlib1g (source zlib), liblzma5 (source xz-utils), libbz2-1.0 (source bzip2).
const (
	scanZlibVersion = "1:1.2.13.dfsg-1"
	scanZlibFix     = "1:1.2.13.dfsg-1+deb12u1"
	scanXzVersion   = "5.4.1-1+deb12u2"
	scanVector98    = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H" // 9.8: Critical
	scanVector75    = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:N/A:N" // 7.5: High
	scanModified    = "2026-01-01T00:00:00Z"
	spdxType        = "application/spdx+json"
	scanDeadline    = 60 * time.Second
)

// Synthetic OSV records naming the fixture's source packages.
var (
	osvZlib = `{"id":"DEBIAN-CVE-2026-9001","modified":"` + scanModified + `","aliases":["CVE-2026-9001"],"summary":"zlib inflate overflow",
	  "severity":[{"type":"CVSS_V3","score":"` + scanVector98 + `"}],
	  "affected":[{"package":{"ecosystem":"Debian:12","name":"zlib"},
	    "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"` + scanZlibFix + `"}]}]}]}`
	// Fixed in exactly the installed version: does not affect the image.
	osvZlibFixed = `{"id":"DEBIAN-CVE-2026-9002","modified":"` + scanModified + `","summary":"zlib fixed long ago",
	  "severity":[{"type":"CVSS_V3","score":"` + scanVector98 + `"}],
	  "affected":[{"package":{"ecosystem":"Debian:12","name":"zlib"},
	    "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"` + scanZlibVersion + `"}]}]}]}`
	// The update: a High advisory for xz-utils, no fix yet.
	osvXz = `{"id":"DEBIAN-CVE-2026-9003","modified":"` + scanModified + `","summary":"xz decoder issue",
	  "severity":[{"type":"CVSS_V3","score":"` + scanVector75 + `"}],
	  "affected":[{"package":{"ecosystem":"Debian:12","name":"xz-utils"},
	    "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"last_affected":"` + scanXzVersion + `"}]}]}]}`
	// The last update (through the API): a Critical bzip2 advisory and an
	// Alpine one for the other image's musl.
	osvBzip2 = `{"id":"DEBIAN-CVE-2026-9004","modified":"` + scanModified + `","summary":"bzip2 overflow",
	  "severity":[{"type":"CVSS_V3","score":"` + scanVector98 + `"}],
	  "affected":[{"package":{"ecosystem":"Debian:12","name":"bzip2"},
	    "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]}`
	osvMusl = `{"id":"ALPINE-CVE-2026-9005","modified":"` + scanModified + `","summary":"musl issue",
	  "affected":[{"package":{"ecosystem":"Alpine:v3.19","name":"musl"},
	    "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1.2.4-r3"}]}]}]}`
)

// security is the part of Quay's security answer the tests read.
type security struct {
	Status string `json:"status"`
	Reason string `json:"reason"`
	Data   *struct {
		Layer struct {
			NamespaceName string `json:"NamespaceName"`
			Features      []struct {
				Name            string `json:"Name"`
				Version         string `json:"Version"`
				Vulnerabilities []struct {
					Name          string `json:"Name"`
					Severity      string `json:"Severity"`
					FixedBy       string `json:"FixedBy"`
					NamespaceName string `json:"NamespaceName"`
					Metadata      struct {
						NVD struct {
							CVSSv3 *struct {
								Vectors string  `json:"Vectors"`
								Score   float64 `json:"Score"`
							} `json:"CVSSv3"`
						} `json:"NVD"`
					} `json:"Metadata"`
				} `json:"Vulnerabilities"`
			} `json:"Features"`
		} `json:"Layer"`
	} `json:"data"`
}

func (s security) feature(name string) (int, bool) {
	if s.Data == nil {
		return 0, false
	}
	for i, f := range s.Data.Layer.Features {
		if f.Name == name {
			return i, true
		}
	}
	return 0, false
}

// vulnIDs lists the advisories of a package ("" if it is not in the report).
func (s security) vulnIDs(pkg string) []string {
	i, ok := s.feature(pkg)
	if !ok {
		return nil
	}
	ids := []string{}
	for _, v := range s.Data.Layer.Features[i].Vulnerabilities {
		ids = append(ids, v.Name)
	}
	return ids
}

func getSecurity(t *testing.T, repo, digest string) security {
	t.Helper()
	path := "/api/v1/repository/" + repo + "/manifest/" + digest + "/security?vulnerabilities=true"
	r := regDo(t, http.MethodGet, path, nil, nil)
	if r.Status != http.StatusOK {
		t.Fatalf("GET %s: %s", path, r)
	}
	var s security
	if err := json.Unmarshal(r.Body, &s); err != nil {
		t.Fatalf("GET %s: %v: %s", path, err, r.Body)
	}
	return s
}

// waitScanned polls the security endpoint until the scan is done.
func waitScanned(t *testing.T, repo, digest string) security {
	t.Helper()
	deadline := time.Now().Add(scanDeadline)
	for {
		s := getSecurity(t, repo, digest)
		switch s.Status {
		case "scanned":
			if s.Data == nil {
				t.Fatalf("%s@%s: scanned, but no data", repo, digest)
			}
			return s
		case "queued":
		default:
			t.Fatalf("%s@%s: scan status %q (%s), want scanned", repo, digest, s.Status, s.Reason)
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s@%s: still %q after %s", repo, digest, s.Status, scanDeadline)
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// berthCLI runs the berth binary TestMain built, with no BERTH_* setting of
// the machine.
func berthCLI(t *testing.T, args ...string) cmdResult {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), defaultCmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(runDir, "berth"), args...)
	cmd.Env = berthEnv()
	cmd.Dir = t.TempDir()
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("$ berth %s  [%s]", strings.Join(args, " "), exitText(err))
	if err != nil {
		t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	return cmdResult{Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
}

func exitCode(err error) int {
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	if err != nil {
		return -1
	}
	return 0
}

// importAdvisories runs `berth admin vulndb import` on the data directory of
// the running server, as an operator would next to it.
func importAdvisories(t *testing.T, records ...string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "advisories.json")
	if err := os.WriteFile(p, []byte("["+strings.Join(records, ",\n")+"]"), 0o644); err != nil {
		t.Fatal(err)
	}
	r := berthCLI(t, "admin", "vulndb", "import", p, "--data-dir", filepath.Join(runDir, "data"))
	if r.Err != nil {
		t.Fatalf("berth admin vulndb import: %v", r.Err)
	}
	return r.Stdout
}

// hookDelivery is one POST a webhook receiver got.
type hookDelivery struct {
	event string
	body  map[string]any
	raw   string
}

// hookReceiver is a webhook endpoint; each path is one notification.
type hookReceiver struct {
	*httptest.Server
	got map[string]chan hookDelivery
}

func newHookReceiver(t *testing.T, paths ...string) *hookReceiver {
	t.Helper()
	h := &hookReceiver{got: map[string]chan hookDelivery{}}
	for _, p := range paths {
		h.got[p] = make(chan hookDelivery, 20)
	}
	h.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		ch, ok := h.got[r.URL.Path]
		if !ok {
			w.WriteHeader(http.StatusNotFound)
			return
		}
		var body map[string]any
		if err := json.Unmarshal(b, &body); err != nil {
			body = nil
		}
		ch <- hookDelivery{event: r.Header.Get("X-Berth-Event"), body: body, raw: string(b)}
	}))
	t.Cleanup(h.Close)
	return h
}

// next waits for the next delivery to path.
func (h *hookReceiver) next(t *testing.T, path, what string) hookDelivery {
	t.Helper()
	select {
	case d := <-h.got[path]:
		t.Logf("webhook %s received %s: %s", path, d.event, d.raw)
		if d.body == nil {
			t.Fatalf("%s: the delivery to %s is not a JSON object: %s", what, path, d.raw)
		}
		return d
	case <-time.After(scanDeadline):
		t.Fatalf("%s: the receiver at %s got nothing within %s", what, path, scanDeadline)
	}
	return hookDelivery{}
}

// none checks that path has received nothing more.
func (h *hookReceiver) none(t *testing.T, path, why string) {
	t.Helper()
	select {
	case d := <-h.got[path]:
		t.Fatalf("%s: the receiver at %s got %s: %s", why, path, d.event, d.raw)
	default:
	}
}

// vulnDelivery checks a vulnerability_found delivery and returns its
// "vulnerability" (Quay's most severe finding).
func vulnDelivery(t *testing.T, d hookDelivery, repo, digest string) map[string]any {
	t.Helper()
	v, _ := d.body["vulnerability"].(map[string]any)
	if d.event != "vulnerability_found" || d.body["event"] != "vulnerability_found" || d.body["repository"] != repo ||
		d.body["digest"] != digest || d.body["docker_url"] != registryHost+"/"+repo || v == nil {
		t.Fatalf("want a vulnerability_found delivery for %s@%s, got %s: %s", repo, digest, d.event, d.raw)
	}
	return v
}

func createNotification(t *testing.T, repo, url string, eventConfig map[string]any) {
	t.Helper()
	body := map[string]any{"event": "vulnerability_found", "method": "webhook", "title": "scan e2e",
		"config": map[string]any{"url": url}}
	if eventConfig != nil {
		body["eventConfig"] = eventConfig
	}
	b, _ := json.Marshal(body)
	if r := regDo(t, http.MethodPost, "/api/v1/repository/"+repo+"/notification/", map[string]string{"Content-Type": "application/json"}, b); r.Status != http.StatusCreated {
		t.Fatalf("create notification on %s: %s", repo, r)
	}
}

// gzipLayer writes a gzipped tar of files (path → content).
func gzipLayer(t *testing.T, dir, name string, files map[string]string) string {
	t.Helper()
	var b bytes.Buffer
	zw := gzip.NewWriter(&b)
	tw := tar.NewWriter(zw)
	names := make([]string, 0, len(files))
	for n := range files {
		names = append(names, n)
	}
	slices.Sort(names)
	for _, n := range names {
		if err := tw.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(files[n])), Typeflag: tar.TypeReg}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[n])); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, b.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestScanVulnerabilities follows an image through Berth's scanner as a
// user sees it: advisories imported with `berth admin vulndb import` next to
// the running server, a Debian image pushed with crane, its Quay-shaped
// security report, the SPDX SBOM Berth attaches as a referrer (found and
// pulled with oras), `berth vulns` as a pipeline gate, and the
// vulnerability_found webhooks with Quay's level filter, at push and when a
// later advisory update affects the image.
func TestScanVulnerabilities(t *testing.T) {
	begin(t)
	if os.Getenv("BERTH_E2E_REGISTRY") != "" {
		t.Skip("needs the berth TestMain started (its binary and data directory), not BERTH_E2E_REGISTRY")
	}
	requireTool(t, "crane")
	requireTool(t, "oras")
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	fixture := filepath.Join(root, "internal/scan/index/testdata/debian-layer.tar.gz")
	if _, err := os.Stat(fixture); err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()

	// Advisories first, with the CLI, while the server runs.
	out := importAdvisories(t, osvZlib, osvZlibFixed)
	if !strings.Contains(out, "imported 2 records") || !strings.Contains(out, "2 applied") || !strings.Contains(out, "ecosystems: Debian") {
		t.Fatalf("berth admin vulndb import: %q", out)
	}
	r := berthCLI(t, "admin", "vulndb", "status", "--data-dir", filepath.Join(runDir, "data"))
	if r.Err != nil {
		t.Fatalf("berth admin vulndb status: %v", r.Err)
	}
	listed := false
	for _, line := range strings.Split(r.Stdout, "\n") {
		f := strings.Fields(line)
		listed = listed || len(f) == 3 && f[0] == "Debian" && f[1] == "2"
	}
	if !strings.HasPrefix(r.Stdout, "ECOSYSTEM") || !listed {
		t.Fatalf("berth admin vulndb status: %q, want Debian with 2 records", r.Stdout)
	}

	// Two repositories, made by a first push of a package-less image, each
	// with its webhooks: level 1 hears High and worse, level 0 only
	// Critical, no level everything.
	hooks := newHookReceiver(t, "/high", "/critical", "/alpine")
	repo := uniqueRepo(t, "debian")
	other := uniqueRepo(t, "alpine")
	ref := registryHost + "/" + repo
	otherRef := registryHost + "/" + other
	crane(t, "append", "-f", layerTar(t, work, "hello.txt", "hello"), "-t", ref+":clean")
	crane(t, "append", "-f", layerTar(t, work, "hello.txt", "hello"), "-t", otherRef+":seed")
	createNotification(t, repo, hooks.URL+"/high", map[string]any{"level": 1})
	createNotification(t, repo, hooks.URL+"/critical", map[string]any{"level": 0})
	createNotification(t, other, hooks.URL+"/alpine", nil)

	crane(t, "append", "-f", fixture, "-t", ref+":12")
	digest := strings.TrimSpace(crane(t, "digest", ref+":12"))
	alpine := gzipLayer(t, work, "alpine.tar.gz", map[string]string{
		"etc/os-release":       "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\"\n",
		"lib/apk/db/installed": "C:Q1abc=\nP:musl\nV:1.2.4-r2\nA:x86_64\no:musl\nT:the musl c library\n\nC:Q1ghi=\nP:busybox\nV:1.36.1-r15\nA:x86_64\no:busybox\nT:toolbox\n\n",
	})
	crane(t, "append", "-f", alpine, "-t", otherRef+":3.19")
	otherDigest := strings.TrimSpace(crane(t, "digest", otherRef+":3.19"))

	t.Run("report", func(t *testing.T) {
		s := waitScanned(t, repo, digest)
		if s.Data.Layer.NamespaceName != "debian:12" {
			t.Errorf("NamespaceName %q, want debian:12", s.Data.Layer.NamespaceName)
		}
		for _, pkg := range []string{"zlib1g", "liblzma5", "libbz2-1.0"} {
			if _, ok := s.feature(pkg); !ok {
				t.Errorf("package %s not in the report", pkg)
			}
		}
		i, ok := s.feature("zlib1g")
		if !ok {
			t.FailNow()
		}
		zlib := s.Data.Layer.Features[i]
		if zlib.Version != scanZlibVersion || len(zlib.Vulnerabilities) != 1 {
			t.Fatalf("zlib1g %s: %v, want %s with only DEBIAN-CVE-2026-9001 (9002 is fixed in it)", zlib.Version, s.vulnIDs("zlib1g"), scanZlibVersion)
		}
		v := zlib.Vulnerabilities[0]
		if v.Name != "DEBIAN-CVE-2026-9001" || v.Severity != "Critical" || v.FixedBy != scanZlibFix || v.NamespaceName != "debian:12" ||
			v.Metadata.NVD.CVSSv3 == nil || v.Metadata.NVD.CVSSv3.Score != 9.8 || v.Metadata.NVD.CVSSv3.Vectors != scanVector98 {
			t.Fatalf("zlib1g vulnerability: %+v", v)
		}
		for _, pkg := range []string{"liblzma5", "libbz2-1.0"} {
			if ids := s.vulnIDs(pkg); len(ids) != 0 {
				t.Errorf("%s: vulnerabilities %v, want none", pkg, ids)
			}
		}
		a := waitScanned(t, other, otherDigest)
		if _, ok := a.feature("musl"); !ok || a.Data.Layer.NamespaceName != "alpine:v3.19" {
			t.Errorf("alpine image: namespace %q, musl listed %v", a.Data.Layer.NamespaceName, ok)
		}
		if ids := a.vulnIDs("musl"); len(ids) != 0 {
			t.Errorf("alpine image: musl vulnerabilities %v, want none yet", ids)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	t.Run("sbom-referrer", func(t *testing.T) {
		requireTool(t, "oras")
		// The SBOM is attached right after the report is stored.
		var sbomDigest string
		deadline := time.Now().Add(scanDeadline)
		for sbomDigest == "" {
			idx, _ := referrers(t, repo, digest, "")
			for _, m := range idx.Manifests {
				if string(m.ArtifactType) == spdxType {
					sbomDigest = m.Digest.String()
				}
			}
			if sbomDigest == "" {
				if time.Now().After(deadline) {
					t.Fatalf("no %s referrer of %s@%s after %s", spdxType, repo, digest, scanDeadline)
				}
				time.Sleep(250 * time.Millisecond)
			}
		}
		var d struct {
			Digest    string `json:"digest"`
			Referrers []struct {
				Digest       string            `json:"digest"`
				MediaType    string            `json:"mediaType"`
				ArtifactType string            `json:"artifactType"`
				Annotations  map[string]string `json:"annotations"`
			} `json:"referrers"`
		}
		raw := mustRun(t, opts{Dir: work}, "oras", "discover", "--plain-http", "--format", "json", ref+":12")
		if err := json.Unmarshal([]byte(raw), &d); err != nil {
			t.Fatalf("oras discover: %v\n%s", err, raw)
		}
		if d.Digest != digest || len(d.Referrers) != 1 || d.Referrers[0].Digest != sbomDigest || d.Referrers[0].ArtifactType != spdxType ||
			d.Referrers[0].MediaType != mtOCIManifest || d.Referrers[0].Annotations["dev.berth.sbom"] != "spdx" {
			t.Fatalf("oras discover: %s; want one %s referrer %s annotated dev.berth.sbom=spdx", raw, spdxType, sbomDigest)
		}
		// The tags are untouched (no referrers fallback tag).
		if tags := tagList(t, repo); !slices.Equal(tags, []string{"12", "clean"}) {
			t.Errorf("tags %v, want [12 clean]", tags)
		}
		dir := mkdir(t, filepath.Join(work, "sbom"))
		mustRun(t, opts{Dir: work}, "oras", "pull", "--plain-http", "-o", dir, ref+"@"+sbomDigest)
		b, err := os.ReadFile(filepath.Join(dir, "sbom.spdx.json"))
		if err != nil {
			t.Fatalf("oras pull of the SBOM: %v", err)
		}
		var doc struct {
			SPDXVersion string `json:"spdxVersion"`
			Packages    []struct {
				Name        string `json:"name"`
				VersionInfo string `json:"versionInfo"`
			} `json:"packages"`
		}
		if err := json.Unmarshal(b, &doc); err != nil || doc.SPDXVersion != "SPDX-2.3" {
			t.Fatalf("the SBOM is not SPDX 2.3 JSON (%v): %.500s", err, b)
		}
		found := false
		for _, p := range doc.Packages {
			found = found || p.Name == "zlib1g" && p.VersionInfo == scanZlibVersion
		}
		if !found || !strings.Contains(string(b), "pkg:deb/debian/zlib1g@") {
			t.Fatalf("the SBOM has no zlib1g %s: %.2000s", scanZlibVersion, b)
		}
	})

	t.Run("berth-vulns", func(t *testing.T) {
		image := ref + ":12"
		for _, failOn := range []string{"High", "Critical"} {
			r := berthCLI(t, "vulns", image, "--insecure", "--fail-on", failOn)
			if code := exitCode(r.Err); code != 3 {
				t.Fatalf("berth vulns --fail-on %s: exit %d, want 3 (a Critical vulnerability)", failOn, code)
			}
			var row []string
			for _, line := range strings.Split(r.Stdout, "\n") {
				if f := strings.Fields(line); len(f) == 5 && f[1] == "zlib1g" {
					row = f
				}
			}
			if want := []string{"Critical", "zlib1g", scanZlibVersion, scanZlibFix, "DEBIAN-CVE-2026-9001"}; !slices.Equal(row, want) {
				t.Fatalf("berth vulns: zlib1g row %q, want %q in:\n%s", row, want, r.Stdout)
			}
			if !strings.Contains(r.Stdout, "SEVERITY") || !strings.Contains(r.Stdout, "1 vulnerabilities: 1 Critical") {
				t.Fatalf("berth vulns output:\n%s", r.Stdout)
			}
		}
		// Without a gate it only reports.
		if r := berthCLI(t, "vulns", image, "--insecure"); r.Err != nil {
			t.Fatalf("berth vulns without --fail-on: %v", r.Err)
		}
		// --json is Quay's shape.
		r := berthCLI(t, "vulns", image, "--insecure", "--json", "--wait", "60s")
		var s security
		if err := json.Unmarshal([]byte(r.Stdout), &s); r.Err != nil || err != nil || s.Status != "scanned" ||
			!slices.Equal(s.vulnIDs("zlib1g"), []string{"DEBIAN-CVE-2026-9001"}) {
			t.Fatalf("berth vulns --json: %v %v:\n%s", r.Err, err, r.Stdout)
		}
		// A clean image passes the gate: it waits for the scan, then exits 0.
		r = berthCLI(t, "vulns", ref+":clean", "--insecure", "--fail-on", "Unknown", "--wait", "60s")
		if r.Err != nil || !strings.Contains(r.Stdout, "0 vulnerabilities: none") {
			t.Fatalf("berth vulns on a package-less image: %v, want exit 0 and no vulnerabilities:\n%s", r.Err, r.Stdout)
		}
		// No Alpine advisory is imported yet: the gate does not call the
		// image clean (exit 4, with the reason), unless told to accept it.
		if r := berthCLI(t, "vulns", otherRef+":3.19", "--insecure", "--fail-on", "Unknown"); exitCode(r.Err) != 4 ||
			!strings.Contains(r.Stderr, "no vulnerability data for Alpine:v3.19") {
			t.Fatalf("berth vulns on the Alpine image (no Alpine data yet): %v, want exit 4 naming Alpine:v3.19:\n%s", r.Err, r.Stderr)
		}
		if r := berthCLI(t, "vulns", otherRef+":3.19", "--insecure", "--fail-on", "Unknown", "--allow-missing-data"); r.Err != nil {
			t.Fatalf("berth vulns --allow-missing-data on the Alpine image: %v", r.Err)
		}
		// An error is exit 1, not the gate's 3.
		if r := berthCLI(t, "vulns", ref+":nosuchtag", "--insecure", "--fail-on", "High"); exitCode(r.Err) != 1 {
			t.Fatalf("berth vulns on a missing tag: %v, want exit 1", r.Err)
		}
	})

	t.Run("webhooks", func(t *testing.T) {
		// The push: the zlib finding is Critical, heard at levels 1 and 0.
		for _, path := range []string{"/high", "/critical"} {
			d := hooks.next(t, path, "vulnerability_found of the push")
			v := vulnDelivery(t, d, repo, digest)
			if v["id"] != "DEBIAN-CVE-2026-9001" || v["priority"] != "Critical" || v["has_fix"] != true {
				t.Fatalf("%s: vulnerability %v, want DEBIAN-CVE-2026-9001, Critical, with a fix", path, v)
			}
			if tags, _ := d.body["tags"].([]any); !slices.Equal(tags, []any{"12"}) {
				t.Fatalf("%s: tags %v, want [12]", path, d.body["tags"])
			}
		}

		// An update for xz-utils, another package of the same image: only
		// the new High finding is announced, for that image only.
		out := importAdvisories(t, osvZlib, osvZlibFixed, osvXz)
		if !strings.Contains(out, "1 applied") || !strings.Contains(out, "2 unchanged") {
			t.Fatalf("berth admin vulndb import of the update: %q, want 1 applied, 2 unchanged", out)
		}
		d := hooks.next(t, "/high", "vulnerability_found after the xz-utils update")
		v := vulnDelivery(t, d, repo, digest)
		all, _ := d.body["vulnerabilities"].([]any)
		if v["id"] != "DEBIAN-CVE-2026-9003" || v["priority"] != "High" || v["has_fix"] != false || len(all) != 1 {
			t.Fatalf("after the update: vulnerability %v, all %v; want only DEBIAN-CVE-2026-9003, High, no fix", v, all)
		}
		s := getSecurity(t, repo, digest)
		if ids := s.vulnIDs("liblzma5"); !slices.Equal(ids, []string{"DEBIAN-CVE-2026-9003"}) {
			t.Fatalf("report after the update: liblzma5 %v", ids)
		}
		if ids := s.vulnIDs("zlib1g"); !slices.Equal(ids, []string{"DEBIAN-CVE-2026-9001"}) {
			t.Fatalf("report after the update: zlib1g %v", ids)
		}

		// A last update through the API (a zip, as osv.dev publishes):
		// Critical for bzip2 in the Debian image, and one for the Alpine
		// image's musl. Each receiver's next delivery is this update's, so
		// nothing came before it: level 0 did not hear the High xz finding,
		// and the Alpine repository nothing of the Debian image.
		var zb bytes.Buffer
		zw := zip.NewWriter(&zb)
		for name, rec := range map[string]string{"DEBIAN-CVE-2026-9004.json": osvBzip2, "ALPINE-CVE-2026-9005.json": osvMusl} {
			f, err := zw.Create(name)
			if err != nil {
				t.Fatal(err)
			}
			f.Write([]byte(rec))
		}
		if err := zw.Close(); err != nil {
			t.Fatal(err)
		}
		if r := regDo(t, http.MethodPost, "/api/v1/superuser/vulndb", map[string]string{"Content-Type": "application/zip"}, zb.Bytes()); r.Status != http.StatusOK ||
			!strings.Contains(string(r.Body), `"applied":2`) {
			t.Fatalf("POST /api/v1/superuser/vulndb: %s", r)
		}
		for _, path := range []string{"/critical", "/high"} {
			v := vulnDelivery(t, hooks.next(t, path, "vulnerability_found after the bzip2 update"), repo, digest)
			if v["id"] != "DEBIAN-CVE-2026-9004" || v["priority"] != "Critical" {
				t.Fatalf("%s: vulnerability %v, want DEBIAN-CVE-2026-9004 (Critical); level 0 must not hear the High xz-utils one", path, v)
			}
		}
		v = vulnDelivery(t, hooks.next(t, "/alpine", "vulnerability_found for musl"), other, otherDigest)
		if v["id"] != "ALPINE-CVE-2026-9005" || v["has_fix"] != true {
			t.Fatalf("/alpine: vulnerability %v, want ALPINE-CVE-2026-9005 (the Debian updates are not this image's)", v)
		}
		r := regDo(t, http.MethodGet, "/api/v1/superuser/vulndb", nil, nil)
		var st struct {
			Ecosystems []struct {
				Ecosystem string `json:"ecosystem"`
				Records   int    `json:"records"`
			} `json:"ecosystems"`
		}
		if err := json.Unmarshal(r.Body, &st); r.Status != http.StatusOK || err != nil {
			t.Fatalf("GET /api/v1/superuser/vulndb: %s", r)
		}
		got := map[string]int{}
		for _, e := range st.Ecosystems {
			got[e.Ecosystem] = e.Records
		}
		if got["Debian"] != 4 || got["Alpine"] != 1 {
			t.Fatalf("GET /api/v1/superuser/vulndb: %s, want Debian 4 records and Alpine 1", r.Body)
		}
		for _, path := range []string{"/high", "/critical", "/alpine"} {
			hooks.none(t, path, "no other vulnerability was found")
		}
	})
}
