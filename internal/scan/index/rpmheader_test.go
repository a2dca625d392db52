package index

import (
	"encoding/binary"
	"encoding/hex"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"
)

// writeBDB writes to path a little-endian Berkeley DB hash file of
// pageSize-byte pages whose one hash page holds a value for each of heads,
// each in an overflow chain of its own: value i is heads[i] followed by
// zeros up to sizes[i] bytes (heads[i] alone when sizes is nil). Pages of
// zeros are left as holes of the file.
func writeBDB(t *testing.T, path string, pageSize int, heads [][]byte, sizes []int) {
	t.Helper()
	le := binary.LittleEndian
	chunk := pageSize - bdbPageHeader
	size := func(i int) int {
		if sizes == nil {
			return len(heads[i])
		}
		return sizes[i]
	}
	pages := 2
	for i := range heads {
		pages += max(1, (size(i)+chunk-1)/chunk)
	}
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	write := func(b []byte, off int) {
		if _, err := f.WriteAt(b, int64(off)); err != nil {
			t.Fatal(err)
		}
	}
	meta := make([]byte, 36)
	le.PutUint32(meta[12:], bdbHashMagic)
	le.PutUint32(meta[20:], uint32(pageSize))
	meta[25] = bdbHashMetaType
	le.PutUint32(meta[32:], uint32(pages-1))
	write(meta, 0)
	hp := make([]byte, pageSize)
	hp[25] = bdbHashType
	le.PutUint16(hp[20:], uint16(2*len(heads)))
	item, next := pageSize, 2
	for i, h := range heads {
		item -= 2 // the key: a one-byte H_KEYDATA item, which go-rpmdb skips
		hp[item], hp[item+1] = 1, byte(i)
		le.PutUint16(hp[bdbPageHeader+4*i:], uint16(item))
		item -= bdbHOffPageLen // the value: an H_OFFPAGE item
		hp[item] = bdbHOffPage
		le.PutUint32(hp[item+4:], uint32(next))
		le.PutUint32(hp[item+8:], uint32(size(i)))
		le.PutUint16(hp[bdbPageHeader+4*i+2:], uint16(item))
		n := max(1, (size(i)+chunk-1)/chunk)
		for j := range n {
			p := make([]byte, bdbPageHeader, pageSize)
			p[25] = bdbOverflowType
			if j < n-1 {
				le.PutUint32(p[16:], uint32(next+1))
			} else {
				le.PutUint16(p[22:], uint16(size(i)-j*chunk))
			}
			if j*chunk < len(h) {
				p = append(p, h[j*chunk:min(len(h), (j+1)*chunk)]...)
			}
			write(p, next*pageSize)
			next++
		}
	}
	write(hp, pageSize)
	if err := f.Truncate(int64(pages * pageSize)); err != nil {
		t.Fatal(err)
	}
}

// buildBDB returns a Berkeley DB hash file of 4096-byte pages whose values
// are the headers.
func buildBDB(t *testing.T, headers ...[]byte) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Packages")
	writeBDB(t, path, 4096, headers, nil)
	db, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

// rpmEntry is an index entry of a test rpm header.
type rpmEntry struct {
	tag, typ, offset, count uint32
}

// rawRPMHeader builds an rpm header of the index entries and data.
func rawRPMHeader(entries []rpmEntry, data []byte) []byte {
	be := binary.BigEndian
	h := be.AppendUint32(nil, uint32(len(entries)))
	h = be.AppendUint32(h, uint32(len(data)))
	for _, e := range entries {
		h = be.AppendUint32(be.AppendUint32(be.AppendUint32(be.AppendUint32(h, e.tag), e.typ), e.offset), e.count)
	}
	return append(h, data...)
}

// regionRPMHeader builds an rpm v4 header, as rpm writes them: a region
// (RPMTAG_HEADERIMMUTABLE) over NAME, VERSION and RELEASE, its trailer
// closing the data. trailer is the trailer's offset field, -16*il for a
// good one.
func regionRPMHeader(trailer int32, name string) []byte {
	data := []byte(name + "\x001.0\x001\x00")
	be := binary.BigEndian
	regionOff := uint32(len(data))
	data = be.AppendUint32(data, rpmTagHeaderImmut)
	data = be.AppendUint32(data, rpmTypeBin)
	data = be.AppendUint32(data, uint32(trailer))
	data = be.AppendUint32(data, rpmRegionTagCount)
	n := uint32(len(name) + 1)
	return rawRPMHeader([]rpmEntry{
		{rpmTagHeaderImmut, rpmTypeBin, regionOff, rpmRegionTagCount},
		{rpmTagName, rpmTypeString, 0, 1},
		{rpmTagVersion, rpmTypeString, n, 1},
		{rpmTagRelease, rpmTypeString, n + 4, 1},
	}, data)
}

