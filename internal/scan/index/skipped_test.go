package index

import (
	"archive/tar"
	"bytes"
	"strings"
	"testing"
)

// goELF is the start of an executable holding a Go binary's build
// information marker (debug/buildinfo's magic) at offset at, padded to
// size bytes.
func goELF(size, at int) []byte {
	b := make([]byte, size)
	copy(b, "\x7fELF\x02\x01\x01")
	copy(b[at:], "\xff Go buildinf:")
	return b
}

// TestIndexLayerSkippedFilesAreGaps: a file an extractor wants but that is
// over scan.maxFileBytes is not read, and its packages are unknown: it is
// a gap of the report (an image is never complete with it), not only a
// warning, for a jar, a wheel or an npm package.json as for an OS package
// database. An executable over the limit is a gap when it is a Go binary
// (its build information marker is in it); one that is not (a big C
// library) holds nothing the scanner reads at any size, and is no gap.
// Files under the limit are read as before.
func TestIndexLayerSkippedFilesAreGaps(t *testing.T) {
	isolateTemp(t)
	const limit = 1 << 10
	pom := "groupId=com.example\nartifactId=%s\nversion=1.0\n"
	small := jar(t, map[string]string{"META-INF/maven/com.example/small/pom.properties": strings.ReplaceAll(pom, "%s", "small")})
	big := storedZip(t, map[string][]byte{
		"META-INF/maven/com.example/app/pom.properties": []byte(strings.ReplaceAll(pom, "%s", "app")),
		"com/example/App.class":                         bytes.Repeat([]byte{0xca}, 2<<10),
	})
	if len(small) >= limit || len(big) <= limit || len(big) > 3<<10 {
		t.Fatalf("jars of %d and %d bytes: want one under %d bytes and one of about 2 KiB", len(small), len(big), limit)
	}
	blob := buildTar(t,
		entry{name: "opt/app.jar", body: big, mode: 0o644},
		entry{name: "opt/lib/small.jar", body: small, mode: 0o644},
		entry{name: "opt/big-1.0-py3-none-any.whl", body: bytes.Repeat([]byte("w"), 2<<10), mode: 0o644},
		file("app/node_modules/big/package.json", `{"name": "big", "version": "1.0.0", "x": "`+strings.Repeat("x", 2<<10)+`"}`),
		// The marker across the boundary of the scanner's first 32 KiB read.
		entry{name: "usr/local/bin/goapp", body: goELF(40<<10, 32<<10-5), mode: 0o755},
		entry{name: "usr/lib/libbig.so", body: append([]byte("\x7fELF\x02\x01\x01"), make([]byte, 2<<10)...), mode: 0o644},
		entry{name: "usr/local/bin/script", body: []byte("#!/bin/sh\n" + strings.Repeat("#", 2<<10)), mode: 0o755},
		entry{name: "usr/local/bin/goapp2", typ: tar.TypeLink, link: "usr/local/bin/goapp", mode: 0o755},
	)
	res := indexWith(t, "sha256:skipped", blob, Limits{MaxFileBytes: limit})
	if res.Status != StatusIndexed {
		t.Fatalf("status %q: %s", res.Status, res.Reason)
	}
	got := unreadReasons(res)
	for _, p := range []string{"opt/app.jar", "opt/big-1.0-py3-none-any.whl", "app/node_modules/big/package.json", "usr/local/bin/goapp", "usr/local/bin/goapp2"} {
		if !strings.Contains(got[p], "over the 1024-byte file limit") {
			t.Errorf("Unread[%s] = %q, want it unread for the file limit", p, got[p])
		}
	}
	if len(got) != 5 {
		t.Errorf("Unread = %+v, want the 5 files over the limit an extractor reads (not the small jar, the library or the script)", res.Unread)
	}
	if pkgs := byName(res.Packages); len(res.Packages) != 1 || pkgs["maven/com.example:small"].Path != "opt/lib/small.jar" {
		t.Errorf("packages = %+v, want com.example:small from the small jar alone", res.Packages)
	}
	img := Merge([]LayerResult{res})
	if len(img.Gaps) != 5 {
		t.Errorf("image gaps = %+v, want the 5 unread files", img.Gaps)
	}

	// Within the limit, the same layer has no gap.
	res = indexWith(t, "sha256:skipped", blob, Limits{})
	if len(res.Unread) != 0 || byName(res.Packages)["maven/com.example:app"].Path != "opt/app.jar" {
		t.Errorf("within the limit: Unread %+v, packages %+v", res.Unread, res.Packages)
	}
}

