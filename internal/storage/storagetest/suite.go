// Package storagetest is the conformance suite every storage driver passes.
package storagetest

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/storage"
)

// Reopen returns a second driver over the same backing store as d, as
// another replica would open it.
type Reopen func(t *testing.T, d storage.Driver) storage.Driver

// Run runs the conformance suite against drivers made by newDriver, which
// must return an empty driver for each call. reopen (nil: the driver has
// no second instance) serves the cases that resume a file elsewhere.
func Run(t *testing.T, newDriver func(t *testing.T) storage.Driver, reopen Reopen) {
	tests := []struct {
		name string
		fn   func(t *testing.T, d storage.Driver)
	}{
		{"PutGetContent", testPutGet},
		{"NotFound", testNotFound},
		{"ReaderOffset", testReaderOffset},
		{"WriterAppend", testWriterAppend},
		{"WriterCancel", testWriterCancel},
		{"StatAndList", testStatList},
		{"MoveReplaces", testMove},
		{"DeleteRecursive", testDelete},
		{"InvalidPaths", testInvalidPaths},
		{"ConcurrentWriters", testConcurrent},
		{"LargeStream", testLarge},
		{"ResumableChunks", testResumableChunks},
		{"ResumableCancel", testResumableCancel},
		{"DeleteAbortsUpload", testDeleteAbortsUpload},
		{"ConcurrentResumable", testConcurrentResumable},
		{"MoveAtomicForReaders", testMoveAtomic},
		{"LinkKeepsBothNames", testLink},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.fn(t, newDriver(t))
		})
	}
	t.Run("ResumeOnSecondInstance", func(t *testing.T) {
		if reopen == nil {
			t.Skip("the driver has no second instance")
		}
		d := newDriver(t)
		other := reopen(t, d)
		testChunks(t, []storage.Driver{d, other}, "/uploads/zz/second/data", []int{1, 3 << 20, 5 << 20, 1, 11 << 20, 2})
	})
}

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func mustRead(t *testing.T, d storage.Driver, p string, off int64) []byte {
	t.Helper()
	r, err := d.Reader(context.Background(), p, off)
	if err != nil {
		t.Fatalf("Reader(%s, %d): %v", p, off, err)
	}
	defer r.Close()
	b, err := io.ReadAll(r)
	if err != nil {
		t.Fatalf("read %s: %v", p, err)
	}
	return b
}

func testPutGet(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	want := randBytes(t, 4096)
	if err := d.PutContent(ctx, "/a/b/c", want); err != nil {
		t.Fatal(err)
	}
	got, err := d.GetContent(ctx, "/a/b/c")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("GetContent = %d bytes, %v; want the %d bytes put", len(got), err, len(want))
	}
	if err := d.PutContent(ctx, "/a/b/c", []byte("short")); err != nil {
		t.Fatal(err)
	}
	got, _ = d.GetContent(ctx, "/a/b/c")
	if string(got) != "short" {
		t.Fatalf("after overwrite GetContent = %q, want %q", got, "short")
	}
	if err := d.PutContent(ctx, "/empty", nil); err != nil {
		t.Fatal(err)
	}
	if got, err := d.GetContent(ctx, "/empty"); err != nil || len(got) != 0 {
		t.Fatalf("empty file: %q, %v", got, err)
	}
}

func testNotFound(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	if _, err := d.GetContent(ctx, "/missing"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("GetContent missing: %v, want ErrNotFound", err)
	}
	if _, err := d.Reader(ctx, "/missing", 0); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Reader missing: %v, want ErrNotFound", err)
	}
	if _, err := d.Stat(ctx, "/missing"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Stat missing: %v, want ErrNotFound", err)
	}
	if err := d.Move(ctx, "/missing", "/x"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Move missing: %v, want ErrNotFound", err)
	}
	if err := d.Delete(ctx, "/missing"); !errors.Is(err, storage.ErrNotFound) {
		t.Errorf("Delete missing: %v, want ErrNotFound", err)
	}
}

