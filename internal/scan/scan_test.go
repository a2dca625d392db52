package scan_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/scan/index"
)

// The Debian fixture's real versions (see index/testdata/README.md).
const (
	zlibVersion  = "1:1.2.13.dfsg-1" // zlib1g, source zlib
	bzip2Source  = "1.0.8-5"         // libbz2-1.0 1.0.8-5+b1, source bzip2
	xzVersion    = "5.4.1-1+deb12u2" // liblzma5, source xz-utils
	vector98     = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"
	vector100    = "CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:C/C:H/I:H/A:H"
	vector55     = "CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N"
	modifiedBase = "2026-01-01T00:00:00Z"
)

// debianRecords name the fixture's packages with ranges that do and do
// not include the installed versions.
var debianRecords = []string{
	// Affected (fixed later); Debian urgency "low" is Medium in Clair's
	// scale; the NVD vector scores 9.8, more than 2 points above Medium's
	// 6: reclassified Critical by NVD.
	`{"id":"DEBIAN-CVE-2026-0001","modified":"` + modifiedBase + `","aliases":["CVE-2026-0001"],"summary":"zlib overflow",
	  "severity":[{"type":"CVSS_V3","score":"` + vector98 + `"}],
	  "affected":[{"package":{"ecosystem":"Debian:12","name":"zlib"},"ecosystem_specific":{"urgency":"low"},
	    "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1:1.2.13.dfsg-1+deb12u1"}]}]}]}`,
	// Fixed in exactly the installed version: not affected.
	`{"id":"DEBIAN-CVE-2026-0002","modified":"` + modifiedBase + `","summary":"zlib already fixed",
	  "affected":[{"package":{"ecosystem":"Debian:12","name":"zlib"},
	    "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"` + zlibVersion + `"}]}]}]}`,
	// last_affected is inclusive; no vendor severity, a 10.0 vector: Critical.
	`{"id":"DEBIAN-CVE-2026-0003","modified":"` + modifiedBase + `","summary":"xz backdoor-ish",
	  "severity":[{"type":"CVSS_V3","score":"` + vector100 + `"}],
	  "affected":[{"package":{"ecosystem":"Debian:12","name":"xz-utils"},
	    "ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"last_affected":"` + xzVersion + `"}]}]}]}`,
	// Withdrawn: never shown, though its range includes the version.
	`{"id":"DEBIAN-CVE-2026-0004","modified":"` + modifiedBase + `","withdrawn":"2026-01-02T00:00:00Z","summary":"withdrawn",
	  "affected":[{"package":{"ecosystem":"Debian:12","name":"bzip2"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]}`,
	// Another release: not this image's.
	`{"id":"DEBIAN-CVE-2026-0005","modified":"` + modifiedBase + `","summary":"bookworm only not",
	  "affected":[{"package":{"ecosystem":"Debian:11","name":"zlib"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]}`,
	// A bare ecosystem and versions[]: affected; "unimportant" is Low; a
	// 5.5 vector is not more than 2 above Low's 3... it is (5.5 > 5): reclassified Medium.
	`{"id":"DEBIAN-CVE-2026-0006","modified":"` + modifiedBase + `","summary":"bzip2 by version list",
	  "severity":[{"type":"CVSS_V3","score":"` + vector55 + `"}],
	  "affected":[{"package":{"ecosystem":"Debian","name":"bzip2"},"ecosystem_specific":{"urgency":"unimportant"},"versions":["` + bzip2Source + `"]}]}`,
	// The binary name is not what Debian advisories name: no match on it.
	`{"id":"DEBIAN-CVE-2026-0007","modified":"` + modifiedBase + `","summary":"binary name",
	  "affected":[{"package":{"ecosystem":"Debian:12","name":"zlib1g"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]}`,
}

