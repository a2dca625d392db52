package osv

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func goodJSON(id string) string {
	return `{"id":"` + id + `","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"Debian:12","name":"zlib"},
		"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1:1.2.13.dfsg-1+deb12u1"}]}]}]}`
}

const unknownRangeJSON = `{"id":"BAD-RANGE","modified":"2024-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"npm","name":"x"},
	"ranges":[{"type":"FOO","events":[{"introduced":"0"}]}]}]}`

type entry struct{ name, body string }

func buildZip(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, e := range entries {
		w, err := zw.Create(e.name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(e.body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

type collector struct {
	ids []string
	bad map[string]error
}

func newCollector() *collector { return &collector{bad: map[string]error{}} }

func (c *collector) fn(r *Record) error { c.ids = append(c.ids, r.ID); return nil }

func (c *collector) badFn(where string, err error) { c.bad[where] = err }

func (c *collector) badWheres() []string {
	var w []string
	for k := range c.bad {
		w = append(w, k)
	}
	slices.Sort(w)
	return w
}

func writeFile(t *testing.T, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadZip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "all.zip")
	writeFile(t, path, buildZip(t,
		entry{"A-1.json", goodJSON("A-1")},
		entry{"broken.json", `{"id":`},
		entry{"range.json", unknownRangeJSON},
		entry{"README.txt", "not a record"},
		entry{"A-2.json", goodJSON("A-2")},
	))
	c := newCollector()
	if err := Read(context.Background(), path, c.fn, c.badFn); err != nil {
		t.Fatalf("Read: %v", err)
	}
	if !slices.Equal(c.ids, []string{"A-1", "A-2"}) {
		t.Errorf("records = %v", c.ids)
	}
	want := []string{path + ":broken.json", path + ":range.json"}
	if got := c.badWheres(); !slices.Equal(got, want) {
		t.Errorf("bad = %v, want %v", got, want)
	}
	if err := c.bad[path+":range.json"]; err == nil || !strings.Contains(err.Error(), "FOO") {
		t.Errorf("range error = %v", err)
	}
}

func TestReadZipEntryOverCap(t *testing.T) {
	big := `{"id":"BIG","modified":"2024-01-01T00:00:00Z","details":"` + strings.Repeat("a", MaxRecordSize) + `"}`
	data := buildZip(t, entry{"BIG.json", big}, entry{"A-1.json", goodJSON("A-1")})
	c := newCollector()
	if err := ReadZip(context.Background(), bytes.NewReader(data), int64(len(data)), "up.zip", c.fn, c.badFn); err != nil {
		t.Fatalf("ReadZip: %v", err)
	}
	if !slices.Equal(c.ids, []string{"A-1"}) {
		t.Errorf("records = %v", c.ids)
	}
	err := c.bad["up.zip:BIG.json"]
	if !errors.Is(err, ErrTooLarge) || !strings.Contains(err.Error(), "4194304") {
		t.Errorf("over-cap error = %v", err)
	}
}

func TestReadZipLyingHeader(t *testing.T) {
	// An entry whose header understates its size must still be refused
	// (archive/zip reports the mismatch; the read is capped regardless).
	big := `{"id":"BIG","modified":"2024-01-01T00:00:00Z","details":"` + strings.Repeat("a", MaxRecordSize) + `"}`
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, err := zw.CreateHeader(&zip.FileHeader{Name: "BIG.json", Method: zip.Deflate})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write([]byte(big)); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	zr, err := zip.NewReader(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	zr.File[0].UncompressedSize64 = 10
	if data, err := readEntry(zr.File[0]); err == nil {
		t.Errorf("readEntry returned %d bytes, want an error", len(data))
	}
}

func TestReadCorruptZip(t *testing.T) {
	real := buildZip(t, entry{"A-1.json", goodJSON("A-1")}, entry{"A-2.json", goodJSON("A-2")})
	random := make([]byte, 4096)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{
		"random.zip":    random,
		"truncated.zip": real[:len(real)-30],
		"empty.zip":     nil,
	} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), name)
			writeFile(t, path, data)
			c := newCollector()
			err := Read(context.Background(), path, c.fn, c.badFn)
			if err == nil || !strings.Contains(err.Error(), name) {
				t.Fatalf("Read = %v, want error naming %s", err, name)
			}
			if len(c.ids) != 0 {
				t.Errorf("fn called for %v", c.ids)
			}
		})
	}
}

