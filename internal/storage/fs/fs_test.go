package fs_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/storage/storagetest"
)

func TestConformance(t *testing.T) {
	for _, fsync := range []bool{false, true} {
		name := "nofsync"
		if fsync {
			name = "fsync"
		}
		t.Run(name, func(t *testing.T) {
			dirs := map[storage.Driver]string{}
			open := func(t *testing.T, dir string) storage.Driver {
				d, err := fs.New(dir, fs.Options{Fsync: fsync})
				if err != nil {
					t.Fatal(err)
				}
				dirs[d] = dir
				return d
			}
			storagetest.Run(t, func(t *testing.T) storage.Driver { return open(t, t.TempDir()) },
				func(t *testing.T, d storage.Driver) storage.Driver { return open(t, dirs[d]) })
		})
	}
}

func TestIngest(t *testing.T) {
	ctx := context.Background()
	d, _ := fs.New(t.TempDir(), fs.Options{})
	content := []byte("content-addressed bytes")
	want := digest.FromBytes(content)
	place := func(ctx context.Context, staged string, _ int64) error {
		return storage.Staged(d, staged, want).Place(ctx)
	}
	n, err := storage.Ingest(ctx, d, bytes.NewReader(content), want, int64(len(content)), place)
	if err != nil || n != int64(len(content)) {
		t.Fatalf("Ingest = %d, %v", n, err)
	}
	if got, _ := d.GetContent(ctx, storage.BlobPath(want)); !bytes.Equal(got, content) {
		t.Fatal("blob not at its content address")
	}
	other := digest.FromString("something else")
	if _, err := storage.Ingest(ctx, d, bytes.NewReader(content), other, -1, place); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("mismatch: %v", err)
	}
	if _, err := d.Stat(ctx, storage.BlobPath(other)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatal("mismatched bytes were stored")
	}
	// A source that sends more than the size declared (a hostile upstream
	// streaming forever) is read one byte past it and refused; one that
	// sends fewer is refused too.
	endless := &countingReader{r: bytes.NewReader(append(append([]byte{}, content...), make([]byte, 64<<20)...))}
	if _, err := storage.Ingest(ctx, d, endless, want, int64(len(content)), place); !errors.Is(err, storage.ErrDigestMismatch) || !strings.Contains(err.Error(), "more bytes") {
		t.Fatalf("more bytes than declared: %v", err)
	}
	if endless.n > int64(len(content))+1<<20 {
		t.Fatalf("read %d bytes of a source declared %d long", endless.n, len(content))
	}
	if _, err := storage.Ingest(ctx, d, bytes.NewReader(content[:5]), want, int64(len(content)), place); !errors.Is(err, storage.ErrDigestMismatch) || !strings.Contains(err.Error(), "fewer bytes") {
		t.Fatalf("fewer bytes than declared: %v", err)
	}
	prefixes, _ := d.List(ctx, "/uploads") // the 256 two-character prefix directories stay
	for _, p := range prefixes {
		if left, _ := d.List(ctx, p); len(left) != 0 {
			t.Fatalf("temporary files left: %v", left)
		}
	}
}

// TestLargeWriteWithFsync writes a blob larger than the writeback step
// with fsync on, in a first part and a resumed second part (so writeback
// starts at a non-zero offset), and reads back exactly what was written.
func TestLargeWriteWithFsync(t *testing.T) {
	ctx := context.Background()
	d, err := fs.New(t.TempDir(), fs.Options{Fsync: true})
	if err != nil {
		t.Fatal(err)
	}
	chunk := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	var want bytes.Buffer
	write := func(offset int64, n int) {
		w, err := d.Writer(ctx, "/uploads/ab/big/data", offset)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			chunk[0] = byte(i) // every MiB differs
			if _, err := w.Write(chunk); err != nil {
				t.Fatal(err)
			}
			want.Write(chunk)
		}
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
	}
	write(0, 11)
	write(int64(want.Len()), 13)
	got, err := d.GetContent(ctx, "/uploads/ab/big/data")
	if err != nil {
		t.Fatal(err)
	}
	if digest.FromBytes(got) != digest.FromBytes(want.Bytes()) {
		t.Fatalf("read back %d bytes that differ from the %d written", len(got), want.Len())
	}
}

// writePieces writes data through w in pieces of the given sizes (cycled),
// each from a buffer at an address offset by skew bytes from an aligned
// one when skew > 0, and returns how many bytes went through.
func writePieces(t *testing.T, w storage.FileWriter, data []byte, sizes []int, skew int) {
	t.Helper()
	backing := make([]byte, 8<<20+4096)
	for i := 0; len(data) > 0; i++ {
		n := min(sizes[i%len(sizes)], len(data))
		src := backing[skew : skew+n]
		copy(src, data[:n])
		if k, err := w.Write(src); err != nil || k != n {
			t.Fatalf("Write(%d bytes) = %d, %v", n, k, err)
		}
		data = data[n:]
	}
}