func TestDebianImageReport(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, index.Limits{})
			st := e.importJSON(debianRecords...)
			if st.Applied != len(debianRecords) || st.Withdrawn != 1 || st.Rejected != 0 {
				t.Fatalf("import: %+v", st)
			}
			app := layer(t, map[string]string{"app/README": "hello"})
			dgst, layers := e.push("acme/app", "1.0", debianLayer(t), app)
			if got := e.security("acme/app", dgst); got.Status != meta.ScanQueued {
				t.Fatalf("before the job ran: status %q", got.Status)
			}
			e.drain()
			info := e.security("acme/app", dgst)
			if info.Status != meta.ScanScanned || info.Data == nil {
				t.Fatalf("status %q reason %q", info.Status, info.Reason)
			}
			l := info.Data.Layer
			if l.Name != dgst || l.NamespaceName != "debian:12" || l.IndexedByVersion != index.IndexerVersion {
				t.Fatalf("layer: %+v", l)
			}
			var names []string
			for _, f := range l.Features {
				names = append(names, f.Name)
				if f.AddedBy != layers[0] || f.VersionFormat != "dpkg" || f.NamespaceName != "debian:12" {
					t.Errorf("%s: AddedBy %s VersionFormat %s NamespaceName %s", f.Name, f.AddedBy, f.VersionFormat, f.NamespaceName)
				}
			}
			slices.Sort(names)
			if want := []string{"base-files", "libbz2-1.0", "liblzma5", "zlib1g"}; !slices.Equal(names, want) {
				t.Fatalf("features %v, want %v", names, want)
			}

			zlib := feature(info, "zlib1g")
			if zlib.Version != zlibVersion || !slices.Equal(vulnNames(zlib), []string{"DEBIAN-CVE-2026-0001"}) {
				t.Fatalf("zlib1g: version %s vulnerabilities %v", zlib.Version, vulnNames(zlib))
			}
			v := zlib.Vulnerabilities[0]
			if v.Severity != "Critical" || v.FixedBy != "1:1.2.13.dfsg-1+deb12u1" || v.NamespaceName != "debian:12" ||
				v.Description != "zlib overflow" || v.Link == "" || v.Metadata.NVD.CVSSv3 == nil ||
				v.Metadata.NVD.CVSSv3.Score != 9.8 || v.Metadata.NVD.CVSSv3.Vectors != vector98 ||
				v.Metadata.Reclassified == nil || v.Metadata.Reclassified.From != "Medium" || v.Metadata.Reclassified.By != "NVD" ||
				v.Metadata.DistroVersion != "12" || !slices.Equal(zlib.CVEIds, []string{"CVE-2026-0001"}) || !slices.Equal(zlib.BaseScores, []float64{9.8}) {
				t.Fatalf("zlib1g vulnerability: %+v", v)
			}
			xz := feature(info, "liblzma5")
			if !slices.Equal(vulnNames(xz), []string{"DEBIAN-CVE-2026-0003"}) {
				t.Fatalf("liblzma5: %v", vulnNames(xz))
			}
			if v := xz.Vulnerabilities[0]; v.Severity != "Critical" || v.FixedBy != "" || v.Metadata.Reclassified != nil ||
				v.Metadata.NVD.CVSSv3.Score != 10.0 {
				t.Fatalf("liblzma5 vulnerability (10.0, no vendor severity): %+v", v)
			}
			bz := feature(info, "libbz2-1.0")
			if !slices.Equal(vulnNames(bz), []string{"DEBIAN-CVE-2026-0006"}) {
				t.Fatalf("libbz2-1.0: %v (withdrawn must not show)", vulnNames(bz))
			}
			if v := bz.Vulnerabilities[0]; v.Severity != "Medium" || v.Metadata.Reclassified == nil || v.Metadata.Reclassified.From != "Low" {
				t.Fatalf("libbz2-1.0 vulnerability: %+v", v)
			}
			if base := feature(info, "base-files"); len(base.Vulnerabilities) != 0 {
				t.Fatalf("base-files: %v", vulnNames(base))
			}

			scanned, last := e.events(0, meta.EventManifestScanned)
			found, _ := e.events(0, meta.EventVulnerabilityFound)
			if len(scanned) != 1 || scanned[0]["digest"] != dgst || scanned[0]["status"] != "scanned" ||
				fmt.Sprint(scanned[0]["tags"]) != "[1.0]" || fmt.Sprint(scanned[0]["vulnerabilities"]) != "map[Critical:2 Medium:1]" {
				t.Fatalf("manifest_scanned events: %v", scanned)
			}
			if len(found) != 1 {
				t.Fatalf("vulnerability_found events: %v", found)
			}
			top := found[0]["vulnerability"].(map[string]any)
			if top["priority"] != "Critical" || top["has_fix"] != true || top["id"] != "DEBIAN-CVE-2026-0001" || len(found[0]["vulnerabilities"].([]any)) != 3 {
				t.Fatalf("vulnerability_found: %v", found[0])
			}

			// The computed SBOM is a referrer of the image, through the
			// registry API like any other.
			resp, err := http.Get("http://" + e.host + "/v2/acme/app/referrers/" + dgst)
			if err != nil {
				t.Fatal(err)
			}
			var refs struct {
				Manifests []struct {
					Digest, ArtifactType string
				}
			}
			json.NewDecoder(resp.Body).Decode(&refs)
			resp.Body.Close()
			if len(refs.Manifests) != 1 || refs.Manifests[0].ArtifactType != "application/spdx+json" {
				t.Fatalf("referrers: %+v", refs)
			}
			sbom := fetchSBOM(t, e.host, "acme/app", refs.Manifests[0].Digest)
			if !strings.Contains(sbom, `"pkg:deb/debian/zlib1g@1:1.2.13.dfsg-1`) && !strings.Contains(sbom, `"pkg:deb/debian/zlib1g@1%3A1.2.13.dfsg-1`) {
				t.Fatalf("SBOM has no zlib1g purl:\n%.2000s", sbom)
			}
			if !strings.Contains(sbom, `"spdxVersion": "SPDX-2.3"`) {
				t.Fatalf("not SPDX 2.3:\n%.500s", sbom)
			}
			// The SBOM push is announced by manifest_scanned, not repo_push,
			// and is not itself scanned.
			pushes, _ := e.events(0, meta.EventRepoPush)
			if len(pushes) != 1 {
				t.Fatalf("repo_push events: %d", len(pushes))
			}

			// The same image in a second repository: no re-index, the
			// result announced there, and an SBOM there too.
			e.push("other/app", "latest", debianLayer(t), app)
			e.drain()
			scanned, _ = e.events(last, meta.EventManifestScanned)
			found, _ = e.events(last, meta.EventVulnerabilityFound)
			if len(scanned) != 1 || scanned[0]["_repository"] != "other/app" || len(found) != 1 || found[0]["_repository"] != "other/app" {
				t.Fatalf("second repository: scanned %v found %v", scanned, found)
			}
			// Another image on the same base layer: the layer is not read
			// again (its cached result is used).
			ctx := context.Background()
			before := e.layerIndexTimes(ctx, layers[0])
			other, _ := e.push("acme/app2", "1", debianLayer(t), layer(t, map[string]string{"app/other": "x"}))
			e.drain()
			if got := feature(e.security("acme/app2", other), "zlib1g"); got == nil || len(got.Vulnerabilities) != 1 {
				t.Fatalf("second image on the base: %+v", got)
			}
			if after := e.layerIndexTimes(ctx, layers[0]); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("shared layer indexed again: %v -> %v", before, after)
			}
		})
	}
}

