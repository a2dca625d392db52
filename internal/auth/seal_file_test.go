package auth

import (
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// TestKeyFileAppearsWhole: processes starting at once on a new data
// directory all get the one key that ends up in the file, none reads a
// key file that is still being written (before, the file was created
// empty and then written, and a concurrent start read it as damaged), and
// nothing is left beside it. (That the file and its directory entry are
// flushed to disk before the key is used, so that a power cut cannot
// leave an empty key file behind, is not observable in a test.)
func TestKeyFileAppearsWhole(t *testing.T) {
	for range 50 {
		dir := t.TempDir()
		path := filepath.Join(dir, "data", "secret.key")
		const n = 8
		keys := make([][]byte, n)
		errs := make([]error, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				keys[i], errs[i] = LoadOrCreateKey("", path)
			}()
		}
		wg.Wait()
		onDisk, err := LoadOrCreateKey("", path)
		if err != nil {
			t.Fatal(err)
		}
		for i := range n {
			if errs[i] != nil || string(keys[i]) != string(onDisk) {
				t.Fatalf("start %d: %v, or a key other than the file's", i, errs[i])
			}
		}
		entries, err := os.ReadDir(filepath.Dir(path))
		if err != nil || len(entries) != 1 || entries[0].Name() != "secret.key" {
			t.Fatalf("the key's directory holds %v (%v), want secret.key alone", entries, err)
		}
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
			t.Fatalf("key file mode: %v %v", fi, err)
		}
	}
}

// TestWriteInPlace: the way a key file is written where the file system
// has no hard links writes it whole with mode 0600 and never over a file
// that exists (os.ErrExist, the other key kept).
func TestWriteInPlace(t *testing.T) {
	path := filepath.Join(t.TempDir(), "secret.key")
	if err := writeInPlace(path, []byte("first\n")); err != nil {
		t.Fatal(err)
	}
	if err := writeInPlace(path, []byte("second\n")); !errors.Is(err, os.ErrExist) {
		t.Fatalf("over an existing file: %v, want os.ErrExist", err)
	}
	got, err := os.ReadFile(path)
	if err != nil || string(got) != "first\n" {
		t.Fatalf("the file holds %q (%v), want the first key", got, err)
	}
	if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
}
