package index

import (
	"bytes"
	"cmp"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
)

// The rpm extractor's library (go-rpmdb) picks an rpm database's format
// from its first bytes, whatever the file is called, in this order:
// SQLite, NDB, Berkeley DB. Each is checked below before the library
// sees it; a file of no known format is refused too.
var (
	sqliteMagic = []byte("SQLite format 3\x00")
	ndbMagic    = []byte("RpmP") // little-endian 'R'|'p'<<8|'m'<<16|'P'<<24 at offset 0
)

const bdbHashMagic = 0x00061561 // at offset 12, in the file's byte order

// checkRPMDatabase decides whether the rpm extractor may open the rpm
// database f (size bytes) from a layer, and returns the number of package
// headers the extractor would read from it.
func checkRPMDatabase(ctx context.Context, f *os.File, size int64) (int, error) {
	head := make([]byte, 16)
	n, err := f.ReadAt(head, 0)
	if err != nil && !errors.Is(err, io.EOF) {
		return 0, &fatalError{fmt.Errorf("read temporary file: %w", err)}
	}
	head = head[:n]
	switch {
	case bytes.Equal(head, sqliteMagic):
		return checkRPMSQLite(ctx, f.Name(), size)
	case bytes.HasPrefix(head, ndbMagic):
		n, err := checkRPMNDB(ctx, f, size)
		if err != nil {
			return 0, fmt.Errorf("in NDB form: %w", err)
		}
		return n, nil
	case len(head) == 16 && (binary.LittleEndian.Uint32(head[12:]) == bdbHashMagic || binary.BigEndian.Uint32(head[12:]) == bdbHashMagic):
		n, err := checkRPMBDB(ctx, f, size)
		if err != nil {
			return 0, fmt.Errorf("in Berkeley DB form: %w", err)
		}
		return n, nil
	}
	return 0, errors.New("not SQLite, NDB or Berkeley DB hash (unknown magic bytes)")
}

// guardRPM runs checkRPMDatabase on name's content before the rpm
// extractor opens it. A database it refuses is recorded as not read (a
// gap of the report, never "no packages"); ok is false then.
func (ix *indexer) guardRPM(name string, c *content) (ok bool, err error) {
	n, err := 0, errors.New("not a file on disk")
	if c.file != nil {
		n, err = checkRPMDatabase(ix.ctx, c.file, c.size)
	}
	if err != nil {
		if ctxErr := ix.ctx.Err(); ctxErr != nil {
			return false, ctxErr
		}
		var fe *fatalError
		if errors.As(err, &fe) {
			return false, err
		}
		if errors.Is(err, errRPMCheckTimedOut) {
			return false, fmt.Errorf("index %s: %w", name, err) // retried, not cached
		}
		ix.warn("skipped %s: not an rpm database this scanner reads: %v", name, err)
		return false, ix.notRead(name, "not read: not an rpm database this scanner reads: %v", err)
	}
	return true, ix.precount(int64(n))
}

// Berkeley DB hash database, as go-rpmdb (pkg/bdb) reads it.
const (
	bdbPageHeader   = 26 // bytes of every page's header
	bdbHashMetaType = 8
	bdbHashType     = 13
	bdbHashOldType  = 2 // unsorted hash page (rpm < 4.6)
	bdbOverflowType = 7
	bdbHOffPage     = 3  // a hash item whose data is in an overflow chain
	bdbHOffPageLen  = 12 // bytes of such an item
)

