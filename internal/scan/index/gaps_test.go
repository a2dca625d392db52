package index

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// indexWith runs IndexLayer with limits, failing the test on an error.
func indexWith(t *testing.T, digest string, blob []byte, lim Limits) LayerResult {
	t.Helper()
	res, err := IndexLayer(context.Background(), digest, bytes.NewReader(blob), mtTar, int64(len(blob)), lim)
	if err != nil {
		t.Fatalf("IndexLayer: %v", err)
	}
	roundTrip(t, res)
	return res
}

func gapPaths(gaps []Gap) []string {
	var out []string
	for _, g := range gaps {
		out = append(out, g.Path+"@"+g.Layer)
	}
	return out
}

// TestIndexLayerUnreadPackageDatabases: an OS package database a layer
// writes but the scanner cannot read is listed in Unread with the reason
// (a warning alone would let the image look clean); a hard link to it
// inherits that; a symbolic link is not followed unless it points at
// another database path.
func TestIndexLayerUnreadPackageDatabases(t *testing.T) {
	isolateTemp(t)
	big := dpkgStatus([2]string{"a", "1.0"}, [2]string{"b", "1.0"}, [2]string{"c", "1.0"})
	res := indexWith(t, "sha256:big", buildTar(t,
		file("etc/os-release", debianOSRelease),
		file("var/lib/dpkg/status", big),
		file("lib/apk/db/installed", "P:musl\nV:1.2.4-r2\n\n"),
		entry{name: "var/lib/dpkg/status.d/x", typ: tar.TypeLink, link: "var/lib/dpkg/status"},
		entry{name: "usr/lib/sysimage/rpm/Packages", typ: tar.TypeLink, link: "tmp/elsewhere"},
		entry{name: "var/lib/rpm/rpmdb.sqlite", typ: tar.TypeSymlink, link: "../../../opt/rpmdb.sqlite"},
		entry{name: "var/lib/apk/db/installed", typ: tar.TypeSymlink, link: "/lib/apk/db/installed"},
	), Limits{MaxFileBytes: int64(len(big)) - 1})
	if res.Status != StatusIndexed {
		t.Fatalf("status %q: %s", res.Status, res.Reason)
	}
	got := map[string]string{}
	for _, g := range res.Unread {
		got[g.Path] = g.Reason
	}
	for p, want := range map[string]string{
		"var/lib/dpkg/status":           "file limit",
		"var/lib/dpkg/status.d/x":       "a hard link to var/lib/dpkg/status: not read",
		"usr/lib/sysimage/rpm/Packages": "hard link to tmp/elsewhere",
		"var/lib/rpm/rpmdb.sqlite":      "symbolic link",
	} {
		if !strings.Contains(got[p], want) {
			t.Errorf("Unread[%s] = %q, want it to mention %q", p, got[p], want)
		}
	}
	if len(got) != 4 {
		t.Errorf("Unread = %+v, want 4 entries (not the apk database, nor the link to it)", res.Unread)
	}
	if len(res.Packages) != 1 || res.Packages[0].Name != "musl" {
		t.Errorf("packages = %+v, want musl alone", res.Packages)
	}

	// An rpm database in SQLite form that is not read, and a dpkg status
	// the extractor fails on half-way.
	res = indexWith(t, "sha256:bad", buildTar(t,
		entry{name: "var/lib/rpm/rpmdb.sqlite", body: hostileRPMDB(t, "CREATE TABLE Other (x)"), mode: 0o644},
		file("var/lib/dpkg/status", dpkgStatus([2]string{"a", "1.0"})+"Package: b\nStatus: install ok\nVersion: 1\n\n"),
	), Limits{})
	got = map[string]string{}
	for _, g := range res.Unread {
		got[g.Path] = g.Reason
	}
	if !strings.Contains(got["var/lib/rpm/rpmdb.sqlite"], "not an rpm database this scanner reads") ||
		!strings.Contains(got["var/lib/dpkg/status"], "dpkg extractor failed") || len(got) != 2 {
		t.Errorf("Unread = %+v", res.Unread)
	}

	// A file the same layer writes again, readable, is not unread.
	res = indexWith(t, "sha256:again", buildTar(t,
		file("var/lib/dpkg/status", big),
		file("var/lib/dpkg/status", dpkgStatus([2]string{"a", "1.0"})),
	), Limits{MaxFileBytes: int64(len(big)) - 1})
	if len(res.Unread) != 0 || len(res.Packages) != 1 {
		t.Errorf("rewritten in the layer: Unread %+v, packages %+v", res.Unread, res.Packages)
	}
}

