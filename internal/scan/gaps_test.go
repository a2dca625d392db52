package scan_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
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
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
)

const debian12OSRelease = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n"

// dpkgStanza is one package of a dpkg status file; without status, as
// distroless images list theirs in status.d.
func dpkgStanza(pkg, version string, status bool) string {
	s := "Package: " + pkg + "\n"
	if status {
		s += "Status: install ok installed\n"
	}
	return s + "Priority: optional\nArchitecture: amd64\nVersion: " + version + "\nDescription: " + pkg + "\n\n"
}

// osData reports the coverage entry of the image's OS packages.
func osData(t *testing.T, cov *scan.DataCoverage, name string) scan.EcosystemData {
	t.Helper()
	for _, e := range cov.Ecosystems {
		if e.Ecosystem == name || e.Release == name {
			return e
		}
	}
	t.Fatalf("no %s in %+v", name, cov)
	return scan.EcosystemData{}
}

// TestPackageDatabaseGapsAreNotClean: an image whose OS package database
// is deleted by a later layer, over the file limit, or absent though its
// os-release names a distribution is never complete: its packages are
// unknown, not absent. A normal image and a distroless one (status.d)
// stay complete.
func TestPackageDatabaseGapsAreNotClean(t *testing.T) {
	const limit = 4096
	e := newEnv(t, "sqlite", index.Limits{MaxFileBytes: limit})
	e.importJSON(debianRecords[0]) // Debian:12 data
	var big strings.Builder
	for i := 0; big.Len() <= limit; i++ {
		big.WriteString(dpkgStanza(fmt.Sprintf("pkg%d", i), "1.0", true))
	}
	base := layer(t, map[string]string{"etc/os-release": debian12OSRelease, "var/lib/dpkg/status": dpkgStanza("zlib1g", "1:1.2.13.dfsg-1", true)})
	normal, _ := e.push("acme/normal", "1", base)
	deleted, _ := e.push("acme/deleted", "1", base, layer(t, map[string]string{"var/lib/dpkg/.wh.status": "", "opt/app/README": "app"}))
	tooBig, _ := e.push("acme/big", "1", layer(t, map[string]string{"etc/os-release": debian12OSRelease, "var/lib/dpkg/status": big.String()}))
	distroless, _ := e.push("acme/distroless", "1", layer(t, map[string]string{"etc/os-release": debian12OSRelease,
		"var/lib/dpkg/status.d/base-files": dpkgStanza("base-files", "12.4+deb12u5", false), "var/lib/dpkg/status.d/base-files.md5sums": "0  etc/issue\n"}))
	osOnly, _ := e.push("acme/osonly", "1", layer(t, map[string]string{"etc/os-release": debian12OSRelease, "opt/app/README": "app"}))
	e.drain()

	for _, c := range []struct{ repo, dgst string }{{"acme/normal", normal}, {"acme/distroless", distroless}} {
		info := e.security(c.repo, c.dgst)
		if cov := info.VulnerabilityData; info.Status != meta.ScanScanned || cov == nil || !cov.Complete || len(info.Data.Layer.Features) != 1 {
			t.Errorf("%s: %s %+v %+v", c.repo, info.Status, cov, info.Data)
		}
	}
	// No package database at all (ubi-micro, a scratch image with an
	// os-release) is no gap: nothing could ever complete it.
	if info := e.security("acme/osonly", osOnly); info.VulnerabilityData == nil || !info.VulnerabilityData.Complete {
		t.Errorf("acme/osonly: %s %+v", info.Status, info.VulnerabilityData)
	}
	for _, c := range []struct{ repo, dgst, want string }{
		{"acme/deleted", deleted, "/var/lib/dpkg/status (layer sha256:"},
		{"acme/deleted", deleted, "deleted by a later layer"},
		{"acme/big", tooBig, "/var/lib/dpkg/status (layer sha256:"},
		{"acme/big", tooBig, fmt.Sprintf("over the %d-byte file limit", limit)},
	} {
		info := e.security(c.repo, c.dgst)
		cov := info.VulnerabilityData
		if info.Status != meta.ScanScanned || cov == nil || cov.Complete || !slices.Equal(cov.Missing, []string{"Debian:12"}) {
			t.Errorf("%s: %s %+v, want scanned and incomplete", c.repo, info.Status, cov)
			continue
		}
		if d := osData(t, cov, "Debian:12"); d.Status != scan.DataUnsupported || !strings.Contains(d.Reason, c.want) {
			t.Errorf("%s: %+v, want unsupported, the reason mentioning %q", c.repo, d, c.want)
		}
		if !strings.Contains(cov.Reason(), c.want) {
			t.Errorf("%s: Reason() = %q", c.repo, cov.Reason())
		}
	}
}