// TestIndexLayerSparseExecutableCharged: an executable over the file
// limit is looked through for a Go binary's marker; a sparse tar entry of
// a few bytes claiming a GiB of holes (which archive/tar reads as zeros)
// counts at the bytes the holes make up, so the layer is refused at
// scan.maxUncompressedBytes rather than read for a GiB.
func TestIndexLayerSparseExecutableCharged(t *testing.T) {
	blob := paxSparse("opt/lib/huge.so", 1<<30, "\x7fELF\x02\x01\x01")
	blob = append(blob, make([]byte, 1024)...)
	res := indexWith(t, "sha256:sparse-elf", blob, Limits{MaxFileBytes: 1 << 20, MaxUncompressedBytes: 16 << 20})
	if res.Status != StatusUnsupported || !strings.Contains(res.Reason, "16777216-byte limit") {
		t.Fatalf("a sparse executable of 1 GiB: status %q (%s), want unsupported at the limit", res.Status, res.Reason)
	}
}

// TestIndexLayerJavaExtractorErrorsAreGaps: a jar the Java archive
// extractor reads only in part (past its nesting depth or its bound of
// bytes unpacked, or with a nested archive it cannot open) is a gap, its
// packages not all known. A file named like a jar that is not a zip at
// all holds no Java archive: a warning, no gap.
func TestIndexLayerJavaExtractorErrorsAreGaps(t *testing.T) {
	isolateTemp(t)
	const limit = 16 << 10
	deep := storedZip(t, nil)
	for range javaMaxZipDepth + 1 {
		deep = storedZip(t, map[string][]byte{"a.jar": deep})
	}
	// Unpacked, the inner jar is over twice the file limit.
	wide := jar(t, map[string]string{"lib/inner.jar": string(storedZip(t, map[string][]byte{"zeros": make([]byte, 40<<10)}))})
	broken := jar(t, map[string]string{"WEB-INF/lib/inner.jar": "PK\x05\x06" + strings.Repeat(" not a zip", 8)})
	blob := buildTar(t,
		entry{name: "opt/deep.jar", body: deep, mode: 0o644},
		entry{name: "opt/wide.jar", body: wide, mode: 0o644},
		entry{name: "opt/broken.war", body: broken, mode: 0o644},
		file("opt/notes.jar", "not a jar, only named like one\n"),
	)
	for name, b := range map[string][]byte{"deep": deep, "wide": wide, "broken": broken} {
		if len(b) > limit {
			t.Fatalf("%s.jar is %d bytes, over the %d-byte limit", name, len(b), limit)
		}
	}
	res := indexWith(t, "sha256:java", blob, Limits{MaxFileBytes: limit})
	got := unreadReasons(res)
	for p, want := range map[string]string{
		"opt/deep.jar":   "max zip depth",
		"opt/wide.jar":   "max opened bytes",
		"opt/broken.war": "invalid archive",
	} {
		if !strings.Contains(got[p], "the java/archive extractor failed on it") || !strings.Contains(got[p], want) {
			t.Errorf("Unread[%s] = %q, want the extractor's failure %q", p, got[p], want)
		}
	}
	if len(got) != 3 {
		t.Errorf("Unread = %+v, want the 3 jars the extractor failed on (not notes.jar)", res.Unread)
	}
	if !strings.Contains(strings.Join(res.Warnings, "\n"), "opt/notes.jar") {
		t.Errorf("Warnings = %q, want one about opt/notes.jar", res.Warnings)
	}
}