func fetchSBOM(t *testing.T, host, repo, manifestDigest string) string {
	t.Helper()
	resp, err := http.Get("http://" + host + "/v2/" + repo + "/manifests/" + manifestDigest)
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		Subject struct{ Digest string }
		Layers  []struct{ Digest, MediaType string }
	}
	json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if len(m.Layers) != 1 || m.Layers[0].MediaType != "application/spdx+json" {
		t.Fatalf("SBOM manifest: %+v", m)
	}
	resp, err = http.Get("http://" + host + "/v2/" + repo + "/blobs/" + m.Layers[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return string(b)
}

func TestAlpineAndGoBinary(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	depVersion := strings.TrimPrefix(goModVersion(t, "github.com/klauspost/compress"), "v")
	goVersion := strings.TrimPrefix(runtime.Version(), "go")
	e.importJSON(
		// Alpine names the origin package: libcrypto3 comes from openssl.
		`{"id":"ALPINE-CVE-2026-1000","modified":"`+modifiedBase+`","summary":"openssl in alpine",
		  "affected":[{"package":{"ecosystem":"Alpine:v3.19","name":"openssl"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"3.1.4-r6"}]}]}]}`,
		`{"id":"ALPINE-CVE-2026-1001","modified":"`+modifiedBase+`","summary":"musl fixed before",
		  "affected":[{"package":{"ecosystem":"Alpine:v3.19","name":"musl"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1.2.4-r1"}]}]}]}`,
		// A Go module advisory with GitHub's severity, a SEMVER range up to a limit.
		`{"id":"GHSA-test-0001","modified":"`+modifiedBase+`","summary":"compress issue","database_specific":{"severity":"HIGH"},
		  "affected":[{"package":{"ecosystem":"Go","name":"github.com/klauspost/compress"},
		    "ranges":[{"type":"SEMVER","events":[{"introduced":"0.1.0"},{"fixed":"99.0.0"}]}]}]}`,
		// The Go toolchain itself.
		`{"id":"GO-2026-0001","modified":"`+modifiedBase+`","summary":"stdlib issue",
		  "affected":[{"package":{"ecosystem":"Go","name":"stdlib"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"99.0.0"}]}]}]}`,
		`{"id":"GO-2026-0002","modified":"`+modifiedBase+`","summary":"old stdlib only",
		  "affected":[{"package":{"ecosystem":"Go","name":"stdlib"},"ranges":[{"type":"SEMVER","events":[{"introduced":"0"},{"fixed":"1.0.0"}]}]}]}`,
	)
	dgst, layers := e.push("acme/alpine-go", "1", alpineLayer(t), goBinaryLayer(t))
	e.drain()
	info := e.security("acme/alpine-go", dgst)
	if info.Status != meta.ScanScanned || info.Data.Layer.NamespaceName != "alpine:v3.19" {
		t.Fatalf("status %q reason %q ns %v", info.Status, info.Reason, info.Data)
	}
	crypto := feature(info, "libcrypto3")
	if crypto == nil || crypto.Version != "3.1.4-r5" || crypto.VersionFormat != "apk" || crypto.AddedBy != layers[0] ||
		!slices.Equal(vulnNames(crypto), []string{"ALPINE-CVE-2026-1000"}) || crypto.Vulnerabilities[0].FixedBy != "3.1.4-r6" ||
		crypto.Vulnerabilities[0].Severity != "Unknown" {
		t.Fatalf("libcrypto3: %+v", crypto)
	}
	if musl := feature(info, "musl"); musl == nil || len(musl.Vulnerabilities) != 0 {
		t.Fatalf("musl: %+v", musl)
	}
	ggcr := feature(info, "github.com/klauspost/compress")
	if ggcr == nil || strings.TrimPrefix(ggcr.Version, "v") != depVersion || ggcr.AddedBy != layers[1] || ggcr.NamespaceName != "go" ||
		!slices.Equal(vulnNames(ggcr), []string{"GHSA-test-0001"}) || ggcr.Vulnerabilities[0].Severity != "High" ||
		ggcr.Vulnerabilities[0].FixedBy != "99.0.0" {
		t.Fatalf("klauspost/compress %s: %+v", depVersion, ggcr)
	}
	std := feature(info, "stdlib")
	if std == nil || !strings.Contains(std.Version, goVersion) || !slices.Equal(vulnNames(std), []string{"GO-2026-0001"}) {
		t.Fatalf("stdlib (%s): %+v", goVersion, std)
	}
	if u := feature(info, "github.com/google/osv-scalibr"); u == nil || u.Version != goModVersion(t, "github.com/google/osv-scalibr") {
		t.Fatalf("osv-scalibr: %+v", u)
	}
}

func TestRematchAfterImport(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, index.Limits{})
			e.importJSON(debianRecords[1]) // zlib, already fixed: nothing
			deb, debLayers := e.push("acme/deb", "1", debianLayer(t))
			alp, alpLayers := e.push("acme/alp", "1", alpineLayer(t))
			allLayers := append(debLayers, alpLayers...)
			e.drain()
			if found, _ := e.events(0, meta.EventVulnerabilityFound); len(found) != 0 {
				t.Fatalf("nothing should be vulnerable yet: %v", found)
			}
			_, last := e.events(0, "")
			before := e.layerIndexTimes(ctx, allLayers...)

			// An update adds an advisory for the Debian image's zlib.
			st := e.importJSON(debianRecords[0], debianRecords[1])
			if st.Applied != 1 || st.Unchanged != 1 {
				t.Fatalf("re-import applies only the change: %+v", st)
			}
			e.drain()
			found, last2 := e.events(last, meta.EventVulnerabilityFound)
			if len(found) != 1 || found[0]["_repository"] != "acme/deb" || found[0]["digest"] != deb {
				t.Fatalf("after the update: %v", found)
			}
			if v := found[0]["vulnerability"].(map[string]any); v["id"] != "DEBIAN-CVE-2026-0001" || v["priority"] != "Critical" {
				t.Fatalf("vulnerability: %v", v)
			}
			if got := feature(e.security("acme/deb", deb), "zlib1g"); !slices.Equal(vulnNames(got), []string{"DEBIAN-CVE-2026-0001"}) {
				t.Fatalf("report after update: %v", vulnNames(got))
			}
			if got := e.security("acme/alp", alp); got.Status != meta.ScanScanned {
				t.Fatalf("alpine: %v", got.Status)
			}
			// No layer was read again.
			if after := e.layerIndexTimes(ctx, allLayers...); fmt.Sprint(after) != fmt.Sprint(before) {
				t.Fatalf("layers re-indexed: %v -> %v", before, after)
			}

			// The same import again: nothing applied, nothing announced.
			if st := e.importJSON(debianRecords[0]); st.Applied != 0 || st.Unchanged != 1 {
				t.Fatalf("unchanged re-import: %+v", st)
			}
			e.drain()
			if again, _ := e.events(last2, meta.EventVulnerabilityFound); len(again) != 0 {
				t.Fatalf("unchanged import announced: %v", again)
			}

			// The advisory is withdrawn: the match goes, with no event.
			withdrawn := strings.Replace(debianRecords[0], `"modified":"`+modifiedBase+`"`,
				`"modified":"2026-02-01T00:00:00Z","withdrawn":"2026-02-01T00:00:00Z"`, 1)
			if st := e.importJSON(withdrawn); st.Applied != 1 || st.Withdrawn != 1 {
				t.Fatalf("withdrawal: %+v", st)
			}
			e.drain()
			if got := feature(e.security("acme/deb", deb), "zlib1g"); len(got.Vulnerabilities) != 0 {
				t.Fatalf("withdrawn advisory still shown: %v", vulnNames(got))
			}
			vulns, err := e.db.Scans().ManifestVulns(ctx, deb)
			if err != nil || len(vulns) != 0 {
				t.Fatalf("stored matches after withdrawal: %v %v", vulns, err)
			}
			if again, _ := e.events(last2, meta.EventVulnerabilityFound); len(again) != 0 {
				t.Fatalf("withdrawal announced: %v", again)
			}
		})
	}
}

