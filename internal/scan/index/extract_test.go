package index

import (
	"archive/zip"
	"bytes"
	"debug/buildinfo"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"slices"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

const alpineInstalled = `C:Q1Bvxjn6U5LIg0jIVy6ZUYQ/pyaxU=
P:musl
V:1.2.4_git20230717-r4
A:x86_64
S:407278
I:667648
T:the musl c library (libc) implementation
U:https://musl.libc.org/
L:MIT
o:musl
m:Timo Teräs <timo.teras@iki.fi>
t:1705335567
c:04b5af6e4e0ba7a4c4a8f0c46b1dcbfaf2e68e67
p:so:libc.musl-x86_64.so.1=1
F:lib
R:ld-musl-x86_64.so.1
a:0:0:755

C:Q1P4uhNyMkpNGQpnoBrKvi7qUcWDM=
P:libcrypto3
V:3.1.4-r5
A:x86_64
S:1713452
I:4243456
T:Crypto library from openssl
U:https://www.openssl.org/
L:Apache-2.0
o:openssl
m:Ariadne Conner <ariadne@dereferenced.org>
t:1706284862
c:40d8a2af57a3d5e2c8f8a2e6f7ba2a4c3a9a5b1e
D:so:libc.musl-x86_64.so.1

C:Q1rWGB1Ij5YkBPcyWqGzZbmU/Bq0U=
P:busybox-binsh
V:1.36.1-r15
A:x86_64
S:1535
I:1
T:busybox ash /bin/sh
U:https://busybox.net/
L:GPL-2.0-only
o:busybox
m:Sören Tempel <soeren+alpine@soeren-tempel.net>
t:1702907405
c:4d0b7e0c2d5a1b5e31b5f1fdfb8f2b6bf4d1b0a8

`

const alpineOSRelease = `NAME="Alpine Linux"
ID=alpine
VERSION_ID=3.19.1
PRETTY_NAME="Alpine Linux v3.19"
HOME_URL="https://alpinelinux.org/"
BUG_REPORT_URL="https://gitlab.alpinelinux.org/alpine/aports/-/issues"
`

func TestIndexLayerAlpine(t *testing.T) {
	blob := buildTar(t,
		file("etc/os-release", alpineOSRelease),
		file("lib/apk/db/installed", alpineInstalled),
	)
	// zstd-compressed, announced as gzip: the magic bytes decide.
	var buf bytes.Buffer
	zw, err := zstd.NewWriter(&buf)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zw.Write(blob); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	res := index(t, "sha256:alpine", buf.Bytes(), mtGzip)

	want := []Package{
		{Kind: KindApk, Name: "busybox-binsh", Version: "1.36.1-r15", SourceName: "busybox", Path: "lib/apk/db/installed"},
		{Kind: KindApk, Name: "libcrypto3", Version: "3.1.4-r5", SourceName: "openssl", Path: "lib/apk/db/installed"},
		{Kind: KindApk, Name: "musl", Version: "1.2.4_git20230717-r4", SourceName: "musl", Path: "lib/apk/db/installed"},
	}
	got := slices.Clone(res.Packages)
	for i := range got {
		if !strings.HasPrefix(got[i].PURL, "pkg:apk/alpine/"+got[i].Name+"@") {
			t.Errorf("PURL %q", got[i].PURL)
		}
		got[i].PURL = ""
	}
	if !slices.Equal(got, want) {
		t.Errorf("packages:\n got %+v\nwant %+v", got, want)
	}
	if res.OSRelease["ID"] != "alpine" || res.OSRelease["VERSION_ID"] != "3.19.1" || res.OSRelease["NAME"] != "Alpine Linux" {
		t.Errorf("OSRelease = %v", res.OSRelease)
	}
	if res.OSReleasePath != etcOSRelease {
		t.Errorf("OSReleasePath = %q", res.OSReleasePath)
	}
	if want := []string{"etc/os-release", "lib/apk/db/installed"}; !slices.Equal(res.Files, want) {
		t.Errorf("Files = %v, want %v", res.Files, want)
	}
}

// goPackages returns the go packages found at path, by name.
func goPackages(t *testing.T, res LayerResult, path string) map[string]Package {
	t.Helper()
	found := map[string]Package{}
	for _, p := range res.Packages {
		if p.Kind == KindGo && p.Path == path {
			found[p.Name] = p
		}
	}
	return found
}

// TestIndexLayerTestExecutable indexes the running test binary (big enough
// to be spooled to a temporary file). Test binaries carry no dependency list
// in their build info, only the toolchain and main module.
func TestIndexLayerTestExecutable(t *testing.T) {
	isolateTemp(t)
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(exe)
	if err != nil {
		t.Fatal(err)
	}
	if len(bin) <= memFileBytes {
		t.Logf("test binary is %d bytes: the in-memory path is tested, not the spooled one", len(bin))
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		t.Fatal("no build info in the test binary")
	}
	blob := buildTar(t,
		entry{name: "usr/local/bin/app", body: bin, mode: 0o755},
		// A hard link gets the same packages.
		entry{name: "usr/bin/app2", typ: '1', link: "usr/local/bin/app", mode: 0o755},
		// A shell script is wanted (executable) but has no packages.
		entry{name: "usr/local/bin/run.sh", body: []byte("#!/bin/sh\nexec app\n"), mode: 0o755},
	)
	res := index(t, "sha256:go", blob, mtTar)
	for _, p := range res.Packages {
		if p.Kind != KindGo {
			t.Errorf("unexpected package %+v", p)
		}
	}
	found := goPackages(t, res, "usr/local/bin/app")
	if want := strings.TrimPrefix(bi.GoVersion, "go"); found[GoStdlib].Version != want {
		t.Errorf("stdlib version %q, want %q", found[GoStdlib].Version, want)
	}
	if p := found[bi.Main.Path]; p.Version != bi.Main.Version {
		t.Errorf("main module %s: %+v, want version %q", bi.Main.Path, p, bi.Main.Version)
	}
	if linked := goPackages(t, res, "usr/bin/app2"); len(linked) != len(found) || len(found) < 2 {
		t.Errorf("hard link has %d packages, target %d", len(linked), len(found))
	}
	want := []string{"usr/bin/app2", "usr/local/bin/app", "usr/local/bin/run.sh"}
	if !slices.Equal(res.Files, want) {
		t.Errorf("Files = %v, want %v", res.Files, want)
	}
}

// TestIndexLayerGoBinary builds testdata/gobin, a program with module
// dependencies, and checks every module of its build info is found.
func TestIndexLayerGoBinary(t *testing.T) {
	goTool, err := exec.LookPath("go")
	if err != nil {
		t.Skip("go tool not found:", err)
	}
	out := filepath.Join(t.TempDir(), "gobin")
	cmd := exec.Command(goTool, "build", "-o", out, "./testdata/gobin")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	bin, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	bi, err := buildinfo.Read(bytes.NewReader(bin))
	if err != nil {
		t.Fatal(err)
	}
	res := index(t, "sha256:gobin", gz(t, buildTar(t, entry{name: "app/server", body: bin, mode: 0o755})), mtGzip)
	found := goPackages(t, res, "app/server")
	if want := strings.TrimPrefix(bi.GoVersion, "go"); found[GoStdlib].Version != want || !strings.HasPrefix(found[GoStdlib].PURL, "pkg:golang/") {
		t.Errorf("stdlib = %+v, want version %q", found[GoStdlib], want)
	}
	if len(bi.Deps) < 2 {
		t.Fatalf("build info has %d deps", len(bi.Deps))
	}
	for _, d := range bi.Deps {
		if p := found[d.Path]; p.Version != d.Version || p.PURL == "" {
			t.Errorf("dependency %s: got %+v, want version %q", d.Path, p, d.Version)
		}
	}
	if p := found["github.com/google/osv-scalibr"]; !strings.HasPrefix(p.PURL, "pkg:golang/github.com/google/osv-scalibr@") {
		t.Errorf("osv-scalibr: %+v", p)
	}
	if len(found) != len(bi.Deps)+2 { // + stdlib + main module
		t.Errorf("found %d go packages, want %d: %+v", len(found), len(bi.Deps)+2, found)
	}
}

func TestIndexLayerLanguagePackages(t *testing.T) {
	metadata := "Metadata-Version: 2.1\nName: requests\nVersion: 2.31.0\nSummary: Python HTTP for Humans.\nRequires-Dist: idna (<4,>=2.5)\n\nbody\n"
	pkgJSON := `{"name": "left-pad", "version": "1.3.0", "license": "WTFPL", "main": "index.js"}`
	appJSON := `{"name": "my-app", "version": "0.0.1"}`
	blob := buildTar(t,
		file("usr/lib/python3.12/site-packages/requests-2.31.0.dist-info/METADATA", metadata),
		file("app/node_modules/left-pad/package.json", pkgJSON),
		file("app/package.json", appJSON), // the application itself, not a dependency
		file("opt/lib/guava-31.1-jre.jar", string(jar(t, map[string]string{
			"META-INF/maven/com.google.guava/guava/pom.properties": "groupId=com.google.guava\nartifactId=guava\nversion=31.1-jre\n",
		}))),
	)
	res := index(t, "sha256:lang", blob, mtTar)
	want := []Package{
		{Kind: KindMaven, Name: "com.google.guava:guava", Version: "31.1-jre", Path: "opt/lib/guava-31.1-jre.jar"},
		{Kind: KindNPM, Name: "left-pad", Version: "1.3.0", Path: "app/node_modules/left-pad/package.json"},
		{Kind: KindPyPI, Name: "requests", Version: "2.31.0", Path: "usr/lib/python3.12/site-packages/requests-2.31.0.dist-info/METADATA"},
	}
	got := slices.Clone(res.Packages)
	for i := range got {
		if got[i].PURL == "" {
			t.Errorf("%s: no PURL", got[i].Name)
		}
		got[i].PURL = ""
	}
	if !slices.Equal(got, want) {
		t.Errorf("packages:\n got %+v\nwant %+v", got, want)
	}
	if len(res.Warnings) != 0 {
		t.Errorf("Warnings = %v", res.Warnings)
	}
}

func jar(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestIndexLayerRPM(t *testing.T) {
	isolateTemp(t) // the rpmdb is copied to a temporary directory
	db, err := os.ReadFile("testdata/rpm-Packages_epoch")
	if err != nil {
		t.Fatal(err)
	}
	blob := gz(t, buildTar(t,
		file("etc/os-release", "NAME=Fedora\nID=fedora\nVERSION_ID=32\n"),
		entry{name: "var/lib/rpm/Packages", body: db, mode: 0o644},
	))
	res := index(t, "sha256:rpm", blob, mtGzip)
	if len(res.Packages) != 1 {
		t.Fatalf("packages = %+v, want 1", res.Packages)
	}
	got := res.Packages[0]
	want := Package{Kind: KindRPM, Name: "hello", Version: "1:0.0.1-rls", SourceName: "hello", SourceVersion: "0.0.1-rls", Path: "var/lib/rpm/Packages", PURL: got.PURL}
	if got != want || !strings.HasPrefix(got.PURL, "pkg:rpm/fedora/hello@") {
		t.Errorf("package = %+v, want %+v", got, want)
	}
}

func TestParseSourceRPM(t *testing.T) {
	for in, want := range map[string][2]string{
		"zlib-1.2.11-40.el9.src.rpm":        {"zlib", "1.2.11-40.el9"},
		"python3-pip-21.3.1-1.fc36.src.rpm": {"python3-pip", "21.3.1-1.fc36"},
		"kernel-5.14.0-1.nosrc.rpm":         {"kernel", "5.14.0-1"},
		"garbage":                           {"", ""},
		"":                                  {"", ""},
		"-1-2.src.rpm":                      {"", ""},
	} {
		n, v := parseSourceRPM(in)
		if n != want[0] || v != want[1] {
			t.Errorf("parseSourceRPM(%q) = %q, %q; want %q, %q", in, n, v, want[0], want[1])
		}
	}
}
