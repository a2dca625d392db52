package index

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
)

// rpmHeader builds an rpm package header without a region (as rpm 3
// wrote them, and go-rpmdb reads) of string tags NAME, VERSION, RELEASE...
func rpmHeader(values ...string) []byte {
	be := binary.BigEndian
	var index, data []byte
	for i, v := range values {
		index = be.AppendUint32(index, uint32(1000+i)) // RPMTAG_NAME, _VERSION, _RELEASE
		index = be.AppendUint32(index, 6)              // RPM_STRING_TYPE
		index = be.AppendUint32(index, uint32(len(data)))
		index = be.AppendUint32(index, 1)
		data = append(append(data, v...), 0)
	}
	h := be.AppendUint32(nil, uint32(len(values)))
	h = be.AppendUint32(h, uint32(len(data)))
	return append(append(h, index...), data...)
}

// ndbSlot is the offset of slot i of an NDB file.
func ndbSlot(i int) int { return ndbHeaderLen + i*ndbSlotLen }

// buildNDB builds an NDB rpm database (Packages.db) of the headers, and
// returns it with the offset of each header's blob.
func buildNDB(headers ...[]byte) (db []byte, blobs []int) {
	le := binary.LittleEndian
	npages := (len(headers) + 2 + ndbSlotPage/ndbSlotLen - 1) / (ndbSlotPage / ndbSlotLen)
	db = make([]byte, npages*ndbSlotPage)
	copy(db, ndbMagic)
	le.PutUint32(db[12:], uint32(npages))
	for i := 0; ndbSlot(i) < len(db); i++ {
		copy(db[ndbSlot(i):], ndbSlotMagic)
	}
	for i, h := range headers {
		off := len(db)
		blobs = append(blobs, off)
		blocks := (ndbBlobHeadLen + len(h) + 16 + 15) / 16 // head, blob, tail
		le.PutUint32(db[ndbSlot(i)+4:], uint32(i+1))
		le.PutUint32(db[ndbSlot(i)+8:], uint32(off/16))
		le.PutUint32(db[ndbSlot(i)+12:], uint32(blocks))
		blob := make([]byte, blocks*16)
		copy(blob, ndbBlobMagic)
		le.PutUint32(blob[4:], uint32(i+1))
		le.PutUint32(blob[12:], uint32(len(h)))
		copy(blob[ndbBlobHeadLen:], h)
		db = append(db, blob...)
	}
	return db, blobs
}

// helloNDB is an NDB database of two packages, hello and world.
func helloNDB(mutate func(db []byte, blobs []int)) []byte {
	db, blobs := buildNDB(rpmHeader("hello", "1.0", "1"), rpmHeader("world", "2.0", "1"))
	if mutate != nil {
		mutate(db, blobs)
	}
	return db
}

// TestIndexLayerRPMNDB: an NDB rpm database is read, whatever its name.
func TestIndexLayerRPMNDB(t *testing.T) {
	isolateTemp(t)
	for _, name := range []string{"var/lib/rpm/Packages.db", "usr/lib/sysimage/rpm/Packages.db", "var/lib/rpm/Packages"} {
		blob := gz(t, buildTar(t, file("etc/os-release", ubiOSRelease), entry{name: name, body: helloNDB(nil), mode: 0o644}))
		res := index(t, "sha256:ndb", blob, mtGzip)
		var got []string
		for _, p := range res.Packages {
			got = append(got, p.Kind+" "+p.Name+" "+p.Version+" "+p.Path)
		}
		if want := "rpm hello 1.0-1 " + name + ",rpm world 2.0-1 " + name; strings.Join(got, ",") != want || len(res.Unread) != 0 {
			t.Errorf("%s: packages %q, unread %+v; want %q", name, got, res.Unread, want)
		}
	}
}

