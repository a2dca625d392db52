package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
)

// TestWriteInto writes small content straight to its content address, on
// the filesystem driver with fsync, and refuses bytes that do not match
// the digest without writing anything.
func TestWriteInto(t *testing.T) {
	ctx := context.Background()
	d, err := fs.New(t.TempDir(), fs.Options{Fsync: true})
	if err != nil {
		t.Fatal(err)
	}
	content := []byte(`{"spdxVersion":"SPDX-2.3"}`)
	want := digest.FromBytes(content)
	for range 2 { // a step run twice writes the same bytes again
		if err := storage.WriteInto(d, content, want)(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got, err := d.GetContent(ctx, storage.BlobPath(want))
	if err != nil || string(got) != string(content) {
		t.Fatalf("content at %s = %q, %v; want %q", storage.BlobPath(want), got, err, content)
	}

	other := digest.FromString("something else")
	err = storage.WriteInto(d, content, other)(ctx)
	if !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("mismatched content: %v, want ErrDigestMismatch", err)
	}
	if _, err := d.Stat(ctx, storage.BlobPath(other)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("mismatched content was written: stat = %v", err)
	}
}
