package index

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"testing/fstest"

	"github.com/google/osv-scalibr/extractor/filesystem"
	"github.com/google/osv-scalibr/extractor/filesystem/os/rpm"

	cpb "github.com/google/osv-scalibr/binary/proto/config_go_proto"
)

// extractRPM runs osv-scalibr's rpm extractor on the rpm database at
// path, as var/lib/rpm/<base>, and returns the packages it found.
func extractRPM(t *testing.T, path, base string) (int, error) {
	t.Helper()
	abs, err := filepath.Abs(path)
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	if err := os.MkdirAll(filepath.Join(root, "var/lib/rpm"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, filepath.Join(root, "var/lib/rpm", base)); err != nil {
		t.Fatal(err)
	}
	e, err := rpm.New(&cpb.PluginConfig{})
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(abs)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	inv, err := e.Extract(context.Background(), &filesystem.ScanInput{
		FS: fstest.MapFS{}, Path: "var/lib/rpm/" + base, Root: root, Info: info, Reader: f,
	})
	return len(inv.Packages), err
}

// checkFile runs checkRPMDatabase on the file at path.
func checkFile(t *testing.T, path string) (int, error) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	info, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	return checkRPMDatabase(context.Background(), f, info.Size())
}

// checkBytes runs checkRPMDatabase on db.
func checkBytes(t *testing.T, db []byte) (int, error) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "Packages")
	if err := os.WriteFile(path, db, 0o600); err != nil {
		t.Fatal(err)
	}
	return checkFile(t, path)
}

// goRPMDBTestdata is go-rpmdb's testdata directory in the module cache,
// real rpm databases of many distributions.
func goRPMDBTestdata(t *testing.T) string {
	t.Helper()
	out, err := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "github.com/erikvarga/go-rpmdb").Output()
	dir := filepath.Join(strings.TrimSpace(string(out)), "pkg", "testdata")
	if _, statErr := os.Stat(dir); err != nil || statErr != nil {
		t.Logf("go-rpmdb's testdata not found (%v, %v): only Berth's fixtures are checked", err, statErr)
		return ""
	}
	return dir
}

// TestCheckRPMDatabaseReal: real rpm databases pass the checks, which
// count the packages the extractor finds in them.
func TestCheckRPMDatabaseReal(t *testing.T) {
	dbs := []string{"testdata/rpm-Packages_epoch", "../testdata/ubi8-rpmdb.sqlite"}
	if dir := goRPMDBTestdata(t); dir != "" {
		for _, d := range []string{
			"ubi8-s390x/Packages",    // UBI 8, big-endian
			"centos5-plain/Packages", // unsorted hash pages
			"centos6-devtools/Packages",
			"centos6-many/Packages",
			"centos6-plain/Packages",
			"centos7-devtools/Packages",
			"centos7-httpd24/Packages",
			"centos7-many/Packages",
			"centos7-plain/Packages",
			"centos7-python35/Packages",
			"centos8-modularitylabel/Packages",
			"libuuid/Packages",
			"sle15-bci/Packages.db", // NDB
			"fedora35/rpmdb.sqlite",
			"fedora35-plus-mongo/rpmdb.sqlite",
			"cbl-mariner-2.0/rpmdb.sqlite",
		} {
			dbs = append(dbs, filepath.Join(dir, d))
		}
	}
	for _, db := range dbs {
		t.Run(db, func(t *testing.T) {
			n, err := checkFile(t, db)
			if err != nil {
				t.Fatalf("checkRPMDatabase: %v", err)
			}
			want, err := extractRPM(t, db, filepath.Base(db))
			if err != nil {
				t.Fatalf("extract: %v", err)
			}
			if n != want || n == 0 {
				t.Errorf("checkRPMDatabase counts %d packages, the extractor finds %d", n, want)
			}
		})
	}
}

// Offsets in testdata/rpm-Packages_epoch, a little-endian Berkeley DB
// hash file of 4096-byte pages: page 1 is a hash page of two key/value
// pairs, the second value (index entry 3) an item on its page pointing at
// overflow page 4, which holds the package header.
const (
	epochPage     = 4096
	epochHashPage = 1 * epochPage
	epochEntry3   = epochHashPage + bdbPageHeader + 3*2 // offset of the value item
	epochItem     = epochHashPage + 4069                // the item: type, pad, page number, length
	epochOverflow = 4 * epochPage
	epochHeader   = epochOverflow + bdbPageHeader // the rpm header
	epochHeaderN  = 2124
)