// TestOSEcosystemWithoutRelease: an Alpine os-release without VERSION_ID
// matches packages under bare "Alpine", which no Alpine advisory names:
// Alpine data for v3.19 does not make it complete. OS packages of a kind
// the distribution does not use (dpkg in Alpine) are not matched in its
// scheme, and reported unsupported.
func TestOSEcosystemWithoutRelease(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	e.logTo(0)
	e.importJSON(record("ALPINE-CVE-2026-7", modifiedBase, `{"package":{"ecosystem":"Alpine:v3.19","name":"musl"},"versions":["1.2.4-r2"]}`))
	bare, _ := e.push("acme/bare", "1", layer(t, map[string]string{"etc/os-release": "ID=alpine\n", "lib/apk/db/installed": alpineInstalled}))
	good, _ := e.push("acme/good", "1", alpineLayer(t))
	misfit, _ := e.push("acme/misfit", "1", layer(t, map[string]string{"etc/os-release": alpineOSRelease,
		"var/lib/dpkg/status": dpkgStanza("musl", "1.2.4-r2", true)}))
	e.drain()

	cov := e.security("acme/bare", bare).VulnerabilityData
	if d := osData(t, cov, "Alpine"); cov.Complete || d.Status != scan.DataMissing || !strings.Contains(d.Reason, "VERSION_ID") {
		t.Errorf("bare Alpine with Alpine:v3.19 data: %+v", cov)
	}
	if info := e.security("acme/good", good); !info.VulnerabilityData.Complete || !slices.Equal(vulnNames(feature(info, "musl")), []string{"ALPINE-CVE-2026-7"}) {
		t.Errorf("Alpine 3.19: %+v %+v", info.VulnerabilityData, feature(info, "musl"))
	}
	info := e.security("acme/misfit", misfit)
	if got := vulnNames(feature(info, "musl")); len(got) != 0 {
		t.Errorf("a dpkg package matched as an Alpine one: %v", got)
	}
	cov = info.VulnerabilityData
	if d := osData(t, cov, "dpkg packages"); cov.Complete || d.Status != scan.DataUnsupported || d.Packages != 1 || !strings.Contains(d.Reason, "apk packages") {
		t.Errorf("dpkg packages in Alpine: %+v", cov)
	}
}

// pushQuiet writes an image to repo:tag without handing the push to the
// scan subscriber, as for an image stored before scanning was on.
func (e *env) pushQuiet(repo, tag string, layers ...v1.Layer) string {
	e.t.Helper()
	img, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1), layers...)
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

// putIndex writes an OCI index of the given descriptors (JSON) to repo:tag.
func (e *env) putIndex(repo, tag string, descs ...string) string {
	e.t.Helper()
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
	return digest.FromString(body).String()
}