func testReaderOffset(t *testing.T, d storage.Driver) {
	want := randBytes(t, 10000)
	if err := d.PutContent(context.Background(), "/f", want); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 1, 4096, 9999, 10000} {
		if got := mustRead(t, d, "/f", off); !bytes.Equal(got, want[off:]) {
			t.Errorf("offset %d: got %d bytes, want %d", off, len(got), len(want)-int(off))
		}
	}
}

func testWriterAppend(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	part1, part2 := randBytes(t, 3000), randBytes(t, 5000)
	w, err := d.Writer(ctx, "/up/data", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(part1); err != nil {
		t.Fatal(err)
	}
	if w.Size() != 3000 {
		t.Fatalf("Size = %d, want 3000", w.Size())
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	// Resuming at an offset discards bytes stored beyond it (a chunk that
	// was written but never recorded).
	w, err = d.Writer(ctx, "/up/data", 2000)
	if err != nil {
		t.Fatal(err)
	}
	if w.Size() != 2000 {
		t.Fatalf("resume Size = %d, want 2000", w.Size())
	}
	w.Write(part1[2000:])
	w.Commit(ctx)
	w, err = d.Writer(ctx, "/up/data", 3000)
	if err != nil {
		t.Fatal(err)
	}
	if w.Size() != 3000 {
		t.Fatalf("append Size = %d, want 3000", w.Size())
	}
	if _, err := io.Copy(w, bytes.NewReader(part2)); err != nil {
		t.Fatal(err)
	}
	if w.Size() != 8000 {
		t.Fatalf("Size after append = %d, want 8000", w.Size())
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, d, "/up/data", 0); !bytes.Equal(got, append(part1, part2...)) {
		t.Fatal("appended content differs")
	}
	if _, err := d.Writer(ctx, "/up/data", 9000); err == nil {
		t.Fatal("Writer at an offset past the end succeeded")
	}
	// A writer at offset 0 truncates.
	w, _ = d.Writer(ctx, "/up/data", 0)
	w.Write([]byte("x"))
	w.Commit(ctx)
	if got := mustRead(t, d, "/up/data", 0); string(got) != "x" {
		t.Fatalf("truncating writer left %d bytes", len(got))
	}
}

func testWriterCancel(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	w, err := d.Writer(ctx, "/c/data", 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Write([]byte("abc"))
	if err := w.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, "/c/data"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after Cancel Stat = %v, want ErrNotFound", err)
	}
}

func testStatList(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	for _, p := range []string{"/l/b", "/l/a", "/l/d/x"} {
		if err := d.PutContent(ctx, p, []byte(p)); err != nil {
			t.Fatal(err)
		}
	}
	fi, err := d.Stat(ctx, "/l/a")
	if err != nil || fi.Size != 4 || fi.IsDir {
		t.Fatalf("Stat /l/a = %+v, %v", fi, err)
	}
	if fi, err := d.Stat(ctx, "/l/d"); err != nil || !fi.IsDir {
		t.Fatalf("Stat /l/d = %+v, %v; want a directory", fi, err)
	}
	got, err := d.List(ctx, "/l")
	want := []string{"/l/a", "/l/b", "/l/d"}
	if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("List = %v, %v; want %v", got, err, want)
	}
}

func testMove(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	d.PutContent(ctx, "/src", []byte("new"))
	d.PutContent(ctx, "/dst/deep/file", []byte("old"))
	if err := d.Move(ctx, "/src", "/dst/deep/file"); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.GetContent(ctx, "/dst/deep/file"); string(got) != "new" {
		t.Fatalf("after Move dst = %q, want new", got)
	}
	if _, err := d.Stat(ctx, "/src"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("src still exists after Move: %v", err)
	}
	d.PutContent(ctx, "/src2", []byte("fresh"))
	if err := d.Move(ctx, "/src2", "/new/dir/file"); err != nil {
		t.Fatalf("Move into a new directory: %v", err)
	}
}

func testDelete(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	d.PutContent(ctx, "/del/a/1", []byte("1"))
	d.PutContent(ctx, "/del/a/2", []byte("2"))
	d.PutContent(ctx, "/del/b", []byte("b"))
	if err := d.Delete(ctx, "/del/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Stat(ctx, "/del/a/1"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("child survived Delete: %v", err)
	}
	if _, err := d.GetContent(ctx, "/del/b"); err != nil {
		t.Fatalf("sibling removed by Delete: %v", err)
	}
}

func testInvalidPaths(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	for _, p := range []string{"", "relative", "/a/../b", "/a//b", "/a/", "/../etc/passwd", "/a/./b", "/a b"} {
		if err := d.PutContent(ctx, p, []byte("x")); !errors.Is(err, storage.ErrInvalidPath) {
			t.Errorf("PutContent(%q) = %v, want ErrInvalidPath", p, err)
		}
		if _, err := d.Reader(ctx, p, 0); !errors.Is(err, storage.ErrInvalidPath) {
			t.Errorf("Reader(%q) = %v, want ErrInvalidPath", p, err)
		}
	}
}

func testConcurrent(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	var wg sync.WaitGroup
	data := make([][]byte, 8)
	for i := range data {
		data[i] = randBytes(t, 64<<10)
	}
	for i := range data {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			w, err := d.Writer(ctx, fmt.Sprintf("/conc/%d/data", i), 0)
			if err != nil {
				t.Error(err)
				return
			}
			for off := 0; off < len(data[i]); off += 1000 {
				end := min(off+1000, len(data[i]))
				w.Write(data[i][off:end])
			}
			if err := w.Commit(ctx); err != nil {
				t.Error(err)
			}
		}(i)
	}
	wg.Wait()
	for i := range data {
		if got := mustRead(t, d, fmt.Sprintf("/conc/%d/data", i), 0); !bytes.Equal(got, data[i]) {
			t.Errorf("writer %d: content differs", i)
		}
	}
}

