package index

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"fmt"
	"hash/crc32"
	"runtime"
	"strings"
	"testing"
	"time"
)

// deflateBomb is a zip entry that expands to prefix followed by unit
// repeated times: the compressed form of unit is written once per copy
// (each copy is compressed without history, so copies can follow one
// another), which keeps a 200 MiB entry a few hundred KiB and quick to
// build.
type deflateBomb struct {
	data []byte
	crc  uint32
	size uint64
}

func newDeflateBomb(t *testing.T, prefix, unit string, times int) deflateBomb {
	t.Helper()
	block := func(s string) []byte {
		var buf bytes.Buffer
		fw, err := flate.NewWriter(&buf, flate.BestCompression)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := fw.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
		if err := fw.Flush(); err != nil {
			t.Fatal(err)
		}
		return buf.Bytes()
	}
	b := deflateBomb{data: block(prefix)}
	b.crc = crc32.ChecksumIEEE([]byte(prefix))
	b.size = uint64(len(prefix))
	u, raw := block(unit), []byte(unit)
	for range times {
		b.data = append(b.data, u...)
		b.crc = crc32.Update(b.crc, crc32.IEEETable, raw)
		b.size += uint64(len(raw))
	}
	var end bytes.Buffer
	fw, _ := flate.NewWriter(&end, flate.BestCompression)
	if err := fw.Close(); err != nil { // an empty final block
		t.Fatal(err)
	}
	b.data = append(b.data, end.Bytes()...)
	return b
}