func (e *env) descriptor(repo, dgst, extra string) string {
	e.t.Helper()
	m, err := e.db.Manifests().GetManifest(context.Background(), repo, "", mustDigest(e.t, dgst), false)
	if err != nil {
		e.t.Fatal(err)
	}
	return fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d,%s}`, m.MediaType, dgst, m.Size, extra)
}

// TestIndexWithAttestation: docker buildx adds an attestation manifest
// (platform unknown/unknown, in-toto layers) to every index it pushes.
// It is no platform: the index is scanned, not unsupported. A platform
// stored before scanning was on is queued by the request, as a single
// manifest is, and scanned.
func TestIndexWithAttestation(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	e.logTo(0)
	ctx := context.Background()
	amd, _ := e.push("acme/built", "amd64", debianLayer(t))
	att, _ := e.push("acme/built", "att", static.NewLayer([]byte(`{"_type":"https://in-toto.io/Statement/v0.1","predicateType":"https://slsa.dev/provenance/v0.2"}`),
		"application/vnd.in-toto+json"))
	arm := e.pushQuiet("acme/built", "arm64", alpineLayer(t))
	idx := e.putIndex("acme/built", "latest",
		e.descriptor("acme/built", amd, `"platform":{"os":"linux","architecture":"amd64"}`),
		e.descriptor("acme/built", arm, `"platform":{"os":"linux","architecture":"arm64"}`),
		e.descriptor("acme/built", att, `"platform":{"os":"unknown","architecture":"unknown"},"annotations":{"vnd.docker.reference.type":"attestation-manifest","vnd.docker.reference.digest":"`+amd+`"}`))

	// arm64 was never queued: the request queues it.
	if _, err := e.db.Scans().ManifestScan(ctx, arm); !errors.Is(err, meta.ErrNotFound) {
		t.Fatalf("arm64 scan before the request: %v", err)
	}
	info := e.security("acme/built", idx)
	if info.Status != meta.ScanQueued || len(info.Manifests) != 2 || info.Manifests[1].Digest != arm || info.Manifests[1].Status != meta.ScanQueued {
		t.Fatalf("index before the scans: %+v", info)
	}
	if st, err := e.db.Scans().ManifestScan(ctx, arm); err != nil || st.Status != meta.ScanQueued {
		t.Fatalf("arm64 scan after the request: %+v %v", st, err)
	}
	e.drain()
	info = e.security("acme/built", idx)
	if info.Status != meta.ScanScanned || len(info.Manifests) != 2 || info.VulnerabilityData == nil {
		t.Fatalf("index with an attestation: %+v", info)
	}
	for _, m := range info.Manifests {
		if m.Digest == att || m.Status != meta.ScanScanned {
			t.Errorf("platform %s: %+v", m.Digest, m)
		}
	}
}

// TestUBIContentSetsInBuildInfo: a UBI image built by Konflux (as
// ubi9-minimal 9.6 is) names its content sets only in
// usr/share/buildinfo/content-sets.json: they are found, and with the
// mapping its report is complete.
func TestUBIContentSetsInBuildInfo(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	e.logTo(0)
	ctx := context.Background()
	db, err := os.ReadFile("testdata/ubi8-rpmdb.sqlite")
	if err != nil {
		t.Fatal(err)
	}
	ubi, _ := e.push("ubi8/ubi-minimal", "8.6", layer(t, map[string]string{
		"etc/os-release":           "NAME=\"Red Hat Enterprise Linux\"\nID=\"rhel\"\nVERSION_ID=\"8.6\"\n",
		"var/lib/rpm/rpmdb.sqlite": string(db),
		"usr/share/buildinfo/content-sets.json": `{"metadata": {"icm_version": 1, "icm_spec": "https://raw.githubusercontent.com/containerbuildsystem/atomic-reactor/master/atomic_reactor/schemas/content_manifest.json", "image_layer_index": 0},
  "from_dnf_hint": true, "content_sets": ["rhel-8-for-s390x-baseos-rpms", "rhel-8-for-s390x-appstream-rpms"]}`,
		"usr/share/buildinfo/labels.json": `{"com.redhat.component": "ubi8-minimal-container"}`,
	}))
	e.importJSON(rhsa("RHSA-2026:0001", "Moderate", [3]string{"Red Hat:enterprise_linux:8::baseos", "zlib", "0:1.2.11-19.el8_6"}))
	if _, err := scan.ImportCPEMapping(ctx, e.db.VulnDB(), strings.NewReader(ubiMapping)); err != nil {
		t.Fatal(err)
	}
	e.drain()
	info := e.security("ubi8/ubi-minimal", ubi)
	if got := info.Data.Layer.ContentSets; !slices.Equal(got, []string{"rhel-8-for-s390x-appstream-rpms", "rhel-8-for-s390x-baseos-rpms"}) {
		t.Fatalf("content sets %v", got)
	}
	if cov := info.VulnerabilityData; !cov.Complete || ecosystemStatus(cov)["Red Hat"] != scan.DataCurrent {
		t.Fatalf("coverage: %+v", cov)
	}
	if got := vulnNames(feature(info, "zlib")); !slices.Equal(got, []string{"RHSA-2026:0001"}) {
		t.Fatalf("zlib: %v", got)
	}
}
