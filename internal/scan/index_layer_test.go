package scan_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"reflect"
	"slices"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/wire"
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

// countingVulns is the advisory store the scan service reads, counting
// the lookups of advisories by package and the keys they ask for.
type countingVulns struct {
	scan.Vulns
	mu          sync.Mutex
	calls, keys int
}

func (c *countingVulns) VulnRecordsFor(ctx context.Context, keys []meta.VulnKey) ([]meta.StoredVuln, error) {
	c.mu.Lock()
	c.calls++
	c.keys += len(keys)
	c.mu.Unlock()
	return c.Vulns.VulnRecordsFor(ctx, keys)
}

// take returns the lookups and keys counted since the last take.
func (c *countingVulns) take() (calls, keys int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	calls, keys, c.calls, c.keys = c.calls, c.keys, 0, 0
	return calls, keys
}

// countingService is a scan service over e's stores whose advisory
// lookups are counted.
func countingService(e *env) (*scan.Service, *countingVulns) {
	stores := wire.ScanStores(e.db)
	cv := &countingVulns{Vulns: stores.Vulns}
	stores.Vulns = cv
	return scan.New(stores, e.driver, scan.Options{Host: e.host, Version: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}), cv
}

// TestIndexSecurityMatchesOnce: the security answer of a scanned index
// with vulnerabilities=true looks up its platforms' advisories once, as
// for a single image holding all their packages (not once per platform:
// an index lists up to 64 and anyone who may pull may ask), and gives
// each package the advisories its platforms' own answers give it. An
// index with a platform not scanned, whose answer has no data, looks up
// no advisory at all.
func TestIndexSecurityMatchesOnce(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	e.importJSON(debRecord("DEBIAN-CVE-2026-0201", modifiedBase, "zlib1g"), debRecord("DEBIAN-CVE-2026-0202", modifiedBase, "libc6"),
		`{"id":"DEBIAN-CVE-2026-0203","modified":"`+modifiedBase+`","affected":[{"package":{"ecosystem":"Debian:12","name":"libssl3"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"3.0.13-1~deb12u1"}]}]}]}`,
		debRecord("DEBIAN-CVE-2026-0204", modifiedBase, "bash"))
	status := func(pkgs ...string) map[string]string {
		s := ""
		for i := 0; i < len(pkgs); i += 2 {
			s += dpkgStanza(pkgs[i], pkgs[i+1], true)
		}
		return map[string]string{"etc/os-release": debian12OSRelease, "var/lib/dpkg/status": s}
	}
	amd, _ := e.push("acme/multi", "amd64", layer(t, status("zlib1g", "1:1.2.13.dfsg-1", "libssl3", "3.0.11-1~deb12u2", "bash", "5.2.15-2+b2")))
	arm, _ := e.push("acme/multi", "arm64", layer(t, status("zlib1g", "1:1.2.13.dfsg-1", "libssl3", "3.0.13-1~deb12u1", "libc6", "2.36-9+deb12u4")))
	s390, _ := e.push("acme/multi", "s390x", layer(t, status("zlib1g", "1:1.2.13.dfsg-1", "libc6", "2.36-9+deb12u4", "bash", "5.2.15-2+b2")))
	all, _ := e.push("acme/multi", "all", layer(t, status("zlib1g", "1:1.2.13.dfsg-1", "libssl3", "3.0.11-1~deb12u2", "libc6", "2.36-9+deb12u4", "bash", "5.2.15-2+b2")))
	idx := e.pushIndex("acme/multi", "latest", amd, arm, s390)
	e.drain()

	svc, cv := countingService(e)
	ask := func(dgst string) scan.SecurityInfo {
		t.Helper()
		m, err := e.db.Manifests().GetManifest(context.Background(), "acme/multi", "", mustDigest(t, dgst), true)
		if err != nil {
			t.Fatal(err)
		}
		info, err := svc.Security(context.Background(), "acme/multi", m, true)
		if err != nil {
			t.Fatal(err)
		}
		return info
	}
	if info := ask(all); info.Status != meta.ScanScanned {
		t.Fatalf("the image of all packages: %s", info.Status)
	}
	oneCalls, oneKeys := cv.take()
	info := ask(idx)
	calls, keys := cv.take()
	if info.Status != meta.ScanScanned || info.Data == nil {
		t.Fatalf("index: %s, data %v; want scanned with data", info.Status, info.Data)
	}
	if calls > oneCalls || keys > oneKeys {
		t.Errorf("the index's answer looked advisories up %d times for %d keys; an image of all its packages, %d times for %d keys",
			calls, keys, oneCalls, oneKeys)
	}

	// Each package has the advisories its platforms' answers give it.
	want := map[string][]string{}
	for _, p := range []string{amd, arm, s390} {
		pi := ask(p)
		if pi.Data == nil {
			t.Fatalf("platform %s: %s", p, pi.Status)
		}
		for _, f := range pi.Data.Layer.Features {
			k := f.Name + " " + f.Version + " " + f.NamespaceName
			want[k] = sortedSet(append(want[k], vulnNames(&f)...))
		}
	}
	got := map[string][]string{}
	for _, f := range info.Data.Layer.Features {
		got[f.Name+" "+f.Version+" "+f.NamespaceName] = sortedSet(vulnNames(&f))
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("index advisories by package %v, want the platforms' %v", got, want)
	}
	if got := vulnNames(featureOf(info.Data.Layer, "libssl3", "3.0.11-1~deb12u2")); !slices.Equal(got, []string{"DEBIAN-CVE-2026-0203"}) {
		t.Errorf("libssl3 3.0.11 advisories %q, want DEBIAN-CVE-2026-0203", got)
	}
	if f := featureOf(info.Data.Layer, "libssl3", "3.0.13-1~deb12u1"); f == nil || len(f.Vulnerabilities) != 0 {
		t.Errorf("libssl3 3.0.13 (fixed): %+v, want listed without advisories", f)
	}

	// A platform not scanned (the last one): no data, and no lookup.
	late, _ := e.push("acme/multi", "late", layer(t, status("zlib1g", "1:1.2.13.dfsg-1")))
	queued := e.pushIndex("acme/multi", "next", amd, arm, late)
	cv.take()
	if info := ask(queued); info.Status != meta.ScanQueued || info.Data != nil {
		t.Errorf("index with a queued platform: %s, data %v; want queued, none", info.Status, info.Data)
	}
	if calls, keys := cv.take(); calls != 0 {
		t.Errorf("the answer of an index with a platform not scanned looked advisories up %d times (%d keys), for no data", calls, keys)
	}
}

// sortedSet sorts and deduplicates ss.
func sortedSet(ss []string) []string {
	slices.Sort(ss)
	return slices.Compact(ss)
}