func TestReadDirectory(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "Debian", "all.zip"), buildZip(t, entry{"DSA-1.json", goodJSON("DSA-1")}, entry{"DSA-2.json", goodJSON("DSA-2")}))
	writeFile(t, filepath.Join(dir, "loose", "GHSA-1.json"), []byte(goodJSON("GHSA-1")))
	writeFile(t, filepath.Join(dir, "loose", "deep", "GHSA-2.JSON"), []byte(goodJSON("GHSA-2")))
	writeFile(t, filepath.Join(dir, "loose", "bad.json"), []byte("not json"))
	writeFile(t, filepath.Join(dir, "loose", "notes.md"), []byte("# skipped"))
	c := newCollector()
	if err := Read(context.Background(), dir, c.fn, c.badFn); err != nil {
		t.Fatalf("Read: %v", err)
	}
	slices.Sort(c.ids)
	if want := []string{"DSA-1", "DSA-2", "GHSA-1", "GHSA-2"}; !slices.Equal(c.ids, want) {
		t.Errorf("records = %v, want %v", c.ids, want)
	}
	if got, want := c.badWheres(), []string{filepath.Join(dir, "loose", "bad.json")}; !slices.Equal(got, want) {
		t.Errorf("bad = %v, want %v", got, want)
	}
}

func TestReadJSONArray(t *testing.T) {
	path := filepath.Join(t.TempDir(), "records.json")
	writeFile(t, path, []byte("\ufeff [ "+goodJSON("A-1")+", "+unknownRangeJSON+", "+goodJSON("A-2")+" ]\n"))
	c := newCollector()
	if err := Read(context.Background(), path, c.fn, c.badFn); err != nil {
		t.Fatalf("Read: %v", err)
	}
	if !slices.Equal(c.ids, []string{"A-1", "A-2"}) {
		t.Errorf("records = %v", c.ids)
	}
	if got, want := c.badWheres(), []string{path + "[1]"}; !slices.Equal(got, want) {
		t.Errorf("bad = %v, want %v", got, want)
	}
}

func TestReadJSONMalformedArray(t *testing.T) {
	c := newCollector()
	body := "[" + goodJSON("A-1") + ", {oops} ]"
	if err := ReadJSON(context.Background(), strings.NewReader(body), "body", c.fn, c.badFn); err != nil {
		t.Fatalf("ReadJSON: %v", err)
	}
	if !slices.Equal(c.ids, []string{"A-1"}) || len(c.bad) != 1 {
		t.Errorf("records = %v, bad = %v", c.ids, c.bad)
	}
}

type failingReader struct{}

func (failingReader) Read([]byte) (int, error) { return 0, errors.New("disk on fire") }

func TestReadJSONReadError(t *testing.T) {
	c := newCollector()
	err := ReadJSON(context.Background(), failingReader{}, "body", c.fn, c.badFn)
	if err == nil || !strings.Contains(err.Error(), "disk on fire") {
		t.Errorf("ReadJSON = %v, want the read error", err)
	}
}

func TestReadStopsOnFnErrorAndCancel(t *testing.T) {
	data := buildZip(t, entry{"A-1.json", goodJSON("A-1")}, entry{"A-2.json", goodJSON("A-2")})
	stop := errors.New("stop")
	calls := 0
	err := ReadZip(context.Background(), bytes.NewReader(data), int64(len(data)), "x.zip",
		func(*Record) error { calls++; return stop }, func(string, error) {})
	if !errors.Is(err, stop) || calls != 1 {
		t.Errorf("ReadZip = %v after %d calls, want stop after 1", err, calls)
	}

	ctx, cancel := context.WithCancel(context.Background())
	calls = 0
	err = ReadZip(ctx, bytes.NewReader(data), int64(len(data)), "x.zip",
		func(*Record) error { calls++; cancel(); return nil }, func(string, error) {})
	if !errors.Is(err, context.Canceled) || calls != 1 {
		t.Errorf("ReadZip = %v after %d calls, want context.Canceled after 1", err, calls)
	}
}
