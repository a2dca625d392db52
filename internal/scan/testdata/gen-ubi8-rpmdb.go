//go:build ignore

// gen-ubi8-rpmdb writes ubi8-rpmdb.sqlite: an rpm database in the SQLite
// format (rpm 4.16+, /var/lib/rpm/rpmdb.sqlite) holding the real headers
// of a few packages of a UBI 8 image, copied from the Berkeley DB rpmdb
// in go-rpmdb's test data (testdata/ubi8-s390x/Packages, Apache License
// 2.0). Run from the repository root:
//
//	go run ./internal/scan/testdata/gen-ubi8-rpmdb.go [-list]
package main

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/binary"
	"flag"
	"fmt"
	"log"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"

	"github.com/erikvarga/go-rpmdb/pkg/bdb"
	_ "modernc.org/sqlite"
)

// keep are the packages copied.
var keep = []string{"zlib", "gdbm-libs", "which"}

func main() {
	list := flag.Bool("list", false, "list the packages of the source database")
	flag.Parse()
	ctx := context.Background()
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		log.Fatal(err)
	}
	mod, err := exec.Command("go", "list", "-m", "-f", "{{.Version}}", "github.com/erikvarga/go-rpmdb").Output()
	if err != nil {
		log.Fatal(err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "github.com/erikvarga/go-rpmdb@"+strings.TrimSpace(string(mod)), "pkg/testdata/ubi8-s390x/Packages")
	db, err := bdb.Open(src)
	if err != nil {
		log.Fatal(err)
	}
	var blobs [][]byte
	for e := range db.Read(ctx) {
		if e.Err != nil {
			log.Fatal(e.Err)
		}
		name, nevr := nameOf(e.Value)
		if *list {
			fmt.Println(nevr)
		}
		if slices.Contains(keep, name) {
			log.Printf("%s: %d bytes of header", nevr, len(e.Value))
			blobs = append(blobs, e.Value)
		}
	}
	if *list {
		return
	}
	dst := "internal/scan/testdata/ubi8-rpmdb.sqlite"
	os.Remove(dst)
	out2, err := sql.Open("sqlite", dst)
	if err != nil {
		log.Fatal(err)
	}
	defer out2.Close()
	// The table rpm 4.16 creates (lib/backend/sqlite.c).
	if _, err := out2.Exec("CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL)"); err != nil {
		log.Fatal(err)
	}
	for _, b := range blobs {
		if _, err := out2.Exec("INSERT INTO Packages (blob) VALUES (?)", b); err != nil {
			log.Fatal(err)
		}
	}
	if _, err := out2.Exec("VACUUM"); err != nil {
		log.Fatal(err)
	}
	log.Printf("wrote %d packages to %s", len(blobs), dst)
}

// nameOf reads the NAME, EPOCH, VERSION and RELEASE tags of a header blob:
// index count and data size (big-endian uint32), 16-byte index entries
// (tag, type, offset, count), then the data.
func nameOf(h []byte) (name, nevr string) {
	il := int(binary.BigEndian.Uint32(h[0:4]))
	data := h[8+16*il:]
	tags := map[uint32]string{}
	for i := range il {
		e := h[8+16*i : 8+16*i+16]
		tag, typ, off := binary.BigEndian.Uint32(e[0:4]), binary.BigEndian.Uint32(e[4:8]), binary.BigEndian.Uint32(e[8:12])
		switch {
		case typ == 6: // STRING
			s := data[off:]
			tags[tag] = string(s[:bytes.IndexByte(s, 0)])
		case typ == 4: // INT32
			tags[tag] = fmt.Sprint(binary.BigEndian.Uint32(data[off:]))
		}
	}
	nevr = tags[1000] + "-" + tags[1001] + "-" + tags[1002]
	if ep, ok := tags[1003]; ok {
		nevr = tags[1000] + "-" + ep + ":" + tags[1001] + "-" + tags[1002]
	}
	return tags[1000], nevr
}
