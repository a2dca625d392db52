package scan_test

import (
	"archive/zip"
	"bytes"
	"compress/flate"
	"context"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/osv"
)

// batchRecorder is a vulnerability database that stores nothing and
// records the bytes of the advisories each ImportVulns call is given.
type batchRecorder struct {
	scan.VulnData // nil: only the importer's calls are made
	mu            sync.Mutex
	calls         []int64
	records       int
}

func (b *batchRecorder) ImportVulns(_ context.Context, recs []meta.VulnRecord) ([]string, error) {
	var n int64
	ids := make([]string, 0, len(recs))
	for _, r := range recs {
		n += int64(len(r.Data))
		ids = append(ids, r.ID)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.calls = append(b.calls, n)
	b.records += len(recs)
	return ids, nil
}

func (b *batchRecorder) TouchVulnSource(context.Context, string) error { return nil }

// TestImportMemoryBounded: an all.zip of many large, compressible
// advisories (a zip bomb of a couple of MB, posted or fetched) is applied
// in batches of bounded bytes, not of a count of records whatever their
// size: no batch holds more than 64 MiB of advisories in memory.
func TestImportMemoryBounded(t *testing.T) {
	const n = 17 // 68 MiB in all
	pad := bytes.Repeat([]byte("a"), osv.MaxRecordSize-4096)
	tail := `","affected":[{"package":{"ecosystem":"Debian:12","name":"zlib"},"versions":["1"]}]}`
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	zw.RegisterCompressor(zip.Deflate, func(w io.Writer) (io.WriteCloser, error) { return flate.NewWriter(w, flate.BestSpeed) })
	for i := range n {
		id := fmt.Sprintf("DEBIAN-CVE-2026-%04d", i)
		w, err := zw.Create(id + ".json")
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(w, `{"id":"`+id+`","modified":"`+modifiedBase+`","details":"`)
		w.Write(pad)
		io.WriteString(w, tail)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	if buf.Len() > 2<<20 {
		t.Fatalf("the zip is %d bytes", buf.Len())
	}
	db := &batchRecorder{}
	im := scan.NewImporter(db, nil)
	if err := im.Zip(context.Background(), bytes.NewReader(buf.Bytes()), int64(buf.Len()), "Debian/all.zip"); err != nil {
		t.Fatal(err)
	}
	st, err := im.Finish(context.Background())
	if err != nil || st.Read != n || st.Applied != n || st.Rejected != 0 {
		t.Fatalf("import: %+v %v", st, err)
	}
	if db.records != n {
		t.Fatalf("%d records stored, want %d", db.records, n)
	}
	for i, c := range db.calls {
		if c > 64<<20 {
			t.Errorf("batch %d of %d holds %d MiB of advisories (batches: %v)", i, len(db.calls), c>>20, db.calls)
		}
	}
}
