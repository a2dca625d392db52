package index

import (
	"fmt"
	"os"
	"slices"
	"strings"
	"testing"
)

func dpkgStatus(pkgs ...[2]string) string {
	var b strings.Builder
	for _, p := range pkgs {
		fmt.Fprintf(&b, "Package: %s\nStatus: install ok installed\nPriority: optional\nArchitecture: amd64\nVersion: %s\nDescription: test package %s\n\n", p[0], p[1], p[0])
	}
	return b.String()
}

const debianOSRelease = "PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\n"

func TestMerge(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	l1 := index(t, "sha256:l1", gz(t, buildTar(t,
		file("etc/os-release", debianOSRelease),
		file("var/lib/dpkg/status", dpkgStatus([2]string{"a", "1.0"}, [2]string{"b", "1.0"})),
	)), mtGzip)
	l2 := index(t, "sha256:l2", buildTar(t,
		file("var/lib/dpkg/status", dpkgStatus([2]string{"a", "1.0"}, [2]string{"b", "2.0"}, [2]string{"c", "1.0"})),
		entry{name: "usr/local/bin/app", body: bin, mode: 0o755},
		file("opt/node/node_modules/left-pad/package.json", `{"name":"left-pad","version":"1.3.0"}`),
		file("usr/lib/python3/dist-packages/requests-2.31.0.dist-info/METADATA", "Name: requests\nVersion: 2.31.0\n"),
	), mtTar)
	broken := LayerResult{Digest: "sha256:broken", Status: StatusUnsupported, Reason: "test",
		Packages: []Package{{Kind: KindDpkg, Name: "ghost", Version: "1", Path: "var/lib/dpkg/status"}}}
	l3 := index(t, "sha256:l3", gz(t, buildTar(t,
		file("etc/os-release", strings.Replace(debianOSRelease, "bookworm)", "bookworm, patched)", 1)),
		file("usr/local/bin/.wh.app", ""),
		file("opt/node/.wh..wh..opq", ""),
		// Re-added below the opaque directory by the same layer.
		file("opt/node/node_modules/lodash/package.json", `{"name":"lodash","version":"4.17.21"}`),
	)), mtGzip)
	if want := []string{"opt/node/", "usr/local/bin/app"}; !slices.Equal(l3.Whiteouts, want) {
		t.Fatalf("l3 Whiteouts = %v, want %v", l3.Whiteouts, want)
	}
	if len(goPackages(t, l2, "usr/local/bin/app")) < 2 {
		t.Fatalf("layer 2 has no Go packages: %+v", l2.Packages)
	}

	img := Merge([]LayerResult{l1, l2, broken, l3})
	roundTrip(t, img)
	var got []string
	for _, p := range img.Packages {
		got = append(got, fmt.Sprintf("%s %s %s %s %s", p.Kind, p.Name, p.Version, p.Path, p.AddedBy))
	}
	want := []string{
		"dpkg a 1.0 var/lib/dpkg/status sha256:l1",
		"dpkg b 2.0 var/lib/dpkg/status sha256:l2",
		"dpkg c 1.0 var/lib/dpkg/status sha256:l2",
		"npm lodash 4.17.21 opt/node/node_modules/lodash/package.json sha256:l3",
		"pypi requests 2.31.0 usr/lib/python3/dist-packages/requests-2.31.0.dist-info/METADATA sha256:l2",
	}
	if !slices.Equal(got, want) {
		t.Errorf("packages:\n got %q\nwant %q", got, want)
	}
	if img.OSRelease["PRETTY_NAME"] != "Debian GNU/Linux 12 (bookworm, patched)" {
		t.Errorf("OSRelease = %v, want layer 3's", img.OSRelease)
	}

	// Without layer 3, the Go binary and left-pad are there and the
	// os-release is layer 1's.
	img = Merge([]LayerResult{l1, l2})
	if n := len(img.Packages); n != 5+len(goPackages(t, l2, "usr/local/bin/app")) {
		t.Errorf("Merge(l1, l2) has %d packages", n)
	}
	if img.OSRelease["PRETTY_NAME"] != "Debian GNU/Linux 12 (bookworm)" {
		t.Errorf("OSRelease = %v, want layer 1's", img.OSRelease)
	}

	// A layer deleting the os-release file removes it.
	l4 := index(t, "sha256:l4", buildTar(t, file("etc/.wh.os-release", "")), mtTar)
	if img := Merge([]LayerResult{l1, l3, l4}); img.OSRelease != nil {
		t.Errorf("OSRelease = %v after its deletion", img.OSRelease)
	}

	// Whiting out the dpkg database and re-adding it re-attributes.
	l5 := index(t, "sha256:l5", buildTar(t,
		file(".wh.var", ""),
		file("var/lib/dpkg/status", dpkgStatus([2]string{"a", "1.0"})),
	), mtTar)
	img = Merge([]LayerResult{l1, l5})
	if len(img.Packages) != 1 || img.Packages[0].AddedBy != "sha256:l5" {
		t.Errorf("after whiteout and re-add: %+v", img.Packages)
	}

	if img := Merge(nil); img.Packages == nil || len(img.Packages) != 0 {
		t.Errorf("Merge(nil) = %+v, want an empty non-nil package list", img)
	}
}

func TestDeleted(t *testing.T) {
	del, opq := whiteoutSets([]string{"usr/lib/python3", "etc/passwd", "opt/", "srv/www/"})
	for p, want := range map[string]bool{
		"usr/lib/python3":            true,
		"usr/lib/python3/x/METADATA": true,
		"usr/lib/python3.12/x":       false,
		"etc/passwd":                 true,
		"etc/passwd-":                false,
		"opt/a/b":                    true,
		"opt":                        false,
		"srv/www/x/package.json":     true,
		"srv/wwwx":                   false,
	} {
		if got := deleted(p, del, opq); got != want {
			t.Errorf("deleted(%q) = %v, want %v", p, got, want)
		}
	}
	del, opq = whiteoutSets([]string{"/"})
	if !deleted("var/lib/dpkg/status", del, opq) || !deleted("x", del, opq) {
		t.Error("a root opaque whiteout should delete everything")
	}
}
