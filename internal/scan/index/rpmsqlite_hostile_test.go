package index

import (
	"database/sql"
	"encoding/hex"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"testing"
	"time"
)

// ubiHeader is the first package header of the UBI 8 rpm database.
func ubiHeader(t *testing.T) []byte {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join("..", "testdata", "ubi8-rpmdb.sqlite")+"?mode=ro&immutable=1")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var h []byte
	if err := db.QueryRow("SELECT blob FROM Packages ORDER BY hnum LIMIT 1").Scan(&h); err != nil {
		t.Fatal(err)
	}
	return h
}

// TestIndexLayerRPMSQLiteComputedBlobs: in an rpm database in SQLite
// form, Packages' blob column may be computed rather than stored: a
// generated column (virtual by default: its DDL need not say VIRTUAL)
// of zeroblob(900000000) makes a file of a few KiB a 900 MB value that
// reading it materialises, and copies; a default value, which SQLite
// returns for rows written before the column was added, repeats one
// stored header for every row. Such a database is refused quickly, as a
// gap of the report (never "no rpm packages"), before any blob is read;
// a genuine database still reads.
func TestIndexLayerRPMSQLiteComputedBlobs(t *testing.T) {
	isolateTemp(t)
	const path = "var/lib/rpm/rpmdb.sqlite"
	for name, c := range map[string]struct {
		db   []byte
		want string
	}{
		"generated blob": {hostileRPMDB(t, "CREATE TABLE Packages(hnum INTEGER PRIMARY KEY, blob BLOB AS (zeroblob(900000000)))",
			"INSERT INTO Packages(hnum) VALUES (1)"), "generated"},
		"stored generated blob": {hostileRPMDB(t, "CREATE TABLE Packages(hnum INTEGER PRIMARY KEY, x BLOB, blob BLOB AS (x) STORED)",
			"INSERT INTO Packages(x) VALUES (x'"+hex.EncodeToString(ubiHeader(t))+"')"), "generated"},
		"default blob": {hostileRPMDB(t, "CREATE TABLE Packages(hnum INTEGER PRIMARY KEY)",
			"WITH RECURSIVE c(x) AS (SELECT 1 UNION ALL SELECT x+1 FROM c WHERE x < 2000) INSERT INTO Packages(hnum) SELECT x FROM c",
			"ALTER TABLE Packages ADD COLUMN blob BLOB NOT NULL DEFAULT x'"+hex.EncodeToString(ubiHeader(t))+"'"), "more than the file's"},
	} {
		t.Run(name, func(t *testing.T) {
			if len(c.db) > 64<<10 {
				t.Fatalf("the database is %d bytes: the test should build a small one", len(c.db))
			}
			blob := buildTar(t, file("etc/os-release", ubiOSRelease), entry{name: path, body: c.db, mode: 0o644})
			runtime.GC()
			start := time.Now()
			var res LayerResult
			grew := allocated(func() { res = indexWith(t, "sha256:computed", blob, Limits{}) })
			if grew > 64<<20 {
				t.Errorf("indexing a %d-byte database allocated %d MiB", len(c.db), grew>>20)
			}
			if d := time.Since(start); d > 10*time.Second {
				t.Errorf("indexing took %v", d)
			}
			t.Logf("allocated %d KiB in %v", grew>>10, time.Since(start))
			wantUnreadRPM(t, res, path, c.want)
		})
	}

	t.Run("genuine", func(t *testing.T) {
		db, err := os.ReadFile("../testdata/ubi8-rpmdb.sqlite")
		if err != nil {
			t.Fatal(err)
		}
		res := index(t, "sha256:ubi", buildTar(t, file("etc/os-release", ubiOSRelease), entry{name: path, body: db, mode: 0o644}), mtTar)
		var got []string
		for _, p := range res.Packages {
			got = append(got, p.Name)
		}
		if want := []string{"gdbm-libs", "which", "zlib"}; !slices.Equal(got, want) || len(res.Unread) != 0 {
			t.Errorf("packages %q, unread %+v; want %q and no gap", got, res.Unread, want)
		}
	})
}
