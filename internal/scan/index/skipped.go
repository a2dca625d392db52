package index

import (
	"archive/tar"
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"strings"

	"github.com/google/osv-scalibr/extractor/filesystem/language/java/archive"
)

// A file an extractor wants that the scanner does not read, or reads only
// in part, is a gap of the report (LayerResult.Unread, then Image.Gaps),
// not only a warning: with a warning alone the image would look complete
// while the packages in the file are unknown.

// goBuildInfoMarker starts a Go binary's build information
// (debug/buildinfo's buildInfoMagic): the Go binary extractor finds
// nothing in a file without it.
const goBuildInfoMarker = "\xff Go buildinf:"

// markerChunk is the bytes of a file read at once while looking for
// goBuildInfoMarker in it.
const markerChunk = 32 << 10

// tooBig handles a file over MaxFileBytes that an extractor, the
// os-release reader or the content-manifest reader wants: none of them
// reads it. It is a gap if an extractor would have found packages in it:
// an OS package database, a jar, a wheel or egg, a package's metadata. An
// executable only the Go binary extractor wants (any executable, and any
// file named like a shared library) is a gap only if it is a Go binary:
// its first bytes name an executable format and it holds the build
// information marker, which it is streamed through (never held) to find.
// A big C library or a script is no gap: that extractor finds nothing in
// it at any size.
func (ix *indexer) tooBig(r io.Reader, hdr *tar.Header, name string, wanters []namedExtractor) error {
	if len(wanters) > 0 && ix.ex.onlyGoBinary(wanters) {
		goBinary, err := ix.isGoBinary(r, hdr.Size)
		if err != nil || !goBinary {
			return err
		}
	}
	ix.warn("skipped %s: %d bytes is over the %d-byte file limit", name, hdr.Size, ix.lim.MaxFileBytes)
	if len(wanters) == 0 { // an os-release or a content manifest
		return nil
	}
	return ix.notRead(name, "not read: %d bytes is over the %d-byte file limit (scan.maxFileBytes)", hdr.Size, ix.lim.MaxFileBytes)
}

// isGoBinary reads r, the size bytes of a file, until it knows whether
// the file is a Go binary with build information. The bytes the tar
// reader makes up rather than reads from the layer (a sparse entry's
// holes, read as zeros) are charged against MaxUncompressedBytes; the
// bytes it reads from the layer already count there.
func (ix *indexer) isGoBinary(r io.Reader, size int64) (bool, error) {
	if err := ix.charge(min(size, 4)); err != nil {
		return false, err
	}
	head, err := readUpTo(r, 4)
	if err != nil || !isExecutableFormat(head) {
		return false, err
	}
	marker := []byte(goBuildInfoMarker)
	buf := make([]byte, len(marker)-1+markerChunk)
	kept := 0 // bytes of the last chunk kept: a marker may start in them
	start := ix.plain.n
	var read, holes int64
	for {
		if err := ix.ctx.Err(); err != nil {
			return false, err
		}
		n, err := io.ReadFull(r, buf[kept:])
		read += int64(n)
		if made := read - (ix.plain.n - start); made > holes {
			if err := ix.charge(made - holes); err != nil {
				return false, err
			}
			holes = made
		}
		data := buf[:kept+n]
		if bytes.Contains(data, marker) {
			return true, nil
		}
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return false, nil // the end of the file (or of the stream: tar says so next)
		}
		if err != nil {
			return false, err
		}
		kept = copy(buf, data[len(data)-(len(marker)-1):])
	}
}

// extractorFailed records the failure err of the extractor w on name.
// The file is a gap where the failure leaves packages in it unknown: an
// OS package database the extractor failed on (or part way), and a Java
// archive the Java archive extractor read only in part (past its nesting
// depth or its bound of bytes unpacked, a nested archive it could not
// open, an entry it could not read or parse). A file named like a Java
// archive that is no zip at all (archive/zip finds no directory in it)
// holds nothing a JVM could load either: a warning only. The other
// extractors' failures (a package.json, METADATA or wheel they cannot
// parse) stay warnings.
func (ix *indexer) extractorFailed(w namedExtractor, name string, c *content, err error) error {
	msg := err.Error()
	if c.root != "" { // keep results free of temporary paths
		msg = strings.ReplaceAll(msg, c.root+string(filepath.Separator), "")
	}
	// The Java archive extractor wraps its error once per nested archive.
	msg = strings.ReplaceAll(msg, "error(s) in extractor "+w.name+": ", "")
	ix.warn("%s: %s: %s", w.name, name, msg)
	switch {
	case isOSExtractor(w.name):
	case w.name == archive.Name && openZip(c) != nil:
	default:
		return nil
	}
	return ix.notRead(name, "the %s extractor failed on it: %s", w.name, msg)
}
