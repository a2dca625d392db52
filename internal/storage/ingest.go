package storage

import (
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"
)

// ErrDigestMismatch is returned when bytes do not match their digest;
// nothing is stored.
var ErrDigestMismatch = errors.New("content does not match its digest")

// Ingest streams r into the driver, hashing it on the way, and hands the
// verified bytes to place: they are staged at a temporary path, and place
// moves them to their content address (under the metadata store's
// protocol; see meta.StoreBlob) or leaves them. Nothing is placed unless
// the bytes match want. The staged copy is removed afterwards either way.
// It returns the number of bytes read.
func Ingest(ctx context.Context, d Driver, r io.Reader, want digest.Digest, place func(ctx context.Context, staged string, size int64) error) (int64, error) {
	id := uuid.NewString()
	tmp := UploadPath(id)
	w, err := d.Writer(ctx, tmp, 0)
	if err != nil {
		return 0, err
	}
	cleanup := func() { d.Delete(context.WithoutCancel(ctx), UploadDir(id)) }
	defer cleanup()
	verifier := want.Algorithm().Hash()
	n, err := io.Copy(io.MultiWriter(w, verifier), r)
	if err != nil {
		w.Cancel(context.WithoutCancel(ctx))
		return 0, err
	}
	if got := digest.NewDigest(want.Algorithm(), verifier); got != want {
		w.Cancel(context.WithoutCancel(ctx))
		return 0, fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, want)
	}
	if err := w.Commit(ctx); err != nil {
		w.Cancel(context.WithoutCancel(ctx))
		return 0, err
	}
	if err := place(ctx, tmp, n); err != nil {
		return 0, err
	}
	return n, nil
}

// MoveInto returns the step that moves staged bytes to want's content
// address (the place of meta.StoreBlob).
//
// A step run twice (a transaction that committed nothing the first time
// and runs again) finds the staged copy gone and the bytes in place, which
// is success.
func MoveInto(d Driver, staged string, want digest.Digest) func(context.Context) error {
	return func(ctx context.Context) error {
		err := d.Move(ctx, staged, BlobPath(want))
		if errors.Is(err, ErrNotFound) {
			if _, serr := d.Stat(ctx, BlobPath(want)); serr == nil {
				return nil
			}
		}
		return err
	}
}

// WriteInto returns the step that writes content, which is small and in
// memory, straight to want's content address (the place of
// meta.StoreBlob, instead of Ingest and MoveInto): PutContent writes it
// whole, flushed, under a temporary name beside its address and renames
// it there, so no upload directory is made, moved out of and removed. Run
// twice, it writes the same bytes again. It refuses content that does not
// match want.
func WriteInto(d Driver, content []byte, want digest.Digest) func(context.Context) error {
	return func(ctx context.Context) error {
		if got := want.Algorithm().FromBytes(content); got != want {
			return fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, want)
		}
		return d.PutContent(ctx, BlobPath(want), content)
	}
}

// DeleteBlob returns the step that deletes want's bytes at its content
// address, if any (the clear of meta.StoreBlob, the remove of
// meta.FinishBlobDelete).
func DeleteBlob(d Driver, want digest.Digest) func(context.Context) error {
	return func(ctx context.Context) error {
		if err := d.Delete(ctx, BlobPath(want)); err != nil && !errors.Is(err, ErrNotFound) {
			return err
		}
		return nil
	}
}
