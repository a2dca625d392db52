package index

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
)

// go-rpmdb (github.com/erikvarga/go-rpmdb, which osv-scalibr's rpm
// extractor uses) reads every database form the same way: a goroutine of
// its own (bdb.go, ndb.go, sqlite3.go: Read) sends each package header on
// an unbuffered channel, and RpmDB.ListPackagesWithContext (rpmdb.go)
// returns at the first header it cannot parse (headerImport, getNEVRA)
// without draining the channel. That goroutine then blocks for ever on its
// next send, holding the next header (up to the file's size) and, in
// SQLite form, an open query: each such layer leaks. So a database is
// handed to go-rpmdb only if every header passes checkPackageHeader, which
// requires all that go-rpmdb's parsing requires of a header (a mirror of
// its entry.go and package.go at v0.0.0-20250523120114-a15a62cd4593, int32
// arithmetic included), and refuses the headers on which that parsing
// would panic. It adds two rules of rpm's own lib/header.c that the port
// lost, which real rpm databases keep: entries' data does not overlap
// (hdrblobVerifyInfo, "Previous data must not overlap"; go-rpmdb's copy
// shadows its end variable) and a string entry's count of strings are all
// there (strtaglen returns -1 otherwise; go-rpmdb's copy goes on looping
// count times). Without them parsing one header costs go-rpmdb, and this
// check, time quadratic in its size or up to 2^32 scans of it.

// Constants of go-rpmdb's entry.go and rpmtags.go.
const (
	rpmHeaderMaxBytes    = 256 << 20 // entry.go headerMaxbytes
	rpmRegionTagCount    = 16        // entry.go REGION_TAG_COUNT, sizeof(entryInfo)
	rpmTagHeaderImage    = 61
	rpmTagHeaderSigs     = 62
	rpmTagHeaderImmut    = 63
	rpmTagHeaderI18N     = 100 // HEADER_I18NTABLE, RPMTAG_HEADERI18NTABLE
	rpmTypeInt16         = 3
	rpmTypeInt32         = 4
	rpmTypeString        = 6
	rpmTypeBin           = 7 // also REGION_TAG_TYPE
	rpmTypeStringArray   = 8
	rpmTypeI18NString    = 9
	rpmTypeMax           = 9 // RPM_MAX_TYPE
	rpmTagPGP            = 259
	rpmTagName           = 1000
	rpmTagVersion        = 1001
	rpmTagRelease        = 1002
	rpmTagEpoch          = 1003
	rpmTagSummary        = 1004
	rpmTagInstallTime    = 1008
	rpmTagSize           = 1009
	rpmTagVendor         = 1011
	rpmTagLicense        = 1014
	rpmTagArch           = 1022
	rpmTagFileSizes      = 1028
	rpmTagFileModes      = 1030
	rpmTagFileDigests    = 1035
	rpmTagFileFlags      = 1037
	rpmTagFileUserName   = 1039
	rpmTagFileGroupName  = 1040
	rpmTagSourceRPM      = 1044
	rpmTagProvideName    = 1047
	rpmTagRequireName    = 1049
	rpmTagDirIndexes     = 1116
	rpmTagBaseNames      = 1117
	rpmTagDirNames       = 1118
	rpmTagFileDigestAlgo = 5011
	rpmTagModularity     = 5096
)

// entry.go typeSizes and typeAlign.
var (
	rpmTypeSizes = [16]int{0, 1, 1, 2, 4, 8, -1, 1, -1, -1}
	rpmTypeAlign = [16]int{1, 1, 1, 2, 4, 8, 1, 1, 1, 1}
)

// rpmNEVRATypes are the types getNEVRA (package.go) requires of the tags
// it reads (PGP's is checked with its data, SIGMD5 has none).
var rpmNEVRATypes = map[int32][]uint32{
	rpmTagDirIndexes: {rpmTypeInt32}, rpmTagDirNames: {rpmTypeStringArray}, rpmTagBaseNames: {rpmTypeStringArray},
	rpmTagModularity: {rpmTypeString}, rpmTagName: {rpmTypeString}, rpmTagEpoch: {rpmTypeInt32},
	rpmTagVersion: {rpmTypeString}, rpmTagRelease: {rpmTypeString}, rpmTagArch: {rpmTypeString},
	rpmTagSourceRPM: {rpmTypeString}, rpmTagProvideName: {rpmTypeStringArray}, rpmTagRequireName: {rpmTypeStringArray},
	rpmTagLicense: {rpmTypeString}, rpmTagVendor: {rpmTypeString}, rpmTagSize: {rpmTypeInt32},
	rpmTagFileDigestAlgo: {rpmTypeInt32}, rpmTagFileSizes: {rpmTypeInt32}, rpmTagFileDigests: {rpmTypeStringArray},
	rpmTagFileModes: {rpmTypeInt16}, rpmTagFileFlags: {rpmTypeInt32}, rpmTagFileUserName: {rpmTypeStringArray},
	rpmTagFileGroupName: {rpmTypeStringArray}, rpmTagSummary: {rpmTypeI18NString, rpmTypeString},
	rpmTagInstallTime: {rpmTypeInt32}, rpmTagPGP: {rpmTypeBin},
}

