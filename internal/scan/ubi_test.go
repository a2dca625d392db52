package scan_test

import (
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
)

// ubiLayer is a UBI 8 image's layer as Red Hat's build system makes it:
// os-release, the SQLite rpm database (the real headers of zlib
// 1.2.11-18.el8_5, gdbm-libs 1:1.18-1.el8 and which 2.21-17.el8 from a
// UBI 8 image, testdata/gen-ubi8-rpmdb.go) and the content manifest
// naming the content sets the RPMs came from.
func ubiLayer(t *testing.T) v1.Layer {
	t.Helper()
	db, err := os.ReadFile("testdata/ubi8-rpmdb.sqlite")
	if err != nil {
		t.Fatal(err)
	}
	return layer(t, map[string]string{
		"etc/os-release": "NAME=\"Red Hat Enterprise Linux\"\nVERSION=\"8.6 (Ootpa)\"\nID=\"rhel\"\nID_LIKE=\"fedora\"\nVERSION_ID=\"8.6\"\n" +
			"PLATFORM_ID=\"platform:el8\"\nCPE_NAME=\"cpe:/o:redhat:enterprise_linux:8::baseos\"\n",
		"var/lib/rpm/rpmdb.sqlite": string(db),
		"root/buildinfo/content_manifests/ubi8-container-8.6-754.json": `{
  "metadata": {"icm_version": 1, "icm_spec": "https://raw.githubusercontent.com/containerbuildsystem/atomic-reactor/master/atomic_reactor/schemas/content_manifest.json", "image_layer_index": 0},
  "content_sets": ["rhel-8-for-s390x-baseos-rpms", "rhel-8-for-s390x-appstream-rpms"],
  "image_contents": [
    {"purl": "pkg:rpm/redhat/zlib@1.2.11-18.el8_5?arch=s390x"},
    {"purl": "pkg:rpm/redhat/gdbm-libs@1.18-1.el8?arch=s390x&epoch=1"},
    {"purl": "pkg:rpm/redhat/which@2.21-17.el8?arch=s390x"}
  ]
}`,
		"root/buildinfo/Dockerfile-ubi8-8.6-754": "FROM scratch\nLABEL com.redhat.component=\"ubi8-container\"\n",
	})
}

// ubiMapping is a repository-to-cpe.json in Red Hat's shape, trimmed to
// the content sets of RHEL 8 on s390x and x86_64.
const ubiMapping = `{"data": {
  "rhel-8-for-s390x-baseos-rpms": {"cpes": ["cpe:/o:redhat:enterprise_linux:8::baseos", "cpe:/o:redhat:rhel_eus:8.6::baseos"]},
  "rhel-8-for-s390x-appstream-rpms": {"cpes": ["cpe:/a:redhat:enterprise_linux:8::appstream"]},
  "rhel-8-for-x86_64-baseos-rpms": {"cpes": ["cpe:/o:redhat:enterprise_linux:8::baseos"]},
  "rhel-9-for-s390x-baseos-rpms": {"cpes": ["cpe:/o:redhat:enterprise_linux:9::baseos"]}
}}`

// rhsa is a record in Red Hat's OSV shape: one affected entry per binary
// RPM and CPE ecosystem, an ECOSYSTEM range fixed at epoch:version-release.
func rhsa(id, severity string, affected ...[3]string) string {
	var entries []string
	for _, a := range affected { // ecosystem, name, fixed
		entries = append(entries, `{"package": {"ecosystem": "`+a[0]+`", "name": "`+a[1]+`", "purl": "pkg:rpm/redhat/`+a[1]+`"},
      "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "`+a[2]+`"}]}]}`)
	}
	return `{"schema_version": "1.6.3", "id": "` + id + `", "modified": "` + modifiedBase + `", "published": "2022-10-25T00:00:00Z",
  "summary": "` + severity + `: ` + id + `", "details": "An update is now available.", "aliases": ["CVE-` + strings.TrimPrefix(strings.ReplaceAll(id, ":", "-"), "RHSA-") + `"],
  "database_specific": {"severity": "` + severity + `"},
  "references": [{"type": "ADVISORY", "url": "https://access.redhat.com/errata/` + id + `"}],
  "affected": [` + strings.Join(entries, ",") + `]}`
}