// TestMergeGaps: the image's gaps are the unread databases still at the
// top of the stack and the databases that held packages until a later
// layer deleted them without writing them again.
func TestMergeGaps(t *testing.T) {
	status := dpkgStatus([2]string{"a", "1.0"}, [2]string{"b", "1.0"})
	base := index(t, "sha256:base", buildTar(t, file("etc/os-release", debianOSRelease), file("var/lib/dpkg/status", status)), mtTar)
	gone := index(t, "sha256:gone", buildTar(t, file("var/lib/dpkg/.wh.status", "")), mtTar)
	opaque := index(t, "sha256:opq", buildTar(t, file("var/lib/.wh..wh..opq", ""), file("var/lib/other", "x")), mtTar)
	back := index(t, "sha256:back", buildTar(t, file("var/lib/dpkg/status", dpkgStatus([2]string{"a", "1.0"}))), mtTar)
	unread := indexWith(t, "sha256:unread", buildTar(t, file("var/lib/dpkg/status", status+status)), Limits{MaxFileBytes: int64(len(status))})
	if len(unread.Unread) != 1 {
		t.Fatalf("unread layer: %+v", unread)
	}
	appOnly := index(t, "sha256:app", buildTar(t, file("opt/app/README", "x")), mtTar)

	for _, tc := range []struct {
		name   string
		layers []LayerResult
		want   []string
	}{
		{"base", []LayerResult{base, appOnly}, nil},
		{"deleted", []LayerResult{base, gone, appOnly}, []string{"var/lib/dpkg/status@sha256:gone"}},
		{"opaque directory", []LayerResult{base, opaque}, []string{"var/lib/dpkg/status@sha256:opq"}},
		{"deleted and written again", []LayerResult{base, gone, back}, nil},
		{"unread", []LayerResult{base, unread}, []string{"var/lib/dpkg/status@sha256:unread"}},
		{"unread then read", []LayerResult{unread, back}, nil},
		{"unread then deleted", []LayerResult{unread, gone}, nil},
		// The unread file held no known package: its deletion leaves no
		// database (coverage then says none was found).
		{"read, unread, deleted", []LayerResult{base, unread, gone}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			img := Merge(tc.layers)
			roundTrip(t, img)
			if got := gapPaths(img.Gaps); !slices.Equal(got, tc.want) {
				t.Errorf("gaps = %q, want %q", got, tc.want)
			}
		})
	}
	if img := Merge([]LayerResult{base, gone}); len(img.Packages) != 0 || len(img.Gaps) != 1 || !strings.Contains(img.Gaps[0].Reason, "deleted") {
		t.Errorf("deleted: %+v", img)
	}
}

// paxRecord formats one PAX extended header record.
func paxRecord(k, v string) string {
	rec := " " + k + "=" + v + "\n"
	n := len(rec)
	for len(fmt.Sprint(n))+len(rec) != n {
		n = len(fmt.Sprint(n)) + len(rec)
	}
	return fmt.Sprint(n) + rec
}

// rawHeader is a tar header block written by hand (archive/tar writes no
// sparse entries): USTAR, or GNU when gnu is set; edit changes the block
// before its checksum is computed.
func rawHeader(name string, typ byte, size int64, gnu bool, edit func(b []byte)) []byte {
	b := make([]byte, 512)
	copy(b[0:], name)
	copy(b[100:], "0000644\x00")
	copy(b[108:], "0000000\x00")
	copy(b[116:], "0000000\x00")
	copy(b[124:], fmt.Sprintf("%011o\x00", size))
	copy(b[136:], "00000000000\x00")
	b[156] = typ
	if gnu {
		copy(b[257:], "ustar  \x00")
	} else {
		copy(b[257:], "ustar\x0000")
	}
	if edit != nil {
		edit(b)
	}
	copy(b[148:156], "        ")
	sum := 0
	for _, c := range b {
		sum += int(c)
	}
	copy(b[148:], fmt.Sprintf("%06o\x00 ", sum))
	return b
}

// padBlock pads b to a whole number of tar blocks.
func padBlock(b []byte) []byte {
	if r := len(b) % 512; r != 0 {
		b = append(b, make([]byte, 512-r)...)
	}
	return b
}

