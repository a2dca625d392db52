package storage_test

import (
	"context"
	"errors"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
)

// TestPlacementContent writes small content straight to its content
// address, on the filesystem driver with fsync, early or not, and refuses
// bytes that do not match the digest without writing anything.
func TestPlacementContent(t *testing.T) {
	ctx := context.Background()
	d, err := fs.New(t.TempDir(), fs.Options{Fsync: true})
	if err != nil {
		t.Fatal(err)
	}
	content := []byte(`{"spdxVersion":"SPDX-2.3"}`)
	want := digest.FromBytes(content)
	p := storage.Content(d, content, want)
	if ok, err := p.PlaceEarly(ctx); !ok || err != nil {
		t.Fatalf("PlaceEarly = %v, %v; want true, nil", ok, err)
	}
	for range 2 { // a step run twice writes the same bytes again
		if err := p.Place(ctx); err != nil {
			t.Fatal(err)
		}
	}
	got, err := d.GetContent(ctx, storage.BlobPath(want))
	if err != nil || string(got) != string(content) {
		t.Fatalf("content at %s = %q, %v; want %q", storage.BlobPath(want), got, err, content)
	}

	other := digest.FromString("something else")
	bad := storage.Content(d, content, other)
	if err := bad.Place(ctx); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("mismatched content: %v, want ErrDigestMismatch", err)
	}
	if _, err := bad.PlaceEarly(ctx); !errors.Is(err, storage.ErrDigestMismatch) {
		t.Fatalf("mismatched content placed early: %v, want ErrDigestMismatch", err)
	}
	if present, err := bad.Present(ctx); present || err != nil {
		t.Fatalf("mismatched content was written: present = %v, %v", present, err)
	}
}

// onlyDriver hides every optional capability of the driver it holds.
type onlyDriver struct{ storage.Driver }

// TestPlacementStaged places staged bytes: early by a link that leaves
// the staged copy for a second placement, or, on a driver that cannot
// link, not early at all; then by moving the staged copy, which a second
// run finds already done; Present and Clear follow the bytes.
func TestPlacementStaged(t *testing.T) {
	ctx := context.Background()
	d, err := fs.New(t.TempDir(), fs.Options{Fsync: true})
	if err != nil {
		t.Fatal(err)
	}
	content := []byte("staged layer bytes")
	want := digest.FromBytes(content)
	const staged = "/uploads/ab/abcd/data"
	if err := d.PutContent(ctx, staged, content); err != nil {
		t.Fatal(err)
	}
	if ok, err := storage.Staged(onlyDriver{d}, staged, want).PlaceEarly(ctx); ok || err != nil {
		t.Fatalf("PlaceEarly without a link = %v, %v; want false, nil", ok, err)
	}
	p := storage.Staged(d, staged, want)
	if present, err := p.Present(ctx); present || err != nil {
		t.Fatalf("Present before placing = %v, %v", present, err)
	}
	if ok, err := p.PlaceEarly(ctx); !ok || err != nil {
		t.Fatalf("PlaceEarly = %v, %v; want true, nil", ok, err)
	}
	if present, err := p.Present(ctx); !present || err != nil {
		t.Fatalf("Present after PlaceEarly = %v, %v", present, err)
	}
	if _, err := d.Stat(ctx, staged); err != nil {
		t.Fatalf("PlaceEarly took the staged copy: %v", err)
	}
	// What a garbage collection does to bytes it condemned.
	if err := p.Clear(ctx); err != nil {
		t.Fatal(err)
	}
	if present, err := p.Present(ctx); present || err != nil {
		t.Fatalf("Present after Clear = %v, %v", present, err)
	}
	if err := p.Clear(ctx); err != nil {
		t.Fatalf("Clear of nothing: %v", err)
	}
	for range 2 {
		if err := p.Place(ctx); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := d.GetContent(ctx, storage.BlobPath(want)); err != nil || string(got) != string(content) {
		t.Fatalf("placed bytes = %q, %v", got, err)
	}
	if _, err := d.Stat(ctx, staged); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Place left the staged copy: %v", err)
	}
}