// TestUBIContentSetMapping: a UBI image's RPMs match Red Hat's records in
// the CPE ecosystems of its content sets once repository-to-cpe.json is
// imported; before, only bare "Red Hat" records match, as they always did.
func TestUBIContentSetMapping(t *testing.T) {
	const (
		baseos    = "Red Hat:enterprise_linux:8::baseos"
		appstream = "Red Hat:enterprise_linux:8::appstream"
	)
	records := []string{
		// zlib in RHEL 8 BaseOS (and a package the image lacks), fixed
		// after the installed 1.2.11-18.el8_5 (no epoch: epoch 0).
		rhsa("RHSA-2022:7106", "Moderate", [3]string{baseos, "zlib", "0:1.2.11-19.el8_6"}, [3]string{baseos, "zlib-devel", "0:1.2.11-19.el8_6"}),
		// gdbm-libs in RHEL 8 AppStream: epoch 1 on both sides.
		rhsa("RHSA-2023:0101", "Important", [3]string{appstream, "gdbm-libs", "1:1.18-2.el8"}),
		// Fixed in the installed version: nothing.
		rhsa("RHSA-2021:0001", "Low", [3]string{baseos, "zlib", "0:1.2.11-18.el8_5"}),
		// which only in RHEL 9: no CPE of this image.
		rhsa("RHSA-2023:0202", "Critical", [3]string{"Red Hat:enterprise_linux:9::baseos", "which", "0:2.21-29.el9"}),
		// The bare ecosystem matches any Red Hat image, as before.
		`{"id": "RHSA-2020:0001", "modified": "` + modifiedBase + `", "summary": "bare", "database_specific": {"severity": "Low"},
		  "affected": [{"package": {"ecosystem": "Red Hat", "name": "zlib"}, "ranges": [{"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": "1.2.11-20.el8"}]}]}]}`,
	}
	vulnsOf := func(info scan.SecurityInfo, pkg string) map[string]string { // id → namespace fixed-by
		f := feature(info, pkg)
		if f == nil {
			t.Fatalf("no feature %s in %+v", pkg, info)
		}
		out := map[string]string{}
		for _, v := range f.Vulnerabilities {
			out[v.Name] = v.NamespaceName + " " + v.FixedBy
		}
		return out
	}
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, index.Limits{})
			e.importJSON(records...)
			ubi, _ := e.push("ubi8/ubi", "8.6", ubiLayer(t))
			e.drain()

			// Without the mapping: only the bare record, as before.
			info := e.security("ubi8/ubi", ubi)
			if info.Status != meta.ScanScanned || info.Data.Layer.NamespaceName != "red hat" {
				t.Fatalf("scan: %s %+v", info.Status, info.Data)
			}
			if got, want := info.Data.Layer.ContentSets, []string{"rhel-8-for-s390x-appstream-rpms", "rhel-8-for-s390x-baseos-rpms"}; !slices.Equal(got, want) {
				t.Fatalf("content sets %v, want %v", got, want)
			}
			if len(info.Data.Layer.CPEs) != 0 {
				t.Fatalf("CPEs without a mapping: %v", info.Data.Layer.CPEs)
			}
			if got := vulnsOf(info, "zlib"); len(got) != 1 || got["RHSA-2020:0001"] != "red hat 1.2.11-20.el8" {
				t.Fatalf("zlib without the mapping: %v", got)
			}
			for _, p := range []string{"gdbm-libs", "which"} {
				if got := vulnsOf(info, p); len(got) != 0 {
					t.Fatalf("%s without the mapping: %v", p, got)
				}
			}
			_, last := e.events(0, "")

			// The mapping is imported: the image's matches are redone in
			// the background and the new ones announced.
			if n, err := scan.ImportCPEMapping(ctx, e.db.VulnDB(), strings.NewReader(ubiMapping)); err != nil || n != 4 {
				t.Fatalf("import mapping: %d %v", n, err)
			}
			e.drain()
			found, last2 := e.events(last, meta.EventVulnerabilityFound)
			if len(found) != 1 || found[0]["digest"] != ubi {
				t.Fatalf("after the mapping, announced: %v", found)
			}
			var announced []string
			for _, v := range found[0]["vulnerabilities"].([]any) {
				announced = append(announced, v.(map[string]any)["id"].(string))
			}
			if slices.Sort(announced); !slices.Equal(announced, []string{"RHSA-2022:7106", "RHSA-2023:0101"}) {
				t.Fatalf("announced %v", announced)
			}
			info = e.security("ubi8/ubi", ubi)
			wantCPEs := []string{"cpe:/a:redhat:enterprise_linux:8::appstream", "cpe:/o:redhat:enterprise_linux:8::baseos", "cpe:/o:redhat:rhel_eus:8.6::baseos"}
			if !slices.Equal(info.Data.Layer.CPEs, wantCPEs) {
				t.Fatalf("CPEs %v, want %v", info.Data.Layer.CPEs, wantCPEs)
			}
			if got := vulnsOf(info, "zlib"); len(got) != 2 || got["RHSA-2022:7106"] != "red hat:enterprise_linux:8::baseos 0:1.2.11-19.el8_6" ||
				got["RHSA-2020:0001"] != "red hat 1.2.11-20.el8" {
				t.Fatalf("zlib: %v", got)
			}
			if got := vulnsOf(info, "gdbm-libs"); len(got) != 1 || got["RHSA-2023:0101"] != "red hat:enterprise_linux:8::appstream 1:1.18-2.el8" {
				t.Fatalf("gdbm-libs: %v", got)
			}
			if got := vulnsOf(info, "which"); len(got) != 0 {
				t.Fatalf("which has an advisory only for RHEL 9: %v", got)
			}
			if f := feature(info, "gdbm-libs"); f.Vulnerabilities[0].Severity != "High" || f.Vulnerabilities[0].Link != "https://access.redhat.com/errata/RHSA-2023:0101" {
				t.Fatalf("gdbm-libs advisory: %+v", f.Vulnerabilities[0])
			}
			stored, err := e.db.Scans().ManifestVulns(ctx, ubi)
			if err != nil {
				t.Fatal(err)
			}
			if got := vulnRowIDs(stored); !slices.Equal(got, []string{"RHSA-2020:0001 zlib@1.2.11-18.el8_5", "RHSA-2022:7106 zlib@1.2.11-18.el8_5", "RHSA-2023:0101 gdbm-libs@1:1.18-1.el8"}) {
				t.Fatalf("stored matches: %v", got)
			}

			// A new advisory in a CPE ecosystem of the image reaches it
			// through the package index (no layer read again).
			e.importJSON(rhsa("RHSA-2024:0303", "Moderate", [3]string{"Red Hat:rhel_eus:8.6::baseos", "which", "0:2.21-18.el8_6"}))
			e.drain()
			found, _ = e.events(last2, meta.EventVulnerabilityFound)
			if len(found) != 1 || found[0]["vulnerability"].(map[string]any)["id"] != "RHSA-2024:0303" {
				t.Fatalf("new advisory announced: %v", found)
			}
			if got := vulnsOf(e.security("ubi8/ubi", ubi), "which"); got["RHSA-2024:0303"] != "red hat:rhel_eus:8.6::baseos 0:2.21-18.el8_6" {
				t.Fatalf("which after a EUS advisory: %v", got)
			}

			// An image pushed now is matched through the mapping at once.
			app, _ := e.push("acme/app", "1", ubiLayer(t), layer(t, map[string]string{"opt/app/README": "app"}))
			e.drain()
			if got := vulnsOf(e.security("acme/app", app), "gdbm-libs"); len(got) != 1 {
				t.Fatalf("new image gdbm-libs: %v", got)
			}
			_, last3 := e.events(0, "")

			// The mapping changes: AppStream's content set goes. Its
			// matches go, without an announcement; the others stay.
			smaller := strings.Replace(ubiMapping, `"rhel-8-for-s390x-appstream-rpms": {"cpes": ["cpe:/a:redhat:enterprise_linux:8::appstream"]},`, "", 1)
			if n, err := scan.ImportCPEMapping(ctx, e.db.VulnDB(), strings.NewReader(smaller)); err != nil || n != 3 {
				t.Fatalf("import smaller mapping: %d %v", n, err)
			}
			e.drain()
			if again, _ := e.events(last3, meta.EventVulnerabilityFound); len(again) != 0 {
				t.Fatalf("a removal announced: %v", again)
			}
			for _, d := range []string{ubi, app} {
				stored, err := e.db.Scans().ManifestVulns(ctx, d)
				if err != nil {
					t.Fatal(err)
				}
				if got := vulnRowIDs(stored); !slices.Equal(got, []string{"RHSA-2020:0001 zlib@1.2.11-18.el8_5", "RHSA-2022:7106 zlib@1.2.11-18.el8_5", "RHSA-2024:0303 which@2.21-17.el8"}) {
					t.Fatalf("stored matches of %s after the change: %v", d, got)
				}
			}
			if got := vulnsOf(e.security("ubi8/ubi", ubi), "gdbm-libs"); len(got) != 0 {
				t.Fatalf("gdbm-libs after AppStream left the mapping: %v", got)
			}
		})
	}
}