// zipWith builds a zip of small files, and of bombs written raw.
func zipWith(t *testing.T, files map[string]string, bombs map[string]deflateBomb) []byte {
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
	for name, b := range bombs {
		w, err := zw.CreateRaw(&zip.FileHeader{Name: name, Method: zip.Deflate, CRC32: b.crc,
			CompressedSize64: uint64(len(b.data)), UncompressedSize64: b.size})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(b.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// storedZip builds a zip whose files are stored, as Spring Boot stores
// the jars nested in an application jar.
func storedZip(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(body); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func unreadReasons(res LayerResult) map[string]string {
	m := map[string]string{}
	for _, g := range res.Unread {
		m[g.Path] = g.Reason
	}
	return m
}

// TestIndexLayerArchiveMetadataBound: the Java archive extractor reads a
// jar's MANIFEST.MF whole into memory, the wheel and egg extractor every
// Requires-Dist line of a METADATA, and a jar or wheel of a few hundred
// KiB can hold such a file of 200 MiB. An archive whose metadata files
// claim more than the indexer's bound is not handed to the extractors
// (nested jars included) and is listed as unread, so the image is not
// called complete; other archives of the layer are still read.
func TestIndexLayerArchiveMetadataBound(t *testing.T) {
	isolateTemp(t)
	const bombBytes = 200 << 20
	line := "A: b\n"
	manifest := newDeflateBomb(t, "Manifest-Version: 1.0\n", strings.Repeat(line, (1<<20)/len(line)), bombBytes>>20)
	bombJar := zipWith(t, map[string]string{
		"META-INF/maven/com.example/app/pom.properties": "groupId=com.example\nartifactId=app\nversion=1.0\n",
	}, map[string]deflateBomb{"META-INF/MANIFEST.MF": manifest})
	dist := "Requires-Dist: x" + strings.Repeat("y", 110) + "\n"
	metadata := newDeflateBomb(t, "Metadata-Version: 2.1\nName: evil\nVersion: 1.0\n", strings.Repeat(dist, (1<<20)/len(dist)), bombBytes>>20)
	wheel := zipWith(t, nil, map[string]deflateBomb{"evil-1.0.dist-info/METADATA": metadata})
	// A long description after the headers is not read by the extractor:
	// such a wheel is read.
	longDesc := zipWith(t, map[string]string{
		"fine-1.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: fine\nVersion: 1.0\n\n" + strings.Repeat("Some description.\n", 1<<19),
	}, nil)
	fatJar := storedZip(t, map[string][]byte{
		"BOOT-INF/lib/guava-31.1-jre.jar": jar(t, map[string]string{
			"META-INF/maven/com.google.guava/guava/pom.properties": "groupId=com.google.guava\nartifactId=guava\nversion=31.1-jre\n",
		}),
		"BOOT-INF/lib/inner.jar": bombJar,
	})
	if len(bombJar) > 1<<20 || len(fatJar) > 2<<20 || len(wheel) > 1<<20 {
		t.Fatalf("archives of %d, %d and %d bytes: the test should build small ones", len(bombJar), len(fatJar), len(wheel))
	}
	blob := buildTar(t,
		entry{name: "app/app.jar", body: bombJar, mode: 0o644},
		entry{name: "app/fat.jar", body: fatJar, mode: 0o644},
		entry{name: "app/evil-1.0-py3-none-any.whl", body: wheel, mode: 0o644},
		entry{name: "app/fine-1.0-py3-none-any.whl", body: longDesc, mode: 0o644},
		// Installed, outside an archive, such a METADATA is refused too.
		file("usr/lib/python3/site-packages/evil2-1.0.dist-info/METADATA",
			"Metadata-Version: 2.1\nName: evil2\nVersion: 1.0\n"+strings.Repeat(dist, (maxArchiveMetadataBytes/len(dist))+1)),
		file("opt/lib/guava-31.1-jre.jar", string(jar(t, map[string]string{
			"META-INF/maven/com.google.guava/guava/pom.properties": "groupId=com.google.guava\nartifactId=guava\nversion=31.1-jre\n",
		}))),
	)

	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	res := indexWith(t, "sha256:bombs", blob, Limits{})
	runtime.ReadMemStats(&after)
	grew := after.TotalAlloc - before.TotalAlloc
	if grew > 64<<20 {
		t.Errorf("indexing allocated %d MiB: a %d MiB metadata file was read", grew>>20, bombBytes>>20)
	}
	t.Logf("indexing allocated %d KiB", grew>>10)
	if res.Status != StatusIndexed {
		t.Fatalf("status %q: %s", res.Status, res.Reason)
	}
	got := unreadReasons(res)
	for p, want := range map[string]string{
		"app/app.jar":                   "META-INF/MANIFEST.MF",
		"app/fat.jar":                   "BOOT-INF/lib/inner.jar/META-INF/MANIFEST.MF",
		"app/evil-1.0-py3-none-any.whl": "evil-1.0.dist-info/METADATA",
		"usr/lib/python3/site-packages/evil2-1.0.dist-info/METADATA": "header lines",
	} {
		if !strings.Contains(got[p], want) {
			t.Errorf("Unread[%s] = %q, want it to name %q", p, got[p], want)
		}
	}
	if len(got) != 4 {
		t.Errorf("Unread = %+v, want the three archives with a bomb and the long METADATA", res.Unread)
	}
	pkgs := byName(res.Packages)
	if len(res.Packages) != 2 || pkgs["maven/com.google.guava:guava"].Path != "opt/lib/guava-31.1-jre.jar" || pkgs["pypi/fine"].Version != "1.0" {
		t.Errorf("packages = %+v, want guava in opt/lib and fine", res.Packages)
	}

	// Refused archives are gaps of the merged image.
	img := Merge([]LayerResult{res})
	if len(img.Gaps) != 4 {
		t.Errorf("image gaps = %+v, want the refused files", img.Gaps)
	}
}

// TestIndexLayerArchiveMetadataCharged: the metadata an archive's
// extractor reads counts against MaxUncompressedBytes, at its size
// unpacked: many jars of a few KiB each holding a 1 MiB manifest add up.
func TestIndexLayerArchiveMetadataCharged(t *testing.T) {
	isolateTemp(t)
	line := "Implementation-Title: x" + strings.Repeat("y", 1000) + "\n"
	manifest := newDeflateBomb(t, "Manifest-Version: 1.0\n", strings.Repeat(line, (256<<10)/len(line)), 4)
	j := zipWith(t, nil, map[string]deflateBomb{"META-INF/MANIFEST.MF": manifest})
	var entries []entry
	for i := range 8 {
		entries = append(entries, entry{name: fmt.Sprintf("app/lib%d.jar", i), body: j, mode: 0o644})
	}
	blob := buildTar(t, entries...)
	lim := Limits{MaxUncompressedBytes: int64(len(blob)) + 4<<20}
	res := indexWith(t, "sha256:charged", blob, lim)
	if res.Status != StatusUnsupported || !strings.Contains(res.Reason, "limit") {
		t.Fatalf("8 jars of a 1 MiB manifest with %d bytes to read: %q (%s)", lim.MaxUncompressedBytes, res.Status, res.Reason)
	}
	// Within the limit, they are read.
	if res := indexWith(t, "sha256:charged", blob, Limits{}); res.Status != StatusIndexed || len(res.Unread) != 0 {
		t.Fatalf("8 jars of a 1 MiB manifest: %q (%s), unread %+v", res.Status, res.Reason, res.Unread)
	}
}

// TestIndexLayerMalformedManifestNoLeak: the Java archive extractor
// parses MANIFEST.MF through a pipe fed by a goroutine, which blocks for
// good when the parser stops at a malformed line before the end,
// keeping the jar in memory. Such a jar is not handed to it (and is
// listed as unread).
func TestIndexLayerMalformedManifestNoLeak(t *testing.T) {
	isolateTemp(t)
	body := "Manifest-Version: 1.0\nthis line has no colon\n" + strings.Repeat("X-Pad: 0123456789\n", 500)
	j := jar(t, map[string]string{
		"META-INF/MANIFEST.MF":                          body,
		"META-INF/maven/com.example/app/pom.properties": "groupId=com.example\nartifactId=app\nversion=1.0\n",
	})
	var entries []entry
	for i := range 10 {
		entries = append(entries, entry{name: fmt.Sprintf("app/lib%d.jar", i), body: j, mode: 0o644})
	}
	// A well-formed manifest, empty lines and a last line without a
	// newline included, is read.
	entries = append(entries, file("app/good.jar", string(jar(t, map[string]string{
		"META-INF/MANIFEST.MF":                           "Manifest-Version: 1.0\r\nImplementation-Title: good\r\n\r\nName: a/b.class\r\nSHA-256-Digest: AAAA\r\n\r\nName: c",
		"META-INF/maven/com.example/good/pom.properties": "groupId=com.example\nartifactId=good\nversion=2.0\n",
	}))))
	before := runtime.NumGoroutine()
	res := indexWith(t, "sha256:malformed", buildTar(t, entries...), Limits{})
	deadline := time.Now().Add(2 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Errorf("goroutines: %d before indexing, %d after: the extractor's manifest readers were left blocked", before, n)
	}
	if res.Status != StatusIndexed {
		t.Fatalf("status %q: %s", res.Status, res.Reason)
	}
	got := unreadReasons(res)
	if len(got) != 10 || !strings.Contains(got["app/lib0.jar"], "META-INF/MANIFEST.MF") {
		t.Errorf("Unread = %+v, want the ten jars of a malformed manifest", res.Unread)
	}
	if len(res.Packages) != 1 || res.Packages[0].Name != "com.example:good" {
		t.Errorf("packages = %+v, want com.example:good alone", res.Packages)
	}
}
