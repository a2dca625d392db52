package fs_test

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
)

// TestCloseFlushesWithFsync: with fsync on, closing a writer (the end of
// an upload's chunk, whose size and hash state the registry records next)
// flushes the file's data first, so the recorded progress never runs
// ahead of bytes that survive a power cut; a failed flush is the Close's
// error, so nothing is recorded. Commit flushes with its own fsync and
// Cancel discards: neither flushes again. Without fsync nothing is
// flushed.
func TestCloseFlushesWithFsync(t *testing.T) {
	ctx := context.Background()
	for _, fsync := range []bool{true, false} {
		d, err := fs.New(t.TempDir(), fs.Options{Fsync: fsync})
		if err != nil {
			t.Fatal(err)
		}
		var synced []string
		var fail error
		fs.SetDatasync(d, func(f *os.File) error {
			synced = append(synced, f.Name())
			return fail
		})
		write := func(id string, offset int64) storage.FileWriter {
			t.Helper()
			w, err := d.Writer(ctx, storage.UploadPath(id), offset)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write([]byte("a chunk")); err != nil {
				t.Fatal(err)
			}
			return w
		}
		const id = "0190d3a4-8f1e-7a2b-9c3d-4e5f60718293"
		if err := write(id, 0).Close(); err != nil {
			t.Fatal(err)
		}
		w := write(id, 7)
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		w.Close() // a second Close does nothing
		if err := write(id, 14).Commit(ctx); err != nil {
			t.Fatal(err)
		}
		if err := write("0190d3a4-8f1e-7a2b-9c3d-4e5f60718294", 0).Cancel(ctx); err != nil {
			t.Fatal(err)
		}
		want := 0
		if fsync {
			want = 2 // the two chunks closed
		}
		if len(synced) != want {
			t.Fatalf("fsync %v: the file was flushed %d times (%v), want %d", fsync, len(synced), synced, want)
		}
		for _, name := range synced {
			if !strings.HasSuffix(name, id) {
				t.Fatalf("flushed %s, not the upload's file", name)
			}
		}
		if fsync {
			fail = errors.New("I/O error")
			if err := write(id, 21).Close(); !errors.Is(err, fail) {
				t.Fatalf("Close after a failed flush = %v, want its error", err)
			}
		}
	}
}