// TestIndexLayerHostileRPMFiles: a Berkeley DB or NDB rpm database that
// would make go-rpmdb panic in its own goroutine, loop for ever, allocate
// what a field claims, or read the same pages once for each of many
// values is not handed to it: the layer is indexed with the database
// reported unread.
func TestIndexLayerHostileRPMFiles(t *testing.T) {
	isolateTemp(t)
	le, be := binary.LittleEndian, binary.BigEndian
	type tc struct {
		name string
		db   []byte
		want string
	}
	cases := []tc{
		{"Packages", epochBDB(t, func(db []byte) { le.PutUint32(db[epochOverflow+16:], 4) }), "overflow page 4 is read twice (a loop)"},   // go-rpmdb: for ever
		{"Packages", epochBDB(t, func(db []byte) { le.PutUint32(db[epochItem+4:], 3) }), "a value on page 3, of type 0, not an overflow"}, // go-rpmdb: for ever
		{"Packages", epochBDB(t, func(db []byte) { le.PutUint32(db[epochItem+4:], 99) }), "a value on page 99, past the last page"},
		{"Packages", epochBDB(t, func(db []byte) { le.PutUint16(db[epochHashPage+bdbPageHeader+2:], 4069) }), "overflow page 4 is read twice (two values, one chain)"},
		{"Packages", epochBDB(t, func(db []byte) { be.PutUint32(db[epochHeader:], 0x7fffffff) }), "counts 2147483647 entries"},
		{"Packages", epochBDB(t, func(db []byte) { le.PutUint32(db[32:], 99) }), "100 pages of 4096 bytes do not fit in its 20480 bytes"},
		{"Packages", epochBDB(t, func(db []byte) { le.PutUint32(db[20:], 1000) }), "page size 1000"},
		{"Packages", epochBDB(t, func(db []byte) { le.PutUint32(db[32:], 0xffffffff) }), "4294967296 pages"},
		{"Packages", randomBytes(4096), "unknown magic bytes"},
		{"Packages", []byte("RpmP"), "in NDB form: shorter than its header"},
		{"Packages.db", helloNDB(func(db []byte, b []int) { le.PutUint32(db[b[0]+12:], 0xfffffff0) }), "a blob of 4294967280 bytes past the file's end"},
		{"Packages.db", helloNDB(func(db []byte, b []int) { copy(db[ndbSlot(1):], db[ndbSlot(0):ndbSlot(1)]) }), "overlap"},
		{"Packages.db", helloNDB(func(db []byte, b []int) { le.PutUint32(db[ndbSlot(0)+8:], 2) }), "a blob at byte 32, outside"},
		{"Packages.db", helloNDB(func(db []byte, b []int) { copy(db[ndbSlot(7):], "Slut") }), "slot 7: bad magic"},
		{"Packages.db", helloNDB(func(db []byte, b []int) { copy(db[b[1]:], "Blob") }), "package 2: no blob of the package"},
		{"Packages.db", helloNDB(func(db []byte, b []int) { le.PutUint32(db[12:], 2048) }), "2048 slot pages"},
		{"Packages.db", helloNDB(func(db []byte, b []int) { be.PutUint32(db[b[0]+ndbBlobHeadLen:], 0x7fffffff) }), "counts 2147483647 entries"},
		{"Packages.db", helloNDB(func(db []byte, b []int) { le.PutUint32(db[4:], 1) }), "in NDB form: version 1"},
	}
	for name, c := range hostileBDBCrashes {
		cases = append(cases, tc{"Packages", epochBDB(t, c.mutate), c.want + " (" + name + ")"})
	}
	for _, c := range cases {
		want, _, _ := strings.Cut(c.want, " (")
		t.Run(c.name+": "+c.want, func(t *testing.T) {
			path := "var/lib/rpm/" + c.name
			blob := gz(t, buildTar(t, file("etc/os-release", ubiOSRelease), entry{name: path, body: c.db, mode: 0o644}))
			wantUnreadRPM(t, index(t, "sha256:hostile", blob, mtGzip), path, want)
		})
	}
}

// TestIndexLayerRPMPackageCap: an rpm database of more packages than a
// layer may hold is refused before extraction.
func TestIndexLayerRPMPackageCap(t *testing.T) {
	isolateTemp(t)
	h := rpmHeader("p")
	headers := make([][]byte, maxLayerPackages+1)
	for i := range headers {
		headers[i] = h
	}
	db, _ := buildNDB(headers...)
	n, err := checkBytes(t, db)
	if err != nil || n <= maxLayerPackages {
		t.Fatalf("checkRPMDatabase = %d, %v; want over %d packages", n, err, maxLayerPackages)
	}
	blob := gz(t, buildTar(t, entry{name: "var/lib/rpm/Packages.db", body: db, mode: 0o644}))
	var res LayerResult
	alloc := allocated(func() {
		res, err = IndexLayer(t.Context(), "sha256:many", bytes.NewReader(blob), mtGzip, int64(len(blob)), Limits{})
	})
	wantUnsupported(t, res, err, "over 200000 packages in one layer")
	t.Logf("%d-byte file, %d bytes allocated", len(db), alloc)
	if alloc > 8*uint64(len(db)) {
		t.Errorf("indexing allocated %d bytes for a %d-byte file: the packages were built before the refusal", alloc, len(db))
	}
}
