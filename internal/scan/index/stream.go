package index

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/klauspost/compress/zstd"
)

// Sentinel errors of the reader wrappers; callers inspect the wrappers' flags,
// these only stop the readers above them.
var (
	errBlobLimit         = errors.New("compressed layer size limit exceeded")
	errUncompressedLimit = errors.New("uncompressed layer size limit exceeded")
)

// blobReader wraps the caller's blob reader: it stops on ctx cancellation,
// counts the compressed bytes against MaxLayerBytes (the descriptor size may
// be unknown or wrong) and remembers failures of the underlying reader, which
// are storage errors rather than bad content.
type blobReader struct {
	ctx      context.Context
	r        io.Reader
	n        int64
	max      int64
	err      error // first non-EOF error of r
	overflow bool
}

func (b *blobReader) Read(p []byte) (int, error) {
	if err := b.ctx.Err(); err != nil {
		return 0, err
	}
	n, err := b.r.Read(p)
	b.n += int64(n)
	if err != nil && !errors.Is(err, io.EOF) && b.err == nil {
		b.err = err
	}
	if b.n > b.max {
		b.overflow = true
		return 0, errBlobLimit
	}
	return n, err
}

// countingReader counts the bytes of the decompressed stream against
// MaxUncompressedBytes and remembers errors of the decompressor.
type countingReader struct {
	r        io.Reader
	n        int64
	max      int64
	err      error // first non-EOF error of r
	overflow bool
}

func (c *countingReader) Read(p []byte) (int, error) {
	if c.overflow {
		return 0, errUncompressedLimit
	}
	// Never read more than one byte past the limit.
	if room := c.max - c.n + 1; int64(len(p)) > room {
		p = p[:room]
	}
	n, err := c.r.Read(p)
	c.n += int64(n)
	if err != nil && !errors.Is(err, io.EOF) && c.err == nil {
		c.err = err
	}
	if c.n > c.max {
		c.overflow = true
		return 0, errUncompressedLimit
	}
	return n, err
}

// Compression formats detected from magic bytes.
const (
	compNone = "tar"
	compGzip = "gzip"
	compZstd = "zstd"
)

var (
	gzipMagic = []byte{0x1f, 0x8b}
	zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}
)

// maxZstdWindow bounds the memory a zstd frame header can make the decoder
// allocate (zstd --long=27 windows are the largest seen in practice).
const maxZstdWindow = 128 << 20

// decompressor returns the decompressed stream of br, detected by magic
// bytes, the name of the format and a close function.
func decompressor(br *bufio.Reader) (io.Reader, string, func(), error) {
	magic, err := br.Peek(len(zstdMagic))
	if err != nil && !errors.Is(err, io.EOF) {
		return nil, "", nil, err
	}
	switch {
	case bytes.HasPrefix(magic, gzipMagic):
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, compGzip, nil, err
		}
		return zr, compGzip, func() { _ = zr.Close() }, nil
	case bytes.HasPrefix(magic, zstdMagic):
		zr, err := zstd.NewReader(br,
			zstd.WithDecoderConcurrency(1),
			zstd.WithDecoderLowmem(true),
			zstd.WithDecoderMaxWindow(maxZstdWindow),
			zstd.WithDecoderMaxMemory(uint64(maxZstdWindow)*2))
		if err != nil {
			return nil, compZstd, nil, err
		}
		return zr, compZstd, zr.Close, nil
	default:
		return br, compNone, func() {}, nil
	}
}

// failure classifies an error met while reading the layer: a non-nil error
// (ctx done, storage failure) is returned to the caller, otherwise the layer
// is unsupported for the returned reason.
func (ix *indexer) failure(err error, what string) (reason string, fatal error) {
	switch {
	case ix.ctx.Err() != nil:
		return "", fmt.Errorf("index layer %s: %w", ix.digest, ix.ctx.Err())
	case ix.blob.err != nil:
		return "", fmt.Errorf("index layer %s: read blob: %w", ix.digest, ix.blob.err)
	case ix.blob.overflow:
		return fmt.Sprintf("layer is over the %d-byte limit", ix.lim.MaxLayerBytes), nil
	case ix.plain != nil && ix.plain.overflow:
		return fmt.Sprintf("uncompressed layer is over the %d-byte limit", ix.lim.MaxUncompressedBytes), nil
	case ix.comp != compNone && (ix.plain == nil || ix.plain.err != nil):
		// The decompressor failed (header or data).
		return fmt.Sprintf("corrupt %s stream: %v", ix.comp, err), nil
	case ix.entries == 0:
		return fmt.Sprintf("not a tar archive: %v", err), nil
	default:
		return fmt.Sprintf("invalid tar archive %s: %v", what, err), nil
	}
}
