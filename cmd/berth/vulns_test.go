package main

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/config"
)

// TestVulnDBImportAndVulnsGate: `berth admin vulndb import` fills the
// database next to a running server, and `berth vulns --fail-on` gates on
// what the server's scanner found (exit status 3).
func TestVulnDBImportAndVulnsGate(t *testing.T) {
	dir := t.TempDir()
	out, err := runIn(t, "", "admin", "user", "create", "alice", "--superuser", "--data-dir", dir)
	if err != nil {
		t.Fatal(err, out)
	}
	password := regexp.MustCompile(`password: (\S+)`).FindStringSubmatch(out)[1]

	records := filepath.Join(dir, "records")
	os.MkdirAll(records, 0o755)
	os.WriteFile(filepath.Join(records, "zlib.json"), []byte(`{"id":"DEBIAN-CVE-2026-0001","modified":"2026-01-01T00:00:00Z",
	  "severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
	  "affected":[{"package":{"ecosystem":"Debian:12","name":"zlib"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1:1.2.13.dfsg-1+deb12u1"}]}]}]}`), 0o644)
	os.WriteFile(filepath.Join(records, "broken.json"), []byte(`{"id":"X","modified":"2026-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"Debian:12","name":"zlib"},"ranges":[{"type":"WHAT","events":[]}]}]}`), 0o644)
	out, err = runIn(t, "", "admin", "vulndb", "import", records, "--data-dir", dir)
	if err != nil || !strings.Contains(out, "1 applied") || !strings.Contains(out, "1 rejected") || !strings.Contains(out, "WHAT") {
		t.Fatalf("import: %v\n%s", err, out)
	}
	out, err = runIn(t, "", "admin", "vulndb", "status", "--data-dir", dir)
	if err != nil || !regexp.MustCompile(`Debian\s+1\s`).MatchString(out) {
		t.Fatalf("status: %v\n%s", err, out)
	}

	host := serveDir(t, dir, func(*config.Config) {})

	fixture, err := os.ReadFile("../../internal/scan/index/testdata/debian-layer.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	img, _ := mutate.AppendLayers(empty.Image, static.NewLayer(fixture, types.DockerLayer))
	clean, _ := mutate.AppendLayers(empty.Image, static.NewLayer([]byte{0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff, 1, 0, 0, 0xff, 0xff, 0, 0, 0, 0, 0, 0, 0, 0}, types.DockerLayer))
	creds := remote.WithAuth(&authn.Basic{Username: "alice", Password: password})
	for tag, im := range map[string]v1.Image{"deb": img, "clean": clean} {
		ref, _ := name.ParseReference(host+"/alice/app:"+tag, name.Insecure)
		if err := remote.Write(ref, im, creds); err != nil {
			t.Fatal(err)
		}
	}

	out, err = runIn(t, password+"\n", "vulns", host+"/alice/app:deb", "--insecure", "-u", "alice", "--password-stdin", "--wait", "30s", "--fail-on", "high")
	var ec *exitCodeError
	if !errors.As(err, &ec) || ec.code != exitThreshold {
		t.Fatalf("vulns --fail-on high: %v\n%s", err, out)
	}
	if !regexp.MustCompile(`Critical\s+zlib1g\s+1:1\.2\.13\.dfsg-1\s+1:1\.2\.13\.dfsg-1\+deb12u1\s+DEBIAN-CVE-2026-0001`).MatchString(out) ||
		!strings.Contains(out, "1 vulnerabilities: 1 Critical") {
		t.Fatalf("table:\n%s", out)
	}
	if out, err := runIn(t, password+"\n", "vulns", host+"/alice/app:clean", "--insecure", "-u", "alice", "--password-stdin", "--wait", "30s", "--fail-on", "low"); err != nil {
		t.Fatalf("clean image: %v\n%s", err, out)
	}
	// An index: --json carries each platform's report (it printed only
	// the index's, which has none, while --fail-on counted the platforms').
	idx := mutate.AppendManifests(empty.Index,
		mutate.IndexAddendum{Add: img, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
		mutate.IndexAddendum{Add: clean, Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
	iref, _ := name.ParseReference(host+"/alice/app:multi", name.Insecure)
	if err := remote.WriteIndex(iref, idx, creds); err != nil {
		t.Fatal(err)
	}
	out, err = runIn(t, password+"\n", "vulns", host+"/alice/app:multi", "--insecure", "-u", "alice", "--password-stdin", "--wait", "30s", "--json", "--fail-on", "high")
	if !errors.As(err, &ec) || ec.code != exitThreshold || !strings.Contains(out, "DEBIAN-CVE-2026-0001") || !strings.Contains(out, `"architecture": "amd64"`) {
		t.Fatalf("vulns --json of an index: %v\n%s", err, out)
	}
	if _, err := runIn(t, "wrong\n", "vulns", host+"/alice/app:deb", "--insecure", "-u", "alice", "--password-stdin"); err == nil || errors.As(err, &ec) {
		t.Fatalf("wrong password: %v", err)
	}
	if _, err := runIn(t, password+"\n", "vulns", host+"/alice/app:deb", "--insecure", "-u", "alice", "--password-stdin", "--fail-on", "dire"); err == nil {
		t.Fatal("--fail-on dire accepted")
	}
}
