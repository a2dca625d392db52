package storagetest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/storage"
)

// The resumable cases write a file in chunks the way the registry writes
// an upload: each chunk through a new writer opened at the size so far
// (with the state the last one saved, for drivers that keep one), closed,
// and the last one committed. Sizes straddle S3's 5 MiB minimum part and
// the drivers' part sizes (10 MiB default, 5 MiB in tests).

const mib = 1 << 20

// writeChunks writes the chunks of data, each through the next driver of
// ds in turn, and returns the saved state and the size.
func writeChunks(t *testing.T, ds []storage.Driver, p string, data []byte, sizes []int) ([]byte, int64) {
	t.Helper()
	ctx := context.Background()
	var st []byte
	var size int64
	for i, n := range sizes {
		d := ds[i%len(ds)]
		w, err := storage.OpenWriter(ctx, d, p, size, st)
		if err != nil {
			t.Fatalf("chunk %d: open at %d: %v", i, size, err)
		}
		if w.Size() != size {
			t.Fatalf("chunk %d: Size = %d, want %d", i, w.Size(), size)
		}
		if _, err := w.Write(data[size : size+int64(n)]); err != nil {
			t.Fatalf("chunk %d: write %d bytes: %v", i, n, err)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("chunk %d: close: %v", i, err)
		}
		if st, err = storage.WriterState(w); err != nil {
			t.Fatalf("chunk %d: state: %v", i, err)
		}
		size += int64(n)
	}
	return st, size
}

func total(sizes []int) int {
	n := 0
	for _, s := range sizes {
		n += s
	}
	return n
}

// testChunks writes sizes through ds, commits through the last driver
// and reads the file back whole and from an offset.
func testChunks(t *testing.T, ds []storage.Driver, p string, sizes []int) {
	t.Helper()
	ctx := context.Background()
	data := randBytes(t, total(sizes))
	st, size := writeChunks(t, ds, p, data, sizes)
	last := ds[len(sizes)%len(ds)]
	w, err := storage.OpenWriter(ctx, last, p, size, st)
	if err != nil {
		t.Fatalf("open to commit at %d: %v", size, err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatalf("commit: %v", err)
	}
	for _, d := range ds {
		got := mustRead(t, d, p, 0)
		if !bytes.Equal(got, data) {
			t.Fatalf("read back %d bytes (sha256 %x), want %d (sha256 %x)", len(got), sha256.Sum256(got), len(data), sha256.Sum256(data))
		}
		if fi, err := d.Stat(ctx, p); err != nil || fi.Size != int64(len(data)) {
			t.Fatalf("Stat = %+v, %v; want %d bytes", fi, err, len(data))
		}
	}
	if off := int64(len(data)) - 3; off > 0 {
		if got := mustRead(t, ds[0], p, off); !bytes.Equal(got, data[off:]) {
			t.Fatalf("read from %d differs", off)
		}
	}
}

func testResumableChunks(t *testing.T, d storage.Driver) {
	for _, tc := range []struct {
		name  string
		sizes []int
	}{
		{"OneByteChunks", []int{1, 1, 1, 1}},
		{"UnderMinPart", []int{1 * mib, 3 * mib, 7 * mib, 1}},
		{"ExactMinPart", []int{5 * mib, 5 * mib}},
		{"OverPartSize", []int{1, 11 * mib, 2*mib + 3, 12 * mib}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			testChunks(t, []storage.Driver{d}, "/uploads/ab/"+tc.name+"/data", tc.sizes)
		})
	}
}

func testResumableCancel(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	const p = "/uploads/cc/cancel/data"
	data := randBytes(t, 6*mib+1)
	st, size := writeChunks(t, []storage.Driver{d}, p, data, []int{6 * mib, 1})
	w, err := storage.OpenWriter(ctx, d, p, size, st)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.Cancel(ctx); err != nil {
		t.Fatalf("Cancel: %v", err)
	}
	if _, err := d.Stat(ctx, p); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after Cancel Stat = %v, want ErrNotFound", err)
	}
}

// testDeleteAbortsUpload deletes an upload's directory in the middle of
// the upload (upload expiry, a client's DELETE): nothing can finish it.
func testDeleteAbortsUpload(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	const dir = "/uploads/dd/deleted"
	p := dir + "/data"
	data := randBytes(t, 6*mib+1)
	st, size := writeChunks(t, []storage.Driver{d}, p, data, []int{6 * mib, 1})
	if err := d.Delete(ctx, dir); err != nil {
		t.Fatalf("Delete(%s): %v", dir, err)
	}
	w, err := storage.OpenWriter(ctx, d, p, size, st)
	if err != nil && !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("resuming a deleted upload: %v, want ErrNotFound (the registry answers it with 404 BLOB_UPLOAD_UNKNOWN)", err)
	}
	if err == nil {
		w.Write([]byte("more"))
		if err := w.Commit(ctx); err == nil {
			t.Fatal("an upload whose directory was deleted was completed")
		}
	}
	if _, err := d.Stat(ctx, p); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after Delete Stat = %v, want ErrNotFound", err)
	}
	if _, err := d.Stat(ctx, dir); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after Delete Stat(dir) = %v, want ErrNotFound", err)
	}
}

func testConcurrentResumable(t *testing.T, d storage.Driver) {
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			t.Run(fmt.Sprintf("writer%d", i), func(t *testing.T) {
				testChunks(t, []storage.Driver{d}, fmt.Sprintf("/uploads/ee/w%d/data", i), []int{1000, 5*mib + i, 100})
			})
		}(i)
	}
	wg.Wait()
}

// testMoveAtomic replaces a file by Move while readers read it: each read
// sees one whole version, never a mix, a short file or a missing one.
func testMoveAtomic(t *testing.T, d storage.Driver) {
	ctx := context.Background()
	const dst = "/m/dst"
	versions := map[[32]byte]bool{}
	first := randBytes(t, 256<<10)
	versions[sha256.Sum256(first)] = true
	if err := d.PutContent(ctx, dst, first); err != nil {
		t.Fatal(err)
	}
	next := make([][]byte, 6)
	for i := range next {
		next[i] = randBytes(t, 256<<10+i)
		versions[sha256.Sum256(next[i])] = true
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for r := 0; r < 3; r++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				got, err := d.GetContent(ctx, dst)
				if err != nil {
					t.Errorf("read during Move: %v", err)
					return
				}
				if !versions[sha256.Sum256(got)] {
					t.Errorf("read during Move saw %d bytes of no version", len(got))
					return
				}
			}
		}()
	}
	for i, b := range next {
		src := fmt.Sprintf("/m/src%d", i)
		if err := d.PutContent(ctx, src, b); err != nil {
			t.Fatal(err)
		}
		if err := d.Move(ctx, src, dst); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if got, _ := d.GetContent(ctx, dst); !bytes.Equal(got, next[len(next)-1]) {
		t.Fatal("after the moves dst is not the last version")
	}
}