// hostileRPMHeaders are package headers that pass checkHeaderCounts but on
// which go-rpmdb's ListPackagesWithContext returns early (or panics),
// leaving its reader goroutine blocked, or that would make it loop for
// long: each with the refusal expected.
var hostileRPMHeaders = []struct {
	name   string
	header []byte
	want   string
}{
	{"no index entries (il=0)", make([]byte, 8), "a package header of 0 index entries"},
	{"bad region tag", func() []byte {
		h := regionRPMHeader(-4*16, "hello")
		binary.BigEndian.PutUint32(h[8+12:], 15) // the region entry's count
		return h
	}(), "invalid region tag"},
	{"bad region size", regionRPMHeader(-5*16, "hello"), "invalid region size"},
	{"region of no entries", regionRPMHeader(0, "hello"), "a region of no entries"},
	{"NAME not a string", rawRPMHeader([]rpmEntry{{rpmTagName, rpmTypeInt32, 0, 1}}, []byte{0, 0, 0, 1}), "tag 1000 of type 4"},
	{"PGP signature too short", rawRPMHeader([]rpmEntry{{rpmTagName, rpmTypeString, 0, 1}, {rpmTagPGP, rpmTypeBin, 2, 2}},
		[]byte("a\x00\x89\x02")), "tag 259 of 2 bytes"},
	{"entry data past the header's end", rawRPMHeader([]rpmEntry{{rpmTagName, rpmTypeString, 0, 1}, {rpmTagArch, rpmTypeInt32, 4, 2}},
		[]byte("abc\x00\x00\x00\x00\x01")), "invalid data length"},
	{"fewer strings than counted", rawRPMHeader([]rpmEntry{{rpmTagProvideName, rpmTypeStringArray, 0, 0xffffffff}},
		[]byte("a\x00bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb")), "invalid data length"},
	{"overlapping entries", rawRPMHeader([]rpmEntry{{rpmTagName, rpmTypeString, 0, 1}, {rpmTagVersion, rpmTypeString, 0, 1}},
		[]byte("a\x00")), "overlaps"},
}

// TestIndexLayerHostileRPMHeaders: an rpm database in Berkeley DB, NDB or
// SQLite form with a header go-rpmdb cannot parse, followed by a good one,
// is not handed to go-rpmdb: the layer is indexed with the database
// reported unread. The same databases with only the good headers are read.
func TestIndexLayerHostileRPMHeaders(t *testing.T) {
	isolateTemp(t)
	good := rpmHeader("hello", "1.0", "1")
	sqlite := func(headers ...[]byte) []byte {
		stmts := []string{"CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL)"}
		for _, h := range headers {
			stmts = append(stmts, "INSERT INTO Packages (blob) VALUES (x'"+hex.EncodeToString(h)+"')")
		}
		return hostileRPMDB(t, stmts...)
	}
	forms := map[string]func(headers ...[]byte) []byte{
		"Packages":     func(h ...[]byte) []byte { return buildBDB(t, h...) },
		"Packages.db":  func(h ...[]byte) []byte { db, _ := buildNDB(h...); return db },
		"rpmdb.sqlite": sqlite,
	}
	for name, build := range forms {
		path := "var/lib/rpm/" + name
		t.Run(name+": good", func(t *testing.T) {
			blob := gz(t, buildTar(t, file("etc/os-release", ubiOSRelease),
				entry{name: path, body: build(good, regionRPMHeader(-4*16, "world")), mode: 0o644}))
			res := index(t, "sha256:good", blob, mtGzip)
			var got []string
			for _, p := range res.Packages {
				got = append(got, p.Name+" "+p.Version)
			}
			if strings.Join(got, ",") != "hello 1.0-1,world 1.0-1" || len(res.Unread) != 0 {
				t.Errorf("packages %q, unread %+v; want hello and world", got, res.Unread)
			}
		})
		for _, c := range hostileRPMHeaders {
			t.Run(name+": "+c.name, func(t *testing.T) {
				blob := gz(t, buildTar(t, file("etc/os-release", ubiOSRelease), entry{name: path, body: build(c.header, good), mode: 0o644}))
				wantUnreadRPM(t, index(t, "sha256:hostile", blob, mtGzip), path, c.want)
			})
		}
	}
}

// TestCheckRPMDatabaseHugeHeader: a header of 256 MiB or more, which
// go-rpmdb refuses (hdrblobInit), is refused in Berkeley DB and NDB form.
// The files are sparse: their zeros take no disk.
func TestCheckRPMDatabaseHugeHeader(t *testing.T) {
	const n = rpmHeaderMaxBytes
	head := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 1), n-24) // il=1, dl=n-24: pvlen n
	want := "over go-rpmdb's limit"

	bdb := filepath.Join(t.TempDir(), "Packages")
	writeBDB(t, bdb, 65536, [][]byte{head}, []int{n})
	if _, err := checkFile(t, bdb); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("Berkeley DB: checkRPMDatabase: %v; want %q", err, want)
	}

	db, blobs := buildNDB(head)
	binary.LittleEndian.PutUint32(db[blobs[0]+12:], n)
	ndb := filepath.Join(t.TempDir(), "Packages.db")
	if err := os.WriteFile(ndb, db, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Truncate(ndb, int64(blobs[0]+ndbBlobHeadLen+n)); err != nil {
		t.Fatal(err)
	}
	if _, err := checkFile(t, ndb); err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("NDB: checkRPMDatabase: %v; want %q", err, want)
	}
}

