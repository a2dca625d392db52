package index

import (
	"bytes"
	"context"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/osv-scalibr/extractor/filesystem"
	"github.com/google/osv-scalibr/extractor/filesystem/os/apk"
	"github.com/google/osv-scalibr/extractor/filesystem/os/dpkg"

	cpb "github.com/google/osv-scalibr/binary/proto/config_go_proto"
)

// records returns n records made by record(i), each ended by a blank line.
func records(n int, record func(i int) string) []byte {
	var b bytes.Buffer
	for i := range n {
		b.WriteString(record(i))
		b.WriteString("\n")
	}
	return b.Bytes()
}

// allocated returns the bytes f allocates (runtime.MemStats.TotalAlloc).
func allocated(f func()) uint64 {
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	f()
	runtime.ReadMemStats(&after)
	return after.TotalAlloc - before.TotalAlloc
}

// TestIndexLayerRecordCap: a dpkg status file or apk database listing more
// packages than a layer may hold (a few MB compressed) is refused before
// the extractor builds a package of it: what indexing the layer allocates
// stays a small multiple of the file, not hundreds of bytes a package.
func TestIndexLayerRecordCap(t *testing.T) {
	dpkgRecord := func(i int) string { return fmt.Sprintf("Package: p%d\nVersion: 1\n", i) }
	for _, c := range []struct {
		path   string
		record func(i int) string
	}{
		{"var/lib/dpkg/status.d/x", dpkgRecord},
		{"var/lib/dpkg/status", func(i int) string { return dpkgRecord(i) + "Status: install ok installed\n" }},
		{"lib/apk/db/installed", func(i int) string { return fmt.Sprintf("P:p%d\nV:1\n", i) }},
	} {
		t.Run(c.path, func(t *testing.T) {
			db := records(maxLayerPackages+1, c.record)
			blob := gz(t, buildTar(t, entry{name: c.path, body: db, mode: 0o644}))
			var res LayerResult
			var err error
			alloc := allocated(func() {
				res, err = IndexLayer(context.Background(), "sha256:many", bytes.NewReader(blob), mtGzip, int64(len(blob)), Limits{})
			})
			wantUnsupported(t, res, err, "over 200000 packages in one layer")
			t.Logf("%d-byte file, %d bytes allocated", len(db), alloc)
			if alloc > 8*uint64(len(db)) {
				t.Errorf("indexing allocated %d bytes for a %d-byte file: the packages were built before the refusal", alloc, len(db))
			}
		})
	}
	t.Run("fewer records are read", func(t *testing.T) {
		blob := gz(t, buildTar(t, entry{name: "var/lib/dpkg/status.d/x", body: records(1000, dpkgRecord), mode: 0o644}))
		if res := index(t, "sha256:some", blob, mtGzip); len(res.Packages) != 1000 {
			t.Errorf("%d packages, want 1000", len(res.Packages))
		}
	})
}

// TestRecordCounter: the count of records bounds the packages osv-scalibr's
// dpkg and apk extractors make of a file, blank lines of "\r\n" and
// records without a final newline included.
func TestRecordCounter(t *testing.T) {
	for _, c := range []struct {
		data string
		want int64
	}{
		{"", 0},
		{"\n\n\r\n", 0},
		{"P:a\nV:1\n", 1},
		{"P:a\nV:1", 1},
		{"P:a\nV:1\n\nP:b\nV:1\n", 2},
		{"P:a\r\nV:1\r\n\r\nP:b\r\nV:1\r\n", 2},
		{"\n\nP:a\nV:1\n\n\n\nP:b\nV:1\n\n\n", 2},
		{"P:a\nV:1\n\r\nP:b\nV:1\n\rP:c\nV:1\n", 2}, // "\r" then text is not blank
		{"P:a\nV:1\n \nP:b\nV:1\n", 1},              // a space is a continuation for dpkg, an error for apk
		{"P:a\nV:1\n\r\r\nP:b\nV:1\n", 1},
	} {
		for _, chunk := range []int{1, 2, 3, 1 << 20} { // as the tar reader may hand it over
			rc := &recordCounter{}
			for b := []byte(c.data); len(b) > 0; {
				n := min(chunk, len(b))
				_, _ = rc.Write(b[:n])
				b = b[n:]
			}
			if got := rc.count(); got != c.want {
				t.Errorf("%q in chunks of %d: %d records, want %d", c.data, chunk, got, c.want)
			}
		}
		for _, ex := range []struct {
			path string
			new  func(*cpb.PluginConfig) (filesystem.Extractor, error)
			data string
		}{
			{"lib/apk/db/installed", apk.New, c.data},
			{"var/lib/dpkg/status.d/x", dpkg.New, strings.NewReplacer("P:", "Package: ", "V:", "Version: ").Replace(c.data)},
		} {
			e, err := ex.new(&cpb.PluginConfig{})
			if err != nil {
				t.Fatal(err)
			}
			inv, _ := e.Extract(context.Background(), &filesystem.ScanInput{FS: fstest.MapFS{}, Path: ex.path, Reader: strings.NewReader(ex.data)})
			rc := &recordCounter{}
			_, _ = rc.Write([]byte(ex.data))
			if got := int64(len(inv.Packages)); got > rc.count() {
				t.Errorf("%s: %q: %d packages, more than the %d records counted", ex.path, ex.data, got, rc.count())
			}
		}
	}
}