// checkRPMBDB checks every value go-rpmdb reads from a Berkeley DB hash
// file against the file. go-rpmdb trusts the metadata's last page number,
// each hash page's entry count and item offsets, each overflow chain's
// page numbers and its last page's data length, all in uint16/uint32
// arithmetic that wraps; a bad one panics in a goroutine of its own (the
// process exits), loops for ever (a chain through a page that is not an
// overflow page, or back to itself), or allocates what the header at the
// start of a value claims. So: the file holds every page up to the last;
// every hash entry count and item offset stays inside its page; every
// chain is made of overflow pages of the file, each used by one chain at
// most (which bounds what go-rpmdb reads in all to the file's size); every
// last page's length fits; every value starts with an rpm header that
// passes checkHeaderCounts and checkRPMHeader (rpmheader.go).
func checkRPMBDB(ctx context.Context, r io.ReaderAt, size int64) (int, error) {
	meta := make([]byte, 36)
	if err := readAt(r, meta, 0); err != nil {
		return 0, errors.New("shorter than its metadata")
	}
	var order binary.ByteOrder = binary.LittleEndian
	if order.Uint32(meta[12:]) != bdbHashMagic {
		order = binary.BigEndian
	}
	pageSize := order.Uint32(meta[20:])
	switch {
	case pageSize < 512 || pageSize > 65536 || pageSize&(pageSize-1) != 0:
		return 0, fmt.Errorf("page size %d", pageSize)
	case meta[24] != 0:
		return 0, errors.New("encrypted")
	case meta[25] != bdbHashMetaType:
		return 0, fmt.Errorf("page type %d, not a hash database", meta[25])
	}
	pages := uint64(order.Uint32(meta[32:])) + 1
	if pages*uint64(pageSize) > uint64(size) || pages*uint64(pageSize) > math.MaxUint32 {
		return 0, fmt.Errorf("%d pages of %d bytes do not fit in its %d bytes", pages, pageSize, size)
	}
	ps := int(pageSize)
	b := &bdbFile{r: r, order: order, pageSize: ps, pages: pages, used: make([]bool, pages), buf: make([]byte, ps)}
	page := make([]byte, ps)
	n := 0
	for p := range pages {
		if p%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
		if err := readAt(r, page, int64(p)*int64(ps)); err != nil {
			return 0, fmt.Errorf("read page %d: %w", p, err)
		}
		if typ := page[25]; typ != bdbHashType && typ != bdbHashOldType {
			continue
		}
		entries := int(order.Uint16(page[20:]))
		if entries%2 != 0 || bdbPageHeader+2*entries > ps {
			return 0, fmt.Errorf("hash page %d: %d entries", p, entries)
		}
		for i := 1; i < entries; i += 2 { // keys and values alternate; go-rpmdb reads the values
			off := int(order.Uint16(page[bdbPageHeader+2*i:]))
			if off >= ps {
				return 0, fmt.Errorf("hash page %d: item at offset %d, past its %d bytes", p, off, ps)
			}
			if page[off] != bdbHOffPage {
				continue
			}
			if off+bdbHOffPageLen > ps {
				return 0, fmt.Errorf("hash page %d: item at offset %d runs past its %d bytes", p, off, ps)
			}
			if err := b.value(p, order.Uint32(page[off+4:])); err != nil {
				return 0, err
			}
			if n++; n > maxLayerPackages {
				return n, nil // precount refuses it
			}
		}
	}
	return n, nil
}

// bdbFile is the state of checkRPMBDB.
type bdbFile struct {
	r        io.ReaderAt
	order    binary.ByteOrder
	pageSize int
	pages    uint64
	used     []bool // overflow pages already in a chain
	buf      []byte
}

// value checks the overflow chain starting at page first, the value of an
// item of hash page p, and the package header it holds.
func (b *bdbFile) value(p uint64, first uint32) error {
	var head []byte // the value's first 8 bytes
	length := 0
	for cur := first; cur != 0; {
		if uint64(cur) >= b.pages {
			return fmt.Errorf("hash page %d: a value on page %d, past the last page", p, cur)
		}
		if b.used[cur] {
			return fmt.Errorf("hash page %d: overflow page %d is read twice (a loop or a shared chain)", p, cur)
		}
		b.used[cur] = true
		data, next, err := b.overflow(cur)
		if err != nil {
			return fmt.Errorf("hash page %d: %w", p, err)
		}
		if len(head) < 8 {
			head = append(head, data[:min(len(data), 8-len(head))]...)
		}
		length += len(data)
		cur = next
	}
	if err := checkHeaderCounts(head, length); err != nil {
		return err
	}
	// The chain is sound: read the header it holds, whole, again.
	h := make([]byte, 0, rpmHeaderLen(head))
	for cur := first; len(h) < cap(h); {
		data, next, err := b.overflow(cur)
		if err != nil {
			return fmt.Errorf("hash page %d: %w", p, err)
		}
		h = append(h, data[:min(len(data), cap(h)-len(h))]...)
		cur = next
	}
	return checkRPMHeader(h)
}

// overflow reads overflow page cur into b.buf, and returns its data and
// the next page of its chain.
func (b *bdbFile) overflow(cur uint32) (data []byte, next uint32, err error) {
	if err := readAt(b.r, b.buf, int64(cur)*int64(b.pageSize)); err != nil {
		return nil, 0, fmt.Errorf("read page %d: %w", cur, err)
	}
	if b.buf[25] != bdbOverflowType {
		return nil, 0, fmt.Errorf("a value on page %d, of type %d, not an overflow page", cur, b.buf[25])
	}
	next = b.order.Uint32(b.buf[16:])
	data = b.buf[bdbPageHeader:]
	if next == 0 {
		n := int(b.order.Uint16(b.buf[22:]))
		if bdbPageHeader+n > b.pageSize {
			return nil, 0, fmt.Errorf("overflow page %d: %d bytes of data, more than its page holds", cur, n)
		}
		data = data[:n]
	}
	return data, next, nil
}

// NDB ("Packages.db", rpm >= 4.16), as go-rpmdb (pkg/ndb) reads it.
const (
	ndbHeaderLen    = 32
	ndbSlotPage     = 4096
	ndbSlotLen      = 16
	ndbMaxSlotPages = 2048 // go-rpmdb's own limit
	ndbBlobHeadLen  = 16
)

