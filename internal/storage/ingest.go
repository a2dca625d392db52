package storage

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"

	"github.com/opencontainers/go-digest"
)

// ErrDigestMismatch is returned when bytes do not match their digest;
// nothing is stored.
var ErrDigestMismatch = errors.New("content does not match its digest")

// Ingest streams r into the driver, hashing it on the way, and hands the
// verified bytes to place: they are staged at a temporary path, and place
// moves them to their content address (under the metadata store's
// protocol; see meta.StoreBlob) or leaves them. Nothing is placed unless
// the bytes match want and, when size is not negative, are exactly size
// bytes: a source that sends more stops being read one byte past it (a
// remote that streams forever cannot fill the disk). The staged copy is
// removed afterwards either way. It returns the number of bytes read.
func Ingest(ctx context.Context, d Driver, r io.Reader, want digest.Digest, size int64, place func(ctx context.Context, staged string, size int64) error) (int64, error) {
	if size >= 0 {
		r = io.LimitReader(r, size+1)
	}
	id := NewUploadID()
	tmp := UploadPath(id)
	w, err := d.Writer(ctx, tmp, 0)
	if err != nil {
		return 0, err
	}
	cleanup := func() { d.Delete(context.WithoutCancel(ctx), UploadRoot(id)) }
	defer cleanup()
	verifier := want.Algorithm().Hash()
	n, err := copyFull(w, verifier, r)
	if err != nil {
		w.Cancel(context.WithoutCancel(ctx))
		return 0, err
	}
	if size >= 0 && n != size {
		w.Cancel(context.WithoutCancel(ctx))
		what := "fewer"
		if n > size {
			what = "more"
		}
		return 0, fmt.Errorf("%w: %s bytes than the %d declared", ErrDigestMismatch, what, size)
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

// ingestBuffer is how much Ingest reads before each write: enough for the
// filesystem driver to write most of a layer with direct I/O (aligned runs
// of 64 KiB or more), where io.Copy's 32 KiB reads, often shorter from a
// network, would keep every write in the page cache; little enough for
// many ingests at once.
const ingestBuffer = 512 << 10

// copyFull copies r to w and h, in writes of ingestBuffer bytes but the
// last, and returns how many bytes were copied.
func copyFull(w io.Writer, h hash.Hash, r io.Reader) (int64, error) {
	buf := make([]byte, ingestBuffer)
	var n int64
	for {
		k, err := Fill(r, buf)
		if k > 0 {
			if _, werr := w.Write(buf[:k]); werr != nil {
				return n, werr
			}
			h.Write(buf[:k])
			n += int64(k)
		}
		if err == io.EOF {
			return n, nil
		}
		if err != nil {
			return n, err
		}
	}
}

// Fill reads into p until it is full or the reader fails or ends; it
// returns io.EOF with the bytes read before the end. Unlike io.ReadFull, a
// reader's own io.ErrUnexpectedEOF (a body cut short) stays apart from a
// clean end.
func Fill(r io.Reader, p []byte) (int, error) {
	n := 0
	for n < len(p) {
		k, err := r.Read(p[n:])
		n += k
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// Placement puts a blob's verified bytes at its content address, and
// takes them away: the steps meta.StoreBlob runs under the
// garbage-collection protocol. Staged and Content make one.
type Placement struct {
	d       Driver
	want    digest.Digest
	staged  string // the bytes' temporary path (Staged)
	content []byte // or the bytes themselves (Content)
}

// Staged places bytes staged at a temporary path (Ingest's, or an upload's
// file). The staged path stays the caller's to remove afterwards.
func Staged(d Driver, staged string, want digest.Digest) Placement {
	return Placement{d: d, want: want, staged: staged}
}

// Content places small bytes held in memory: PutContent writes them whole,
// flushed, under a temporary name beside their address and renames them
// there, so no upload directory is made, moved out of and removed. It
// refuses content that does not match want.
func Content(d Driver, content []byte, want digest.Digest) Placement {
	return Placement{d: d, want: want, content: content}
}

// Place puts the bytes at the address (moving the staged copy there, or
// writing the content), replacing what is there. Run twice (a transaction
// that committed nothing the first time and runs again), it finds the
// staged copy gone and the bytes in place, which is success.
func (p Placement) Place(ctx context.Context) error {
	if p.staged == "" {
		return p.put(ctx)
	}
	err := p.d.Move(ctx, p.staged, BlobPath(p.want))
	if errors.Is(err, ErrNotFound) {
		if _, serr := p.d.Stat(ctx, BlobPath(p.want)); serr == nil {
			return nil
		}
	}
	return err
}

// PlaceEarly puts the bytes at the address while keeping what Place needs
// to put them there again, so that meta.StoreBlob can run it before its
// transaction, outside the digest's lock: the content is written (it stays
// in memory), the staged copy is linked (it keeps its own name). Bytes
// already at the address are kept. ok is false, and nothing is done, when
// the driver cannot link (Linker). With a flushing driver, the address's
// name is durable when it returns.
func (p Placement) PlaceEarly(ctx context.Context) (ok bool, err error) {
	if p.staged == "" {
		return true, p.put(ctx)
	}
	l, can := p.d.(Linker)
	if !can {
		return false, nil
	}
	return true, l.Link(ctx, p.staged, BlobPath(p.want))
}

// Present reports whether bytes are at the address.
func (p Placement) Present(ctx context.Context) (bool, error) {
	_, err := p.d.Stat(ctx, BlobPath(p.want))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	return err == nil, err
}

// PresentSize reports whether a file of size bytes, the blob's, is at the
// address. A file of another length there (cut short by hand, by a full
// disk or by a crash of a file system written without fsync) is a damaged
// copy, not the blob: it counts as missing, so that Place replaces it.
func (p Placement) PresentSize(ctx context.Context, size int64) (bool, error) {
	fi, err := p.d.Stat(ctx, BlobPath(p.want))
	if errors.Is(err, ErrNotFound) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return !fi.IsDir && fi.Size == size, nil
}

// Clear deletes the bytes at the address, if any.
func (p Placement) Clear(ctx context.Context) error {
	return DeleteBlob(ctx, p.d, p.want)
}

func (p Placement) put(ctx context.Context) error {
	if got := p.want.Algorithm().FromBytes(p.content); got != p.want {
		return fmt.Errorf("%w: got %s, want %s", ErrDigestMismatch, got, p.want)
	}
	return p.d.PutContent(ctx, BlobPath(p.want), p.content)
}

// DeleteBlob deletes want's bytes at its content address, if any (the
// Clear of a Placement, the remove of meta.FinishBlobDeletes).
func DeleteBlob(ctx context.Context, d Driver, want digest.Digest) error {
	if err := d.Delete(ctx, BlobPath(want)); err != nil && !errors.Is(err, ErrNotFound) {
		return err
	}
	return nil
}