// directSupported reports whether the file system under dir takes direct
// I/O, so that the tests of the direct path know whether it can run.
func directSupported(t *testing.T, dir string) bool {
	t.Helper()
	p := filepath.Join(dir, "probe")
	if err := os.WriteFile(p, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(p)
	f, err := fs.OpenDirect(p)
	if err != nil {
		return false
	}
	f.Close()
	return true
}

// TestDirectWrites writes a large upload with fsync on in pieces of odd
// sizes, from aligned and unaligned buffers, and resumed at unaligned
// offsets: the file holds exactly the bytes written, and past its first
// MiB most of them went to the disk with direct I/O.
func TestDirectWrites(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if !directSupported(t, dir) {
		t.Skip("the file system under the test's temporary directory refuses O_DIRECT")
	}
	d, err := fs.New(dir, fs.Options{Fsync: true})
	if err != nil {
		t.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	data := make([]byte, 23<<20+777)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	const p = "/uploads/ab/direct"
	parts := []struct {
		end   int
		sizes []int
		skew  int
	}{
		{3<<20 + 5, []int{512 << 10}, 0},                     // aligned buffers, an unaligned end
		{9<<20 + 4095, []int{32 << 10, 100001, 1 << 20}, 0},  // small and odd writes
		{17 << 20, []int{3 << 20}, 1},                        // unaligned buffers: the bounce path
		{len(data), []int{1<<20 + 1, 4096, 70000, 999}, 512}, // everything at once
	}
	var direct, start int64
	for _, part := range parts {
		w, err := d.Writer(ctx, p, start)
		if err != nil {
			t.Fatal(err)
		}
		writePieces(t, w, data[start:part.end], part.sizes, part.skew)
		if w.Size() != int64(part.end) {
			t.Fatalf("Size = %d after writing up to %d", w.Size(), part.end)
		}
		direct += fs.DirectBytes(w)
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		start = int64(part.end)
	}
	got, err := d.GetContent(ctx, p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, data) {
		t.Fatalf("read back %d bytes that differ from the %d written", len(got), len(data))
	}
	if direct < int64(len(data))/2 {
		t.Fatalf("%d of %d bytes written with direct I/O, want most past the first MiB", direct, len(data))
	}
}

// TestDirectRefused: where the file system refuses direct I/O, every byte
// goes through the page cache, and the driver stops asking.
func TestDirectRefused(t *testing.T) {
	ctx := context.Background()
	d, err := fs.New(t.TempDir(), fs.Options{Fsync: true})
	if err != nil {
		t.Fatal(err)
	}
	var opens atomic.Int32
	fs.SetOpenDirect(d, func(string) (*os.File, error) {
		opens.Add(1)
		return nil, &os.PathError{Op: "open", Err: syscall.EINVAL}
	})
	data := bytes.Repeat([]byte("direct refused. "), 256<<10) // 4 MiB
	for i := range 2 {
		p := "/uploads/cd/" + string(rune('a'+i))
		w, err := d.Writer(ctx, p, 0)
		if err != nil {
			t.Fatal(err)
		}
		writePieces(t, w, data, []int{512 << 10}, 0)
		if n := fs.DirectBytes(w); n != 0 {
			t.Fatalf("%d bytes written with direct I/O that was refused", n)
		}
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if got, err := d.GetContent(ctx, p); err != nil || !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes (%v) that differ from the %d written", len(got), err, len(data))
		}
	}
	if n := opens.Load(); n != 1 {
		t.Fatalf("direct I/O was asked for %d times, want once", n)
	}
}

// TestNoDirectWithoutFsync: without fsync, writes stay in the page cache.
func TestNoDirectWithoutFsync(t *testing.T) {
	ctx := context.Background()
	d, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	fs.SetOpenDirect(d, func(string) (*os.File, error) {
		t.Error("direct I/O asked for without fsync")
		return nil, errors.ErrUnsupported
	})
	w, err := d.Writer(ctx, "/uploads/ef/x", 0)
	if err != nil {
		t.Fatal(err)
	}
	writePieces(t, w, make([]byte, 4<<20), []int{512 << 10}, 0)
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
}

// countingReader counts what is read from r.
type countingReader struct {
	r io.Reader
	n int64
}

func (c *countingReader) Read(p []byte) (int, error) {
	k, err := c.r.Read(p)
	c.n += int64(k)
	return k, err
}

// TestResumeDoesNotWriteThroughALink: an upload's file linked to its
// blob's address (placement, before the upload's row is gone) and then
// resumed or started again, as a client does after a crash between the
// two, gets a copy of its own: the blob at the address keeps its bytes.
// Writing in place truncated and rewrote the stored blob.
func TestResumeDoesNotWriteThroughALink(t *testing.T) {
	ctx := context.Background()
	d, _ := fs.New(t.TempDir(), fs.Options{Fsync: true})
	content := []byte("the blob's own bytes")
	want := digest.FromBytes(content)
	for _, offset := range []int64{5, 0} {
		up := storage.UploadPath(fmt.Sprintf("resumed-%d", offset))
		w, err := d.Writer(ctx, up, 0)
		if err != nil {
			t.Fatal(err)
		}
		w.Write(content)
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := d.Link(ctx, up, storage.BlobPath(want)); err != nil {
			t.Fatal(err)
		}
		w, err = d.Writer(ctx, up, offset)
		if err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("XX"))
		if err := w.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if got, _ := d.GetContent(ctx, storage.BlobPath(want)); !bytes.Equal(got, content) {
			t.Fatalf("offset %d: the blob's address now holds %q", offset, got)
		}
		if got, _ := d.GetContent(ctx, up); string(got) != string(content[:offset])+"XX" {
			t.Fatalf("offset %d: the upload holds %q", offset, got)
		}
	}
}