// settledGoroutines polls runtime.NumGoroutine until it is at most want
// or a few seconds passed, and returns it.
func settledGoroutines(want int) int {
	deadline := time.Now().Add(5 * time.Second)
	for {
		n := runtime.NumGoroutine()
		if n <= want || time.Now().After(deadline) {
			return n
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestIndexLayerRPMHeaderNoGoroutineLeak: go-rpmdb reads an rpm database
// in a goroutine that blocks for ever if its reader returns at a header it
// cannot parse, holding the next one. Indexing a layer whose database
// starts with such a header (8 zero bytes) followed by a large one leaves
// no goroutine behind.
func TestIndexLayerRPMHeaderNoGoroutineLeak(t *testing.T) {
	isolateTemp(t)
	big := make([]byte, 1<<20)
	binary.BigEndian.PutUint32(big, 1)
	binary.BigEndian.PutUint32(big[4:], uint32(len(big)-24))
	ndb, _ := buildNDB(make([]byte, 8), big)
	for name, db := range map[string][]byte{
		"Packages":    buildBDB(t, make([]byte, 8), big),
		"Packages.db": ndb,
		"rpmdb.sqlite": hostileRPMDB(t, "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL)",
			"INSERT INTO Packages (blob) VALUES (zeroblob(8))", "INSERT INTO Packages (blob) VALUES (x'"+hex.EncodeToString(big)+"')"),
	} {
		t.Run(name, func(t *testing.T) {
			path := "var/lib/rpm/" + name
			blob := gz(t, buildTar(t, file("etc/os-release", ubiOSRelease), entry{name: path, body: db, mode: 0o644}))
			before := runtime.NumGoroutine()
			res := index(t, "sha256:leak", blob, mtGzip)
			if after := settledGoroutines(before); after > before {
				t.Errorf("%d goroutines after indexing the layer, %d before: go-rpmdb's reader is left blocked", after, before)
			}
			wantUnreadRPM(t, res, path, "a package header of 0 index entries")
		})
	}
}

// TestCheckRPMHeaderAgreesWithGoRPMDB mutates real package headers at
// random (a fixed seed): every database of a mutated header and a good
// one that the check lets through, go-rpmdb reads whole, without error.
func TestCheckRPMHeaderAgreesWithGoRPMDB(t *testing.T) {
	seeds := [][]byte{rpmHeader("hello", "1.0", "1"), regionRPMHeader(-4*16, "world")}
	if dir := goRPMDBTestdata(t); dir != "" {
		real, err := os.ReadFile(filepath.Join(dir, "blob.bin")) // a real header, with region and dribble entries
		if err != nil {
			t.Fatal(err)
		}
		seeds = append(seeds, real)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	dir := t.TempDir()
	passed, refused := 0, 0
	for i := range 600 {
		h := append([]byte(nil), seeds[i%len(seeds)]...)
		il := int(binary.BigEndian.Uint32(h))
		for range 1 + rng.IntN(3) {
			switch k := rng.IntN(4); {
			case k < 2 && il > 0: // a byte of the index
				h[8+rng.IntN(16*il)] ^= byte(1 + rng.IntN(255))
			case k == 2: // a byte of the data
				h[8+16*il+rng.IntN(len(h)-8-16*il)] ^= byte(1 + rng.IntN(255))
			default: // an index field set to a small value
				binary.BigEndian.PutUint32(h[8+4*rng.IntN(4*il):], uint32(rng.IntN(80)))
			}
		}
		db, _ := buildNDB(h, rpmHeader("good", "1", "1"))
		path := filepath.Join(dir, "Packages.db")
		if err := os.WriteFile(path, db, 0o600); err != nil {
			t.Fatal(err)
		}
		if _, err := checkFile(t, path); err != nil {
			refused++
			continue
		}
		passed++
		if n, err := extractRPM(t, path, "Packages.db"); err != nil || n != 2 {
			t.Errorf("header %x passes the check; go-rpmdb reads %d packages, %v", h, n, err)
		}
	}
	t.Logf("%d mutated headers passed the check, %d were refused", passed, refused)
	if passed == 0 || refused == 0 {
		t.Errorf("%d passed, %d refused: the mutations test nothing", passed, refused)
	}
}
