package index

import (
	"archive/zip"
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math"
	"net/textproto"
	"path/filepath"
	"strings"

	"github.com/google/osv-scalibr/extractor/filesystem/language/java/archive"
	"github.com/google/osv-scalibr/extractor/filesystem/language/python/wheelegg"
	"github.com/google/osv-scalibr/extractor/filesystem/simplefileapi"
)

// The Java archive extractor and the wheel and egg extractor read files
// inside zip archives (jars, wheels, eggs), where a few KiB can unpack
// to GiB, and hold what they read in memory: a jar's MANIFEST.MF whole
// (read through a pipe whose writing goroutine stays blocked for good,
// holding the jar, if the parser stops early), every Requires-Dist line
// of a METADATA. Before an archive is handed to them the indexer walks
// it as they will, nested jars included, and refuses it (an unread file
// of the layer) if what they would read is over these bounds.
const (
	// maxArchiveMetadataBytes bounds each metadata file read inside an
	// archive: a jar's MANIFEST.MF and pom.properties, unpacked, and the
	// header lines of a wheel's or egg's METADATA or PKG-INFO (the
	// description after them is not read). Real ones are at most a few
	// hundred KiB (a signed jar's manifest lists every class).
	maxArchiveMetadataBytes = 4 << 20

	// The Java archive extractor's defaults the indexer keeps.
	javaMaxZipDepth = 16
	javaMinZipBytes = 30
)

// javaMaxOpenedBytes is the Java archive extractor's bound of the bytes
// of nested archives it unpacks into memory, per archive.
func javaMaxOpenedBytes(lim Limits) int64 { return 2 * lim.MaxFileBytes }

// guardArchive reports whether the extractor w may read the archive or
// metadata file name; if not, name is recorded as unread. Unpacked
// bytes the extractor will read are charged against
// MaxUncompressedBytes.
func (ix *indexer) guardArchive(w namedExtractor, name string, c *content) (bool, error) {
	var reason string
	var err error
	size := int64(len(c.data))
	if c.file != nil {
		size = c.size
	}
	switch w.name {
	case archive.Name:
		if size >= javaMinZipBytes {
			_, reason, err = ix.checkJar(openZip(c), 1, 0)
		}
	case wheelegg.Name:
		if strings.HasSuffix(name, ".egg") || strings.HasSuffix(name, ".whl") {
			reason, err = ix.checkWheel(w, openZip(c))
		} else if fits, _ := metadataHeaderFits(c.reader(), maxArchiveMetadataBytes); !fits {
			reason = fmt.Sprintf("its header lines are over the %d bytes the scanner reads of a package's metadata", maxArchiveMetadataBytes)
		}
	}
	if err != nil || reason == "" {
		return err == nil, err
	}
	ix.warn("skipped %s: %s", name, reason)
	return false, ix.notRead(name, "not read: %s", reason)
}

// openZip opens the content of an archive as its extractor will; nil if
// it is not a zip (the extractor fails on it, having read nothing).
func openZip(c *content) *zip.Reader {
	var r io.ReaderAt = bytes.NewReader(c.data)
	size := int64(len(c.data))
	if c.file != nil {
		r, size = c.file, c.size
	}
	zr, err := zip.NewReader(r, size)
	if err != nil {
		return nil
	}
	return zr
}

// checkJar walks a Java archive as the extractor's extractWithMax does,
// within its depth and opened-bytes bounds (opened mirrors its count),
// and returns why it may not be read ("" if it may). Each entry read is
// bounded by the size the zip's directory gives it: archive/zip refuses
// to read more.
func (ix *indexer) checkJar(zr *zip.Reader, depth int, opened int64) (int64, string, error) {
	if zr == nil {
		return opened, "", nil
	}
	maxOpened := javaMaxOpenedBytes(ix.lim)
	for _, f := range zr.File {
		if err := ix.ctx.Err(); err != nil {
			return opened, "", err
		}
		var reason string
		var err error
		switch {
		case filepath.Base(f.Name) == "pom.properties":
			reason, err = ix.checkMetadataSize(f)
		case strings.ToLower(filepath.Base(f.Name)) == "manifest.mf":
			reason, err = ix.checkManifest(f)
		case archive.IsArchive(f.Name):
			opened, reason, err = ix.checkNestedJar(f, depth+1, opened, maxOpened)
		}
		if err != nil || reason != "" {
			return opened, reason, err
		}
	}
	return opened, "", nil
}