// epochBDB returns the fixture's bytes, changed by mutate.
func epochBDB(t *testing.T, mutate func(db []byte)) []byte {
	t.Helper()
	db, err := os.ReadFile("testdata/rpm-Packages_epoch")
	if err != nil {
		t.Fatal(err)
	}
	// The offsets above are those of this file.
	le := binary.LittleEndian
	if len(db) != 5*epochPage || le.Uint16(db[epochEntry3:]) != 4069 || db[epochItem] != bdbHOffPage ||
		le.Uint32(db[epochItem+4:]) != 4 || db[epochOverflow+25] != bdbOverflowType || le.Uint16(db[epochOverflow+22:]) != epochHeaderN {
		t.Fatal("testdata/rpm-Packages_epoch is not the file the test knows")
	}
	if mutate != nil {
		mutate(db)
	}
	return db
}

// hostileBDBCrashes are Berkeley DB files on which go-rpmdb panics in a
// goroutine it starts: a panic no recover in Berth can catch.
var hostileBDBCrashes = map[string]struct {
	mutate func(db []byte)
	want   string
}{
	"value offset 0xffff": {func(db []byte) { binary.LittleEndian.PutUint16(db[epochEntry3:], 0xffff) },
		"item at offset 65535, past its 4096 bytes"},
	"entry count wrapping around": {func(db []byte) { binary.LittleEndian.PutUint16(db[epochHashPage+20:], 0xfffe) },
		"hash page 1: 65534 entries"},
	"item running past its page": {func(db []byte) {
		binary.LittleEndian.PutUint16(db[epochEntry3:], 4090)
		db[epochHashPage+4090] = bdbHOffPage
	}, "item at offset 4090 runs past its 4096 bytes"},
	"overflow data longer than its page": {func(db []byte) { binary.LittleEndian.PutUint16(db[epochOverflow+22:], 4090) },
		"overflow page 4: 4090 bytes of data"},
}

const hostileRPMChildEnv = "BERTH_TEST_HOSTILE_RPM_CHILD"

// TestIndexLayerHostileBDBProcessSurvives indexes, in a child process,
// layers whose var/lib/rpm/Packages would panic inside go-rpmdb's own
// goroutine (killing the process: a scan server would crash-loop on the
// job). The child must survive and report the database unread.
func TestIndexLayerHostileBDBProcessSurvives(t *testing.T) {
	if name := os.Getenv(hostileRPMChildEnv); name != "" {
		c := hostileBDBCrashes[name]
		blob := gz(t, buildTar(t, file("etc/os-release", ubiOSRelease), entry{name: "var/lib/rpm/Packages", body: epochBDB(t, c.mutate), mode: 0o644}))
		res, err := IndexLayer(context.Background(), "sha256:hostile", bytes.NewReader(blob), mtGzip, int64(len(blob)), Limits{})
		if err != nil {
			t.Fatal(err)
		}
		out, err := json.Marshal(res)
		if err != nil {
			t.Fatal(err)
		}
		os.Stdout.Write(append(append([]byte("\nRESULT "), out...), '\n'))
		return
	}
	for name, c := range hostileBDBCrashes {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestIndexLayerHostileBDBProcessSurvives$", "-test.count=1")
			cmd.Env = append(os.Environ(), hostileRPMChildEnv+"="+name)
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("the indexing process died (%v):\n%s", err, firstLines(out, 20))
			}
			_, line, ok := bytes.Cut(out, []byte("\nRESULT "))
			if !ok {
				t.Fatalf("no result from the child:\n%s", out)
			}
			line, _, _ = bytes.Cut(line, []byte("\n"))
			var res LayerResult
			if err := json.Unmarshal(line, &res); err != nil {
				t.Fatal(err)
			}
			wantUnreadRPM(t, res, "var/lib/rpm/Packages", c.want)
		})
	}
}

// wantUnreadRPM checks that the layer is indexed with the rpm database at
// path reported unread because of want, and no rpm packages.
func wantUnreadRPM(t *testing.T, res LayerResult, path, want string) {
	t.Helper()
	if res.Status != StatusIndexed {
		t.Fatalf("Status = %q (%s), want indexed", res.Status, res.Reason)
	}
	for _, p := range res.Packages {
		if p.Kind == KindRPM {
			t.Errorf("rpm package %+v from a refused database", p)
		}
	}
	if len(res.Unread) != 1 || res.Unread[0].Path != path ||
		!strings.Contains(res.Unread[0].Reason, "not an rpm database this scanner reads") || !strings.Contains(res.Unread[0].Reason, want) {
		t.Errorf("Unread = %+v, want %s unread: %q", res.Unread, path, want)
	}
}
