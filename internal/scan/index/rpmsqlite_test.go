package index

import (
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// hostileRPMDB makes an rpm database file in SQLite form with stmts.
func hostileRPMDB(t *testing.T, stmts ...string) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "rpmdb.sqlite")
	db, err := sql.Open("sqlite", path)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
	db.Close()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestIndexLayerHostileRPMDatabase: an rpm database in SQLite form that
// the extractor's library would run for ever (Packages a view over an
// endless recursive query) or that would make it allocate what a header's
// first bytes claim (2^31 index entries: an allocation that kills the
// process) is skipped with a warning, quickly, and reported unread; the
// layer is still indexed. The library picks the format from the file's
// first bytes, so this holds under every name it reads, not only
// rpmdb.sqlite.
func TestIndexLayerHostileRPMDatabase(t *testing.T) {
	isolateTemp(t)
	huge := make([]byte, 64)
	binary.BigEndian.PutUint32(huge[0:4], 0x7fffffff)
	for name, c := range map[string]struct {
		db   []byte
		want string
	}{
		"endless view": {hostileRPMDB(t, `CREATE VIEW Packages AS WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c)
			SELECT x AS hnum, zeroblob(64) AS blob FROM c WHERE x < 0`), "not a plain table"},
		"huge header": {hostileRPMDB(t, "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY, blob BLOB NOT NULL)",
			"INSERT INTO Packages (blob) VALUES (x'"+hex.EncodeToString(huge)+"')"), "more than its 64 bytes"},
		"no table": {hostileRPMDB(t, "CREATE TABLE Other (x)"), "no Packages table"},
	} {
		for _, path := range []string{"var/lib/rpm/rpmdb.sqlite", "var/lib/rpm/Packages", "var/lib/rpm/Packages.db"} {
			t.Run(name+" as "+path, func(t *testing.T) {
				blob := gz(t, buildTar(t, file("etc/os-release", ubiOSRelease), entry{name: path, body: c.db, mode: 0o644}))
				done := make(chan LayerResult, 1)
				go func() { done <- index(t, "sha256:hostile", blob, mtGzip) }()
				select {
				case res := <-done:
					if !strings.Contains(strings.Join(res.Warnings, "\n"), c.want) {
						t.Errorf("warnings %q; want one saying %q", res.Warnings, c.want)
					}
					wantUnreadRPM(t, res, path, c.want)
				case <-time.After(60 * time.Second):
					t.Fatal("indexing the layer did not finish")
				}
			})
		}
	}
}
