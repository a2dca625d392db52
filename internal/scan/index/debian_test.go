package index

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
)

// statusStanzas reads var/lib/dpkg/status out of the fixture and parses it
// independently of the code under test.
func statusStanzas(t *testing.T, blob []byte) []map[string]string {
	t.Helper()
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatal("fixture has no var/lib/dpkg/status")
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name != "./var/lib/dpkg/status" {
			continue
		}
		var out []map[string]string
		cur := map[string]string{}
		sc := bufio.NewScanner(tr)
		for sc.Scan() {
			line := sc.Text()
			switch {
			case line == "":
				if len(cur) > 0 {
					out = append(out, cur)
				}
				cur = map[string]string{}
			case strings.HasPrefix(line, " "):
			default:
				k, v, _ := strings.Cut(line, ": ")
				cur[k] = v
			}
		}
		if len(cur) > 0 {
			out = append(out, cur)
		}
		return out
	}
}

func TestIndexLayerDebianFixture(t *testing.T) {
	blob, err := os.ReadFile("testdata/debian-layer.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	const digest = "sha256:debian"
	res := index(t, digest, blob, "application/vnd.docker.image.rootfs.diff.tar.gzip")

	stanzas := statusStanzas(t, blob)
	if len(stanzas) != 4 {
		t.Fatalf("fixture status has %d stanzas, want 4 (regenerate with testdata/gen-debian.sh)", len(stanzas))
	}
	var want []Package
	for _, s := range stanzas {
		p := Package{Kind: KindDpkg, Name: s["Package"], Version: s["Version"], Path: "var/lib/dpkg/status"}
		if src := s["Source"]; src != "" {
			name, ver, ok := strings.Cut(src, " (")
			p.SourceName = name
			if ok {
				p.SourceVersion = strings.TrimSuffix(ver, ")")
			}
		}
		want = append(want, p)
	}
	sortPackages(want)

	got := slices.Clone(res.Packages)
	for i := range got {
		if !strings.HasPrefix(got[i].PURL, "pkg:deb/debian/"+got[i].Name+"@") {
			t.Errorf("%s: PURL %q, want pkg:deb/debian/%s@...", got[i].Name, got[i].PURL, got[i].Name)
		}
		got[i].PURL = ""
	}
	if !slices.Equal(got, want) {
		t.Errorf("packages:\n got %+v\nwant %+v", got, want)
	}

	// The source names the brief pins, independent of the fixture parsing.
	pk := byName(res.Packages)
	for name, src := range map[string]string{"zlib1g": "zlib", "liblzma5": "xz-utils", "libbz2-1.0": "bzip2", "base-files": ""} {
		p, ok := pk["dpkg/"+name]
		if !ok {
			t.Errorf("package %s not found", name)
			continue
		}
		if p.SourceName != src {
			t.Errorf("%s: SourceName %q, want %q", name, p.SourceName, src)
		}
		if p.Version == "" || p.AddedBy != "" {
			t.Errorf("%s: Version %q AddedBy %q, want a version and no AddedBy", name, p.Version, p.AddedBy)
		}
	}
	if got := pk["dpkg/libbz2-1.0"]; got.SourceVersion == "" || got.SourceVersion == got.Version {
		t.Errorf("libbz2-1.0: SourceVersion %q should be the source's own version (binary %q)", got.SourceVersion, got.Version)
	}

	// etc/os-release is a symlink to ../usr/lib/os-release in base-files.
	if res.OSRelease["ID"] != "debian" || res.OSRelease["VERSION_ID"] != "12" {
		t.Errorf("OSRelease = %v, want ID=debian VERSION_ID=12", res.OSRelease)
	}
	if res.OSReleasePath != usrOSRelease {
		t.Errorf("OSReleasePath = %q, want %q", res.OSReleasePath, usrOSRelease)
	}
	for _, f := range []string{"var/lib/dpkg/status", usrOSRelease} {
		if !slices.Contains(res.Files, f) {
			t.Errorf("Files %v lacks %s", res.Files, f)
		}
	}
	if len(res.Whiteouts) != 0 || len(res.Warnings) != 0 {
		t.Errorf("Whiteouts %v Warnings %v, want none", res.Whiteouts, res.Warnings)
	}

	// The same layer uncompressed gives the same result.
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	res2 := index(t, digest, plain, mtTar)
	if !slices.Equal(res2.Packages, res.Packages) {
		t.Errorf("uncompressed layer: packages %+v, want %+v", res2.Packages, res.Packages)
	}
}
