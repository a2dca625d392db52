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

// Ingest streams r into the driver under its content address, hashing it
// on the way: the bytes become visible at BlobPath(want) only if they
// match want. It returns the number of bytes stored.
func Ingest(ctx context.Context, d Driver, r io.Reader, want digest.Digest) (int64, error) {
	id := uuid.NewString()
	tmp := UploadPath(id)
	w, err := d.Writer(ctx, tmp, 0)
	if err != nil {
		return 0, err
	}
	cleanup := func() {
		w.Cancel(context.WithoutCancel(ctx))
		d.Delete(context.WithoutCancel(ctx), UploadDir(id))
	}
	verifier := want.Algorithm().Hash()
	n, err := io.Copy(io.MultiWriter(w, verifier), r)
	if err != nil {
		cleanup()
		return 0, err
	}
	if got := digest.NewDigest(want.Algorithm(), verifier); got != want {
		cleanup()
		return 0, fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, want)
	}
	if err := w.Commit(ctx); err != nil {
		cleanup()
		return 0, err
	}
	if err := d.Move(ctx, tmp, BlobPath(want)); err != nil {
		cleanup()
		return 0, err
	}
	d.Delete(context.WithoutCancel(ctx), UploadDir(id))
	return n, nil
}