// checkPackageHeader checks value, a whole package header as go-rpmdb
// reads it: see checkHeaderCounts and checkRPMHeader.
func checkPackageHeader(value []byte) error {
	if err := checkHeaderCounts(value, len(value)); err != nil {
		return err
	}
	return checkRPMHeader(value[:rpmHeaderLen(value)])
}

// checkHeaderCounts checks that the rpm header a value of length bytes
// starts with (head: its first bytes) counts no more index entries and
// data than the value holds (go-rpmdb allocates what they say first), and
// that it is smaller than go-rpmdb's limit (entry.go hdrblobInit: pvlen <
// headerMaxbytes, here without int32 wrapping).
func checkHeaderCounts(head []byte, length int) error {
	if len(head) < 8 || length < 8 {
		return fmt.Errorf("a package header of %d bytes", length)
	}
	il, dl := uint64(binary.BigEndian.Uint32(head[0:4])), uint64(binary.BigEndian.Uint32(head[4:8]))
	n := 8 + il*rpmHeaderIndexLen + dl
	if n > uint64(length) {
		return fmt.Errorf("a package header counts %d entries and %d bytes of data, more than its %d bytes", il, dl, length)
	}
	if n >= rpmHeaderMaxBytes {
		return fmt.Errorf("a package header of %d bytes, over go-rpmdb's limit of %d", n, rpmHeaderMaxBytes)
	}
	return nil
}

// rpmHeaderLen is the length of the rpm header whose first 8 bytes are
// head, once checkHeaderCounts passed: what checkRPMHeader needs of it.
func rpmHeaderLen(head []byte) int {
	il, dl := int(binary.BigEndian.Uint32(head[0:4])), int(binary.BigEndian.Uint32(head[4:8]))
	return 8 + il*rpmHeaderIndexLen + dl
}

// rpmEntryInfo is an index entry of an rpm header (entry.go entryInfo,
// after ei2h).
type rpmEntryInfo struct {
	tag    int32
	typ    uint32
	offset int32
	count  uint32
}

// rpmBlob is entry.go's hdrblob.
type rpmBlob struct {
	data                []byte
	il, dl              int32
	dataStart, dataEnd  int32
	regionTag, ril, rdl int32
}

func (b *rpmBlob) entry(i int32) rpmEntryInfo {
	e := b.data[8+int(i)*rpmRegionTagCount:]
	be := binary.BigEndian
	return rpmEntryInfo{tag: int32(be.Uint32(e)), typ: be.Uint32(e[4:]), offset: int32(be.Uint32(e[8:])), count: be.Uint32(e[12:])}
}

// checkRPMHeader refuses the rpm header h (after checkHeaderCounts: its
// first rpmHeaderLen bytes) if go-rpmdb's headerImport or getNEVRA would
// fail or panic on it, or if it breaks the two rules of rpm above.
// go-rpmdb sees the whole value; h is shorter only by bytes past the
// header, which makes its length tests (all "past len(data)") refuse more,
// never less.
func checkRPMHeader(h []byte) error {
	// entry.go hdrblobInit.
	if len(h) < 8 {
		return fmt.Errorf("a package header of %d bytes", len(h))
	}
	b := &rpmBlob{data: h, il: int32(binary.BigEndian.Uint32(h)), dl: int32(binary.BigEndian.Uint32(h[4:]))}
	if b.il < 1 {
		return fmt.Errorf("a package header of %d index entries (go-rpmdb: region no tags)", b.il)
	}
	if b.dl < 0 || int64(len(h)) < 8+int64(b.il)*rpmRegionTagCount+int64(b.dl) || len(h) >= rpmHeaderMaxBytes {
		return fmt.Errorf("a package header counts %d entries and %d bytes of data, not its %d bytes", b.il, b.dl, len(h))
	}
	b.dataStart = 8 + b.il*rpmRegionTagCount
	b.dataEnd = b.dataStart + b.dl
	if err := b.verifyRegion(); err != nil {
		return fmt.Errorf("a package header go-rpmdb refuses: %w", err)
	}
	if err := b.verifyInfo(); err != nil {
		return fmt.Errorf("a package header go-rpmdb refuses: %w", err)
	}
	if err := b.importEntries(); err != nil {
		return fmt.Errorf("a package header go-rpmdb refuses: %w", err)
	}
	return nil
}

