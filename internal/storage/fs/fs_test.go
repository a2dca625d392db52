package fs_test

import (
	"bytes"
	"context"
	"errors"
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
	n, err := storage.Ingest(ctx, d, bytes.NewReader(content), want, place)
	if err != nil || n != int64(len(content)) {
		t.Fatalf("Ingest = %d, %v", n, err)
	}
	if got, _ := d.GetContent(ctx, storage.BlobPath(want)); !bytes.Equal(got, content) {
		t.Fatal("blob not at its content address")
	}
	other := digest.FromString("something else")
	if _, err := storage.Ingest(ctx, d, bytes.NewReader(content), other, place); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("mismatch: %v", err)
	}
	if _, err := d.Stat(ctx, storage.BlobPath(other)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatal("mismatched bytes were stored")
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
