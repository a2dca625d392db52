package index

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"
)

// indexBounded indexes a tar layer with the indexer's bounds of recorded
// files and bytes lowered, for small tests.
func indexBounded(t *testing.T, blob []byte, maxFiles int, maxRecorded int64) LayerResult {
	t.Helper()
	ix, err := newIndexer(context.Background(), "sha256:bounded", Limits{}.withDefaults())
	if err != nil {
		t.Fatal(err)
	}
	ix.maxFiles, ix.maxRecorded = maxFiles, maxRecorded
	res, err := ix.run(bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	roundTrip(t, res)
	return res
}

// longName is a 64 KiB path, distinct for each i.
func longName(dir string, i int) string {
	return fmt.Sprintf("%s/%08d-%s", dir, i, strings.Repeat("n", 64<<10-10-len(dir)))
}

// TestIndexLayerRecordedPathBytes: every executable's path and every
// whiteout is recorded in the layer's result, which is kept in memory and
// in the layer cache; with names of up to 1 MiB a few MB of compressed
// layer could make them GiB. The bytes of the paths a layer records
// (files, whiteouts, packages' paths) are bounded, past which the layer is
// unsupported. (The bound is lowered to 1 MiB here to keep the test
// small.)
func TestIndexLayerRecordedPathBytes(t *testing.T) {
	isolateTemp(t)
	const bound = 1 << 20
	var entries []entry
	for i := range bound/(64<<10) + 1 {
		if i%2 == 0 {
			entries = append(entries, entry{name: longName("usr/bin", i), mode: 0o755})
		} else {
			entries = append(entries, file(longName("etc", i)+"/.wh.x", ""))
		}
	}
	blob := buildTar(t, entries...)
	if len(blob) > bound*2 {
		t.Fatalf("layer of %d bytes", len(blob))
	}
	res := indexBounded(t, blob, maxRecordedFiles, bound)
	if res.Status != StatusUnsupported || !strings.Contains(res.Reason, "bytes of paths") {
		t.Fatalf("%d executables and whiteouts of 64 KiB names: %q (%s, %d files, %d whiteouts)",
			len(entries), res.Status, res.Reason, len(res.Files), len(res.Whiteouts))
	}
	// Within the bound, they are recorded.
	res = indexBounded(t, buildTar(t, entries[:len(entries)-2]...), maxRecordedFiles, bound)
	if res.Status != StatusIndexed || len(res.Files)+len(res.Whiteouts) != len(entries)-2 {
		t.Fatalf("%d executables and whiteouts of 64 KiB names: %q (%s, %d files, %d whiteouts)",
			len(entries)-2, res.Status, res.Reason, len(res.Files), len(res.Whiteouts))
	}
}

// TestIndexLayerPackagePathBytes: each package found carries the path of
// its file, so hard links of long names to a package database multiply
// the bytes of the result; they count against the same bound (lowered to
// 1 MiB here).
func TestIndexLayerPackagePathBytes(t *testing.T) {
	isolateTemp(t)
	const bound, n = 1 << 20, 5
	var pkgs [][2]string
	for i := range n {
		pkgs = append(pkgs, [2]string{fmt.Sprintf("p%d", i), "1.0"})
	}
	links := bound/(n*64<<10) + 1
	entries := []entry{file("var/lib/dpkg/status.d/base", dpkgStatus(pkgs...))}
	for i := range links {
		entries = append(entries, entry{name: longName("var/lib/dpkg/status.d", i), typ: tar.TypeLink, link: "var/lib/dpkg/status.d/base"})
	}
	res := indexBounded(t, buildTar(t, entries...), maxRecordedFiles, bound)
	if res.Status != StatusUnsupported || !strings.Contains(res.Reason, "bytes of paths and packages") {
		t.Fatalf("%d packages linked %d times under 64 KiB names: %q (%s, %d packages)", n, links, res.Status, res.Reason, len(res.Packages))
	}
	// Within the bound, the links are read.
	if res := indexBounded(t, buildTar(t, entries[:2]...), maxRecordedFiles, bound); res.Status != StatusIndexed || len(res.Packages) != 2*n {
		t.Fatalf("%d packages linked once under a 64 KiB name: %q (%s, %d packages)", n, res.Status, res.Reason, len(res.Packages))
	}
}

// TestIndexLayerRecordedPathCount: the number of files a layer records is
// bounded too (short names cost little each, but a map entry apiece). (The
// bound is lowered to 100 here to keep the test small.)
func TestIndexLayerRecordedPathCount(t *testing.T) {
	isolateTemp(t)
	var entries []entry
	for i := range 101 {
		entries = append(entries, entry{name: fmt.Sprintf("usr/bin/tool%d", i), mode: 0o755})
	}
	if res := indexBounded(t, buildTar(t, entries...), 100, maxRecordedBytes); res.Status != StatusUnsupported || !strings.Contains(res.Reason, "over 100 files") {
		t.Fatalf("101 executables: %q (%s)", res.Status, res.Reason)
	}
	if res := indexBounded(t, buildTar(t, entries[:100]...), 100, maxRecordedBytes); res.Status != StatusIndexed || len(res.Files) != 100 {
		t.Fatalf("100 executables: %q (%s), %d files", res.Status, res.Reason, len(res.Files))
	}
}