// hdrchkRange is entry.go's.
func hdrchkRange(dl, offset int32) bool { return offset < 0 || offset > dl }

// verifyRegion is entry.go hdrblobVerifyRegion.
func (b *rpmBlob) verifyRegion() error {
	e := b.entry(0)
	var regionTag int32
	if e.tag == rpmTagHeaderImage || e.tag == rpmTagHeaderSigs || e.tag == rpmTagHeaderImmut {
		regionTag = e.tag
	}
	if e.tag != regionTag {
		return nil // no region
	}
	if e.typ != rpmTypeBin || e.count != rpmRegionTagCount {
		return fmt.Errorf("invalid region tag (tag %d, type %d, count %d)", e.tag, e.typ, e.count)
	}
	if hdrchkRange(b.dl, e.offset+rpmRegionTagCount) {
		return fmt.Errorf("invalid region offset %d", e.offset)
	}
	regionEnd := b.dataStart + e.offset
	if regionEnd < 0 || regionEnd > int32(len(b.data)) || regionEnd+rpmRegionTagCount > int32(len(b.data)) {
		return fmt.Errorf("invalid region offset %d", e.offset)
	}
	trailer := int32(binary.BigEndian.Uint32(b.data[regionEnd+8:])) // its offset
	b.rdl = regionEnd + rpmRegionTagCount - b.dataStart
	trailer = -trailer
	b.ril = trailer / rpmRegionTagCount
	if trailer%rpmRegionTagCount != 0 || hdrchkRange(b.il, b.ril) || hdrchkRange(b.dl, b.rdl) {
		return fmt.Errorf("invalid region size, region %d", regionTag)
	}
	b.regionTag = regionTag
	return nil
}

// verifyInfo is entry.go hdrblobVerifyInfo, and rpm's rule that entries'
// data does not overlap (lib/header.c hdrblobVerifyInfo).
func (b *rpmBlob) verifyInfo() error {
	var first, prevEnd int32
	if b.regionTag != 0 {
		first = 1
	}
	for i := first; i < b.il; i++ {
		e := b.entry(i)
		switch {
		case e.offset < 0: // go-rpmdb: end (always 0, shadowed) > offset
			return fmt.Errorf("entry %d: invalid offset %d", i, e.offset)
		case e.tag < rpmTagHeaderI18N:
			return fmt.Errorf("entry %d: invalid tag %d", i, e.tag)
		case e.typ > rpmTypeMax:
			return fmt.Errorf("entry %d: invalid type %d", i, e.typ)
		case e.offset&int32(rpmTypeAlign[e.typ]-1) != 0:
			return fmt.Errorf("entry %d: offset %d not aligned for type %d", i, e.offset, e.typ)
		case hdrchkRange(b.dl, e.offset):
			return fmt.Errorf("entry %d: offset %d past the data", i, e.offset)
		case e.offset < prevEnd: // rpm, not go-rpmdb
			return fmt.Errorf("entry %d: data at offset %d overlaps the previous entry's", i, e.offset)
		}
		length := b.dataLength(e.typ, e.count, b.dataStart+e.offset)
		end := e.offset + int32(length)
		if hdrchkRange(b.dl, end) || length <= 0 {
			return fmt.Errorf("entry %d: invalid data length (tag %d, type %d, count %d)", i, e.tag, e.typ, e.count)
		}
		prevEnd = end
	}
	return nil
}

// dataLength is entry.go's, with rpm's strtaglen.
func (b *rpmBlob) dataLength(typ, count uint32, start int32) int {
	switch typ {
	case rpmTypeString:
		if count != 1 {
			return -1
		}
		return b.strtaglen(1, start)
	case rpmTypeStringArray, rpmTypeI18NString:
		return b.strtaglen(count, start)
	}
	if rpmTypeSizes[typ] == -1 {
		return -1
	}
	length := rpmTypeSizes[typ&0xf] * int(count)
	if length < 0 || b.dataEnd > 0 && start+int32(length) > b.dataEnd {
		return -1
	}
	return length
}

// strtaglen is entry.go's, except that, as rpm's (lib/header.c), it
// returns -1 when fewer than count strings end before dataEnd: go-rpmdb's
// then loops on, count times, scanning the rest of the data each time.
func (b *rpmBlob) strtaglen(count uint32, start int32) int {
	if start >= b.dataEnd || b.dataEnd > int32(len(b.data)) {
		return -1
	}
	length := 0
	for c := count; c > 0; c-- {
		offset := start + int32(length)
		if offset > int32(len(b.data)) {
			return -1
		}
		i := bytes.IndexByte(b.data[offset:b.dataEnd], 0)
		if i < 0 {
			return -1
		}
		length += i + 1
	}
	return length
}

// alignDiff is entry.go's.
func alignDiff(typ, alignSize uint32) int {
	if size := rpmTypeSizes[typ]; size > 1 {
		if diff := size - int(alignSize)%size; diff != size {
			return diff
		}
	}
	return 0
}