func testLarge(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	w, err := d.Writer(ctx, "/large", 0)
	if err != nil {
		t.Fatal(err)
	}
	chunk := randBytes(t, 1<<20)
	for i := 0; i < 16; i++ {
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	fi, err := d.Stat(ctx, "/large")
	if err != nil || fi.Size != 16<<20 {
		t.Fatalf("Stat = %+v, %v; want 16 MiB", fi, err)
	}
	r, _ := d.Reader(ctx, "/large", 15<<20)
	defer r.Close()
	got, _ := io.ReadAll(r)
	if !bytes.Equal(got, chunk) {
		t.Fatal("tail of large file differs")
	}
}

// testLink checks storage.Linker, for drivers that have it: dst gets src's
// bytes in a new directory, src keeps them, an existing dst is kept, and
// removing or rewriting either name leaves the other's bytes as they were.
func testLink(t *testing.T, d storage.Driver) {
	l, ok := d.(storage.Linker)
	if !ok {
		t.Skip("the driver cannot link")
	}
	ctx := context.Background()
	a, b := randBytes(t, 3000), randBytes(t, 10)
	if err := d.PutContent(ctx, "/src", a); err != nil {
		t.Fatal(err)
	}
	if err := l.Link(ctx, "/src", "/new/dir/dst"); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, d, "/new/dir/dst", 0); !bytes.Equal(got, a) {
		t.Fatal("the link does not read the source's bytes")
	}
	if err := d.PutContent(ctx, "/other", b); err != nil {
		t.Fatal(err)
	}
	if err := l.Link(ctx, "/other", "/new/dir/dst"); err != nil {
		t.Fatalf("Link onto an existing name: %v", err)
	}
	if got := mustRead(t, d, "/new/dir/dst", 0); !bytes.Equal(got, a) {
		t.Fatal("Link replaced an existing name")
	}
	// PutContent gives the source name new bytes; the link keeps the old.
	if err := d.PutContent(ctx, "/src", b); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, d, "/new/dir/dst", 0); !bytes.Equal(got, a) {
		t.Fatal("rewriting the source changed the link's bytes")
	}
	if err := d.Delete(ctx, "/src"); err != nil {
		t.Fatal(err)
	}
	if got := mustRead(t, d, "/new/dir/dst", 0); !bytes.Equal(got, a) {
		t.Fatal("deleting the source took the link's bytes")
	}
	if err := l.Link(ctx, "/missing", "/x"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Link of a missing source: %v, want ErrNotFound", err)
	}
}
