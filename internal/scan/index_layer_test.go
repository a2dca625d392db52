package scan_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
)

// featureKeys lists a layer's features as "name version namespace".
func featureKeys(l scan.SecurityLayer) []string {
	var out []string
	for _, f := range l.Features {
		out = append(out, f.Name+" "+f.Version+" "+f.NamespaceName)
	}
	slices.Sort(out)
	return out
}

// featureOf is the feature of that name and version, or nil.
func featureOf(l scan.SecurityLayer, name, version string) *scan.Feature {
	for i, f := range l.Features {
		if f.Name == name && f.Version == version {
			return &l.Features[i]
		}
	}
	return nil
}

// TestIndexSecurityLayerIsUnionOfPlatforms: a scanned index answers, as
// Quay's clients expect of "scanned", data.Layer: its platforms'
// packages, a package both hold listed once with its advisories once (a
// package of another version listed apart), with or without
// vulnerabilities=true. While a platform is not scanned, the index has
// no data.
func TestIndexSecurityLayerIsUnionOfPlatforms(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	e.importJSON(`{"id":"DEBIAN-CVE-2026-0101","modified":"`+modifiedBase+`","aliases":["CVE-2026-0101"],"affected":[{"package":{"ecosystem":"Debian:12","name":"zlib1g"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}]}`,
		debRecord("DEBIAN-CVE-2026-0102", modifiedBase, "libc6"))
	status := func(pkgs ...string) map[string]string {
		s := ""
		for i := 0; i < len(pkgs); i += 2 {
			s += dpkgStanza(pkgs[i], pkgs[i+1], true)
		}
		return map[string]string{"etc/os-release": debian12OSRelease, "var/lib/dpkg/status": s}
	}
	amd, _ := e.push("acme/multi", "amd64", layer(t, status("zlib1g", "1:1.2.13.dfsg-1", "libssl3", "3.0.11-1~deb12u2")))
	arm, _ := e.push("acme/multi", "arm64", layer(t, status("zlib1g", "1:1.2.13.dfsg-1", "libssl3", "3.0.13-1~deb12u1", "libc6", "2.36-9+deb12u4")))
	idx := e.pushIndex("acme/multi", "latest", amd, arm)
	e.drain()

	info := e.security("acme/multi", idx)
	if info.Status != meta.ScanScanned || len(info.Manifests) != 2 {
		t.Fatalf("index: %s, %d platforms; want scanned, 2", info.Status, len(info.Manifests))
	}
	if info.Data == nil {
		t.Fatal(`the index answers "scanned" with no data: Quay's clients read data.Layer.Features`)
	}
	l := info.Data.Layer
	want := []string{"libc6 2.36-9+deb12u4 debian:12", "libssl3 3.0.11-1~deb12u2 debian:12", "libssl3 3.0.13-1~deb12u1 debian:12", "zlib1g 1:1.2.13.dfsg-1 debian:12"}
	if got := featureKeys(l); !slices.Equal(got, want) {
		t.Errorf("index features %q, want %q", got, want)
	}
	if l.Name != idx || l.ParentName != "" || l.NamespaceName != "debian:12" || l.IndexedByVersion != index.IndexerVersion {
		t.Errorf("index layer %q parent %q namespace %q indexer %d; want the index digest, none, debian:12, %d",
			l.Name, l.ParentName, l.NamespaceName, l.IndexedByVersion, index.IndexerVersion)
	}
	if got := vulnNames(featureOf(l, "zlib1g", "1:1.2.13.dfsg-1")); !slices.Equal(got, []string{"DEBIAN-CVE-2026-0101"}) {
		t.Errorf("zlib1g (on both platforms) advisories %q, want DEBIAN-CVE-2026-0101 once", got)
	}
	if f := featureOf(l, "zlib1g", "1:1.2.13.dfsg-1"); f == nil || !slices.Equal(f.CVEIds, []string{"CVE-2026-0101"}) {
		t.Errorf("zlib1g CVE ids: %+v, want CVE-2026-0101 once", f)
	}
	if got := vulnNames(featureOf(l, "libc6", "2.36-9+deb12u4")); !slices.Equal(got, []string{"DEBIAN-CVE-2026-0102"}) {
		t.Errorf("libc6 (arm64 only) advisories %q, want DEBIAN-CVE-2026-0102", got)
	}
	// As JSON, what a script reads.
	b, err := json.Marshal(info)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Status string `json:"status"`
		Data   *struct {
			Layer *struct {
				Features []map[string]any `json:"Features"`
			} `json:"Layer"`
		} `json:"data"`
	}
	if err := json.Unmarshal(b, &doc); err != nil || doc.Data == nil || doc.Data.Layer == nil || len(doc.Data.Layer.Features) != 4 {
		t.Errorf("the JSON answer lacks data.Layer.Features: %s", b)
	}

	// vulnerabilities=false: the same packages, no advisories.
	m, err := e.db.Manifests().GetManifest(context.Background(), "acme/multi", "", mustDigest(t, idx), true)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := e.svc.Security(context.Background(), "acme/multi", m, false)
	if err != nil {
		t.Fatal(err)
	}
	if plain.Status != meta.ScanScanned || plain.Data == nil {
		t.Fatalf("index without vulnerabilities: %s, data %v", plain.Status, plain.Data)
	}
	if got := featureKeys(plain.Data.Layer); !slices.Equal(got, want) {
		t.Errorf("index features without vulnerabilities %q, want %q", got, want)
	}
	for _, f := range plain.Data.Layer.Features {
		if f.Vulnerabilities != nil {
			t.Errorf("%s: advisories without vulnerabilities=true: %v", f.Name, vulnNames(&f))
		}
	}

	// A platform not scanned yet: the index is queued, with no data.
	s390, _ := e.push("acme/multi", "s390x", layer(t, status("zlib1g", "1:1.2.13.dfsg-1")))
	queued := e.pushIndex("acme/multi", "next", amd, arm, s390)
	if info := e.security("acme/multi", queued); info.Status != meta.ScanQueued || info.Data != nil {
		t.Errorf("index with a queued platform: %s, data %v; want queued, none", info.Status, info.Data)
	}
}