// rpmImported is an entry go-rpmdb's hdrblobImport hands to getNEVRA.
type rpmImported struct {
	tag  int32
	typ  uint32
	data []byte
}

// importEntries is entry.go hdrblobImport, with getNEVRA's checks of the
// entries it returns.
func (b *rpmBlob) importEntries() error {
	e := b.entry(0)
	var rdlen int32
	var err error
	if e.tag >= rpmTagHeaderI18N { // an rpm v3 header: no region
		if rdlen, err = b.regionSwab(0, b.il, 0, checkNEVRAEntry); err != nil {
			return err
		}
	} else {
		ril := b.ril
		if e.offset == 0 {
			ril = b.il
		}
		if ril < 1 {
			return errors.New("a region of no entries (go-rpmdb panics: peList[1:0])")
		}
		merge := b.ril < b.il-1 // go-rpmdb keeps the last entry of each tag then
		last := map[int32]rpmImported{}
		keep := checkNEVRAEntry
		if merge {
			keep = func(ie rpmImported) error {
				if _, ok := rpmNEVRATypes[ie.tag]; ok {
					last[ie.tag] = ie
				}
				return nil
			}
		}
		if rdlen, err = b.regionSwab(1, ril, 0, keep); err != nil {
			return fmt.Errorf("region entries: %w", err)
		}
		if rdlen < 0 {
			return errors.New("invalid region length")
		}
		if merge {
			if rdlen, err = b.regionSwab(ril, b.il, rdlen, keep); err != nil {
				return fmt.Errorf("dribble entries: %w", err)
			}
			if rdlen < 0 {
				return errors.New("invalid length of dribble entries")
			}
			for _, ie := range last {
				if err := checkNEVRAEntry(ie); err != nil {
					return err
				}
			}
		}
		rdlen += rpmRegionTagCount
	}
	if rdlen != b.dl {
		return fmt.Errorf("the calculated length (%d) is different from the data length (%d)", rdlen, b.dl)
	}
	return nil
}

// regionSwab is entry.go's, over entries [from, to), handing each to keep.
func (b *rpmBlob) regionSwab(from, to, dl int32, keep func(rpmImported) error) (int32, error) {
	for i := from; i < to; i++ {
		e := b.entry(i)
		if e.typ > rpmTypeMax { // verifyInfo refused it; go-rpmdb would panic
			return 0, fmt.Errorf("entry %d: invalid type %d", i, e.typ)
		}
		start := b.dataStart + e.offset
		if start >= b.dataEnd {
			return 0, errors.New("invalid data offset")
		}
		if start < 0 { // verifyInfo refused it; go-rpmdb would panic
			return 0, errors.New("invalid data offset")
		}
		var length int
		if i < to-1 && rpmTypeSizes[e.typ] == -1 {
			length = int(b.entry(i+1).offset - e.offset)
		} else {
			length = b.dataLength(e.typ, e.count, start)
		}
		if length < 0 {
			return 0, errors.New("invalid data length")
		}
		end := int(start) + length
		if start > int32(len(b.data)) || end > len(b.data) {
			return 0, errors.New("invalid data length")
		}
		if err := keep(rpmImported{tag: e.tag, typ: e.typ, data: b.data[start:end]}); err != nil {
			return 0, err
		}
		dl += int32(length + alignDiff(e.typ, uint32(dl)))
	}
	return dl, nil
}

// checkNEVRAEntry fails where package.go getNEVRA fails on ie.
func checkNEVRAEntry(ie rpmImported) error {
	types, ok := rpmNEVRATypes[ie.tag]
	if !ok {
		return nil
	}
	found := false
	for _, t := range types {
		found = found || ie.typ == t
	}
	if !found {
		return fmt.Errorf("tag %d of type %d (go-rpmdb: invalid package info)", ie.tag, ie.typ)
	}
	need := 0
	switch ie.tag {
	case rpmTagEpoch, rpmTagSize, rpmTagFileDigestAlgo, rpmTagInstallTime: // parseInt32
		need = 4
	case rpmTagPGP: // tag, signature type, version, then a struct of their kind
		need = 3
		if len(ie.data) >= 3 {
			switch sigType, version := ie.data[1], ie.data[2]; {
			case sigType == 0x01 && version == 0x1c:
				need += 24 // textSig
			case sigType == 0x02 && version == 0x33:
				need += 35 // pgp4Sig
			case sigType == 0x01 || sigType == 0x02:
				need += 17 // pgpSig
			}
		}
	}
	if len(ie.data) < need {
		return fmt.Errorf("tag %d of %d bytes (go-rpmdb: invalid package info)", ie.tag, len(ie.data))
	}
	return nil
}