var (
	ndbSlotMagic = []byte("Slot")
	ndbBlobMagic = []byte("BlbS")
)

// checkRPMNDB checks every value go-rpmdb reads from an NDB file against
// the file. go-rpmdb trusts each used slot's block offset and each blob's
// length (up to 4 GiB allocated as given), and on a blob of the wrong
// magic or package sends an error and goes on, leaving its goroutine
// blocked for ever. So: the slot pages are in the file and every slot is
// one; every used slot's blob starts after them, has the right magic and
// package, ends inside the file and overlaps no other (which bounds what
// go-rpmdb allocates in all to the file's size); every blob starts with an
// rpm header that passes checkHeaderCounts and checkRPMHeader
// (rpmheader.go).
func checkRPMNDB(ctx context.Context, r io.ReaderAt, size int64) (int, error) {
	head := make([]byte, ndbHeaderLen)
	if err := readAt(r, head, 0); err != nil {
		return 0, errors.New("shorter than its header")
	}
	le := binary.LittleEndian
	version, npages := le.Uint32(head[4:]), le.Uint32(head[12:])
	switch {
	case version != 0:
		return 0, fmt.Errorf("version %d", version)
	case npages == 0 || npages > ndbMaxSlotPages || int64(npages)*ndbSlotPage > size:
		return 0, fmt.Errorf("%d slot pages in %d bytes", npages, size)
	}
	slotsEnd := int64(npages) * ndbSlotPage
	slots := make([]byte, slotsEnd-ndbHeaderLen)
	if err := readAt(r, slots, ndbHeaderLen); err != nil {
		return 0, fmt.Errorf("read slots: %w", err)
	}
	type span struct {
		start, end int64
		pkg        uint32
		header     int // bytes of its rpm header
	}
	var blobs []span
	blob := make([]byte, ndbBlobHeadLen+8)
	for i := 0; i < len(slots); i += ndbSlotLen {
		if i%(ndbSlotLen*4096) == 0 {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
		s := slots[i : i+ndbSlotLen]
		if !bytes.Equal(s[:4], ndbSlotMagic) {
			return 0, fmt.Errorf("slot %d: bad magic", i/ndbSlotLen)
		}
		pkg := le.Uint32(s[4:])
		if pkg == 0 {
			continue // free
		}
		off := int64(le.Uint32(s[8:])) * ndbBlobHeadLen
		if off < slotsEnd || off+int64(len(blob)) > size {
			return 0, fmt.Errorf("package %d: a blob at byte %d, outside the file's %d bytes of blobs", pkg, off, size)
		}
		if err := readAt(r, blob, off); err != nil {
			return 0, fmt.Errorf("package %d: read blob: %w", pkg, err)
		}
		if !bytes.Equal(blob[:4], ndbBlobMagic) || le.Uint32(blob[4:]) != pkg {
			return 0, fmt.Errorf("package %d: no blob of the package at byte %d", pkg, off)
		}
		n := int64(le.Uint32(blob[12:]))
		end := off + ndbBlobHeadLen + n
		if end > size {
			return 0, fmt.Errorf("package %d: a blob of %d bytes past the file's end", pkg, n)
		}
		if err := checkHeaderCounts(blob[ndbBlobHeadLen:], int(n)); err != nil {
			return 0, fmt.Errorf("package %d: %w", pkg, err)
		}
		blobs = append(blobs, span{off, end, pkg, rpmHeaderLen(blob[ndbBlobHeadLen:])})
		if len(blobs) > maxLayerPackages {
			return len(blobs), nil // precount refuses it
		}
	}
	slices.SortFunc(blobs, func(a, b span) int { return cmp.Compare(a.start, b.start) })
	for i := 1; i < len(blobs); i++ {
		if blobs[i].start < blobs[i-1].end {
			return 0, fmt.Errorf("blobs at bytes %d and %d overlap", blobs[i-1].start, blobs[i].start)
		}
	}
	// The blobs are apart: read their headers, whole (the file at most).
	for i, b := range blobs {
		if i%1024 == 0 {
			if err := ctx.Err(); err != nil {
				return 0, err
			}
		}
		h := make([]byte, b.header)
		if err := readAt(r, h, b.start+ndbBlobHeadLen); err != nil {
			return 0, fmt.Errorf("package %d: read blob: %w", b.pkg, err)
		}
		if err := checkRPMHeader(h); err != nil {
			return 0, fmt.Errorf("package %d: %w", b.pkg, err)
		}
	}
	return len(blobs), nil
}

// readAt reads len(buf) bytes of r at off: past the end of the file is
// an error of the file, any other a local failure.
func readAt(r io.ReaderAt, buf []byte, off int64) error {
	n, err := r.ReadAt(buf, off)
	switch {
	case n == len(buf):
		return nil
	case err == nil || errors.Is(err, io.EOF):
		return io.ErrUnexpectedEOF
	}
	return &fatalError{fmt.Errorf("read temporary file: %w", err)}
}