func vulnRowIDs(vs []meta.ScanVuln) []string {
	var out []string
	for _, v := range vs {
		out = append(out, v.VulnID+" "+v.Package)
	}
	slices.Sort(out)
	return out
}

// TestUBIScannedBeforeContentManifests: an image indexed before content
// manifests were read (an older indexer) is scanned again when the
// mapping arrives, and then matched through it.
func TestUBIScannedBeforeContentManifests(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "sqlite", index.Limits{})
	ubi, _ := e.push("ubi8/ubi", "8.6", ubiLayer(t))
	e.drain()
	// What the previous indexer stored: no content sets, packages under
	// bare "Red Hat".
	ms, err := e.db.Scans().ManifestScan(ctx, ubi)
	if err != nil {
		t.Fatal(err)
	}
	var rep map[string]any
	if err := json.Unmarshal(ms.Report, &rep); err != nil {
		t.Fatal(err)
	}
	delete(rep, "contentSets")
	old, _ := json.Marshal(rep)
	if err := e.db.Scans().SaveScan(ctx, meta.ScanResult{Digest: ubi, Status: meta.ScanScanned, IndexerVersion: index.IndexerVersion - 1, Report: old,
		Packages: []meta.ScanPackage{{Ecosystem: "Red Hat", Name: "zlib", Version: "1.2.11-18.el8_5"}}}); err != nil {
		t.Fatal(err)
	}
	e.importJSON(rhsa("RHSA-2022:7106", "Moderate", [3]string{"Red Hat:enterprise_linux:8::baseos", "zlib", "0:1.2.11-19.el8_6"}))
	e.drain()
	if got := vulnNames(feature(e.security("ubi8/ubi", ubi), "zlib")); len(got) != 0 {
		t.Fatalf("matched before the mapping: %v", got)
	}
	if _, err := scan.ImportCPEMapping(ctx, e.db.VulnDB(), strings.NewReader(ubiMapping)); err != nil {
		t.Fatal(err)
	}
	e.drain()
	info := e.security("ubi8/ubi", ubi)
	if info.Data.Layer.IndexedByVersion != index.IndexerVersion || len(info.Data.Layer.ContentSets) != 2 {
		t.Fatalf("not indexed again: version %d, content sets %v", info.Data.Layer.IndexedByVersion, info.Data.Layer.ContentSets)
	}
	if got := vulnNames(feature(info, "zlib")); !slices.Equal(got, []string{"RHSA-2022:7106"}) {
		t.Fatalf("zlib after the mapping: %v", got)
	}
}