// layerIndexTimes lists when each of the layers was indexed.
func (e *env) layerIndexTimes(ctx context.Context, layers ...string) map[string]string {
	e.t.Helper()
	out := map[string]string{}
	for _, d := range layers {
		row, err := e.db.Scans().LayerIndex(ctx, d)
		if err != nil {
			e.t.Fatal(err)
		}
		out[d] = row.IndexedAt.String()
	}
	return out
}

// TestHostileDescriptorDoesNotSpoilALayer: a manifest that names a layer
// with a media type that is no layer's, or with a size far over the
// limit, is unsupported itself, and says nothing about the layer's bytes:
// another image built on that layer, scanned after it, is scanned (the
// result was stored by the layer's digest, for every image). A manifest
// listing one layer 900 times is scanned, one of over 1,000 layers is not.
// (That a repeated layer is read once is not observable here.)
func TestHostileDescriptorDoesNotSpoilALayer(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	layer := alpineLayer(t)
	img, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1), layer)
	if err != nil {
		t.Fatal(err)
	}
	repo, _ := name.NewRepository(e.host+"/acme/evil", name.Insecure)
	cfg, _ := img.RawConfigFile()
	for _, l := range []v1.Layer{layer, static.NewLayer(cfg, types.OCIConfigJSON)} {
		if err := remote.WriteLayer(repo, l); err != nil {
			t.Fatal(err)
		}
	}
	m, _ := img.Manifest()
	put := func(tag string, edit func(*v1.Manifest)) string {
		t.Helper()
		mm := *m
		mm.Layers = append([]v1.Descriptor(nil), m.Layers...)
		edit(&mm)
		body, _ := json.Marshal(mm)
		req, _ := http.NewRequest(http.MethodPut, "http://"+e.host+"/v2/acme/evil/manifests/"+tag, strings.NewReader(string(body)))
		req.Header.Set("Content-Type", string(types.OCIManifestSchema1))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusCreated {
			t.Fatalf("push %s: %d", tag, resp.StatusCode)
		}
		return digest.FromBytes(body).String()
	}
	put("mediatype", func(m *v1.Manifest) { m.Layers[0].MediaType = "application/vnd.dev.cosign.simplesigning.v1+json" })
	put("size", func(m *v1.Manifest) { m.Layers[0].Size = 1 << 40 })
	e.drain()

	dgst, _ := e.push("acme/victim", "1", layer)
	e.drain()
	if info := e.security("acme/victim", dgst); info.Status != meta.ScanScanned || feature(info, "musl") == nil {
		t.Fatalf("the victim's image: status %q (%s)", info.Status, info.Reason)
	}

	// One layer listed 900 times: the image is scanned; over 1,000
	// layers, it is not read.
	repeated := put("repeated", func(m *v1.Manifest) {
		for range 899 {
			m.Layers = append(m.Layers, m.Layers[0])
		}
	})
	tooMany := put("too-many", func(m *v1.Manifest) {
		for range 1000 {
			m.Layers = append(m.Layers, m.Layers[0])
		}
	})
	e.drain()
	if info := e.security("acme/evil", repeated); info.Status != meta.ScanScanned || feature(info, "musl") == nil {
		t.Fatalf("a layer listed 900 times: status %q (%s)", info.Status, info.Reason)
	}
	if info := e.security("acme/evil", tooMany); info.Status != meta.ScanUnsupported || !strings.Contains(info.Reason, "1001 layers") {
		t.Fatalf("1001 layers: status %q (%s)", info.Status, info.Reason)
	}
}