// checkNestedJar checks a jar inside a jar, unpacked into memory as the
// extractor does.
func (ix *indexer) checkNestedJar(f *zip.File, depth int, opened, maxOpened int64) (int64, string, error) {
	rc, err := f.Open()
	if err != nil {
		return opened, "", nil // the extractor fails on it
	}
	defer func() { _ = rc.Close() }()
	size := f.FileInfo().Size()
	switch {
	case depth > javaMaxZipDepth:
		return opened, "", nil
	case size > math.MaxInt64-opened:
		// The extractor's count would wrap and let it unpack the
		// archive whole.
		return opened, fmt.Sprintf("%s claims %d bytes unpacked", f.Name, f.UncompressedSize64), nil
	case opened+size > maxOpened:
		return opened + size, "", nil // over the extractor's bound: not read
	case size < javaMinZipBytes:
		return opened, "", nil
	}
	if err := ix.charge(size); err != nil {
		return opened, "", err
	}
	data, err := io.ReadAll(rc)
	if err != nil {
		return opened, "", nil
	}
	if opened += int64(len(data)); opened > maxOpened {
		return opened, "", nil
	}
	zr, err := zip.NewReader(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		zr = nil
	}
	opened, reason, err := ix.checkJar(zr, depth, opened)
	if reason != "" {
		reason = f.Name + "/" + reason
	}
	return opened, reason, err
}

// checkMetadataSize bounds a metadata file the extractor reads whole,
// and charges it.
func (ix *indexer) checkMetadataSize(f *zip.File) (string, error) {
	if f.UncompressedSize64 > maxArchiveMetadataBytes {
		return fmt.Sprintf("%s claims %d bytes unpacked, over the %d the scanner reads of a package's metadata",
			f.Name, f.UncompressedSize64, maxArchiveMetadataBytes), nil
	}
	return "", ix.charge(int64(f.UncompressedSize64))
}

// checkManifest bounds a jar's MANIFEST.MF and parses it as the
// extractor will: its reader (NewOmitEmptyLinesReader) feeds the parser
// through a pipe from a goroutine that blocks for good if the parser
// stops before the end (at a malformed line, or where the header ends),
// keeping the jar in memory.
func (ix *indexer) checkManifest(f *zip.File) (string, error) {
	if reason, err := ix.checkMetadataSize(f); reason != "" || err != nil {
		return reason, err
	}
	rc, err := f.Open()
	if err != nil {
		return "", nil // the extractor fails on it
	}
	defer func() { _ = rc.Close() }()
	var lines bytes.Buffer
	sc := bufio.NewScanner(rc)
	for sc.Scan() {
		if line := sc.Bytes(); len(line) > 0 {
			lines.Write(line)
			lines.WriteByte('\n')
		}
	}
	// A read error (a line too long for the scanner included) ends the
	// pipe with it: the parser stops there, and so does the goroutine.
	// The goroutine ends only if the parser reads to the end: it stops
	// early at a malformed line, or at the blank line that ends a MIME
	// header, which the reader writes for a line of a lone "\r" (a
	// "\r\r\n" in the file; truly empty lines it omits).
	br := bufio.NewReader(&lines)
	_, err = textproto.NewReader(br).ReadMIMEHeader()
	if err != nil && !errors.Is(err, io.EOF) {
		return fmt.Sprintf("%s is malformed (%v): the Java archive extractor cannot read it", f.Name, err), nil
	}
	if err == nil {
		if _, err := br.Peek(1); !errors.Is(err, io.EOF) {
			return fmt.Sprintf("%s is malformed (its header ends before the file does): the Java archive extractor cannot read it", f.Name), nil
		}
	}
	return "", nil
}

// checkWheel bounds the metadata files the wheel and egg extractor reads
// in a .whl or .egg, and charges what it reads of them.
func (ix *indexer) checkWheel(w namedExtractor, zr *zip.Reader) (string, error) {
	if zr == nil {
		return "", nil
	}
	for _, f := range zr.File {
		if err := ix.ctx.Err(); err != nil {
			return "", err
		}
		if !fileRequired(w, simplefileapi.New(f.Name, f.FileInfo())) {
			continue
		}
		rc, err := f.Open()
		if err != nil {
			continue // the extractor fails on it
		}
		fits, read := metadataHeaderFits(rc, maxArchiveMetadataBytes)
		_ = rc.Close()
		if !fits {
			return fmt.Sprintf("%s has over %d bytes of header lines, more than the scanner reads of a package's metadata",
				f.Name, maxArchiveMetadataBytes), nil
		}
		if err := ix.charge(read); err != nil {
			return "", err
		}
	}
	return "", nil
}

// metadataHeaderFits reports whether the wheel and egg extractor's
// parser (extractSingleFile) stops within limit bytes of r: at an empty
// line, a line without a colon, a line too long for its scanner, or the
// end. read is the bytes read of r, about what the parser reads.
func metadataHeaderFits(r io.Reader, limit int64) (fits bool, read int64) {
	var used int64 // bytes of the lines parsed
	lr := &io.LimitedReader{R: r, N: limit + 1}
	sc := bufio.NewScanner(lr)
	sc.Split(func(data []byte, atEOF bool) (int, []byte, error) {
		adv, tok, err := bufio.ScanLines(data, atEOF)
		used += int64(adv)
		return adv, tok, err
	})
	for sc.Scan() {
		line := sc.Bytes()
		if len(bytes.TrimSpace(line)) == 0 || (line[0] != ' ' && line[0] != '\t' && !bytes.Contains(line, []byte(":"))) {
			break
		}
	}
	// A scanner error (a line over its buffer, a read error) stops the
	// parser too, a line's length past where this stopped.
	return sc.Err() != nil || used <= limit, limit + 1 - lr.N
}