// paxSparse is a GNU sparse 1.0 entry (PAX records): name holds size
// bytes, of which only data, at the start, is stored.
func paxSparse(name string, size int64, data string) []byte {
	recs := paxRecord("GNU.sparse.major", "1") + paxRecord("GNU.sparse.minor", "0") + paxRecord("GNU.sparse.name", name) +
		paxRecord("GNU.sparse.realsize", fmt.Sprint(size))
	out := rawHeader("PaxHeaders/"+name, tar.TypeXHeader, int64(len(recs)), false, nil)
	out = append(out, padBlock([]byte(recs))...)
	sparseMap := padBlock([]byte(fmt.Sprintf("1\n0\n%d\n", len(data))))
	out = append(out, rawHeader("GNUSparseFile.0/"+name, tar.TypeReg, int64(len(sparseMap)+len(data)), false, nil)...)
	out = append(out, sparseMap...)
	return append(out, padBlock([]byte(data))...)
}

// TestIndexLayerSparseEntriesCountFullSize: a sparse entry is read at its
// full size (archive/tar fills the holes with zeros), so its full size
// counts against MaxUncompressedBytes: a layer of a few KiB cannot make
// the scanner read, and spool, gigabytes of zeros.
func TestIndexLayerSparseEntriesCountFullSize(t *testing.T) {
	isolateTemp(t)
	const size = 512 << 10
	var blob []byte
	for i := range 4 {
		blob = append(blob, paxSparse(fmt.Sprintf("opt/lib/app-%d.jar", i), size, "PK\x03\x04")...)
	}
	blob = append(blob, make([]byte, 1024)...)
	lim := Limits{MaxUncompressedBytes: 1 << 20, MaxFileBytes: 1 << 20}
	res, err := IndexLayer(context.Background(), "sha256:sparse", bytes.NewReader(blob), mtTar, int64(len(blob)), lim)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusUnsupported || !strings.Contains(res.Reason, "1048576-byte limit") {
		t.Fatalf("a %d-byte layer of 4 sparse files of %d bytes: status %q (%s), want unsupported over the limit", len(blob), size, res.Status, res.Reason)
	}
	// Under the limit, the same files are read.
	res = indexWith(t, "sha256:sparse", blob, Limits{MaxUncompressedBytes: 4 << 20, MaxFileBytes: 1 << 20})
	if res.Status != StatusIndexed || len(res.Files) != 4 {
		t.Fatalf("under the limit: %+v", res)
	}
}

// TestIndexLayerOldGNUSparse: a package database stored as an old GNU
// sparse entry (type 'S') is read like a regular file, not passed over.
func TestIndexLayerOldGNUSparse(t *testing.T) {
	status := dpkgStatus([2]string{"a", "1.0"}, [2]string{"b", "2.0"})
	n := int64(len(status))
	hdr := rawHeader("var/lib/dpkg/status", tar.TypeGNUSparse, n, true, func(b []byte) {
		copy(b[386:], fmt.Sprintf("%011o\x00", 0)) // one region: offset 0,
		copy(b[398:], fmt.Sprintf("%011o\x00", n)) // n bytes
		copy(b[483:], fmt.Sprintf("%011o\x00", n)) // real size
	})
	blob := append(hdr, padBlock([]byte(status))...)
	blob = append(blob, make([]byte, 1024)...)
	res := index(t, "sha256:gnusparse", blob, mtTar)
	if got := byName(res.Packages); len(got) != 2 || got["dpkg/b"].Version != "2.0" {
		t.Fatalf("packages = %+v, want a and b", res.Packages)
	}
}

// TestIndexLayerUnreadBound: the unread databases one layer records are
// bounded (a few bytes of tar each), past which it is unsupported.
func TestIndexLayerUnreadBound(t *testing.T) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for i := range maxUnread + 1 {
		if err := tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("var/lib/dpkg/status.d/p%d", i), Typeflag: tar.TypeSymlink, Linkname: "/nowhere", Mode: 0o777}); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	res := indexWith(t, "sha256:unread", buf.Bytes(), Limits{})
	if res.Status != StatusUnsupported || !strings.Contains(res.Reason, "unreadable package databases") {
		t.Fatalf("%d unread databases: %q (%s)", maxUnread+1, res.Status, res.Reason)
	}
}
