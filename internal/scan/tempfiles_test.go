package scan_test

import (
	"context"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
)

// tempLeftovers plants, in a temporary directory made os.TempDir(), what
// a scan or a vulnerability database upload killed midway leaves there
// (an hour old and more: gone), what one under way holds (kept), and
// entries of other names or kinds, symbolic links among them (kept, and
// what they point at too). It returns the temporary directory and the
// paths meant to go and to stay.
func tempLeftovers(t *testing.T) (tmp string, gone, kept []string) {
	t.Helper()
	tmp, outside := t.TempDir(), t.TempDir()
	t.Setenv("TMPDIR", tmp)
	if os.TempDir() != tmp {
		t.Skipf("os.TempDir() does not follow TMPDIR here (%s)", os.TempDir())
	}
	old := time.Now().Add(-2 * time.Hour)
	file := func(p string, at time.Time) string {
		t.Helper()
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte("spooled"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
		return p
	}
	// dir makes a spool directory of the indexer's (a file at a path
	// inside it, as spool makes), the file written at fileAt.
	dir := func(root string, at, fileAt time.Time) string {
		t.Helper()
		file(filepath.Join(root, "var", "lib", "rpm", "Packages"), fileAt)
		for _, d := range []string{filepath.Join(root, "var", "lib", "rpm"), filepath.Join(root, "var", "lib"), filepath.Join(root, "var"), root} {
			if err := os.Chtimes(d, at, at); err != nil {
				t.Fatal(err)
			}
		}
		return root
	}
	link := func(name, target string) string {
		t.Helper()
		p := filepath.Join(tmp, name)
		if err := os.Symlink(target, p); err != nil {
			t.Fatal(err)
		}
		return p
	}
	gone = []string{
		dir(filepath.Join(tmp, "berth-index-1234567"), old, old),
		dir(filepath.Join(tmp, "berth-index-42"), old, old),
		file(filepath.Join(tmp, "berth-vulndb-998877.zip"), old),
	}
	elsewhere := dir(filepath.Join(outside, "berth-index-5"), old, old) // not in the temporary directory
	oldFile := file(filepath.Join(outside, "berth-vulndb-6.zip"), old)
	kept = []string{
		dir(filepath.Join(tmp, "berth-index-7654321"), time.Now(), time.Now()), // a scan under way
		dir(filepath.Join(tmp, "berth-index-31"), old, time.Now()),             // its file still written
		file(filepath.Join(tmp, "berth-vulndb-11.zip"), time.Now()),
		file(filepath.Join(tmp, "berth-index-77"), old),        // not a directory
		dir(filepath.Join(tmp, "berth-index-notes"), old, old), // not a name MkdirTemp makes
		dir(filepath.Join(tmp, "berth-indexer-1"), old, old),
		file(filepath.Join(tmp, "berth-vulndb-12.zip.part"), old),
		file(filepath.Join(tmp, "berth-vulndb-13.json"), old),
		file(filepath.Join(tmp, "other.zip"), old),
		link("berth-index-88", elsewhere),
		link("berth-vulndb-14.zip", oldFile),
		elsewhere, oldFile,
	}
	return tmp, gone, kept
}

func checkLeftovers(t *testing.T, gone, kept []string) {
	t.Helper()
	for _, p := range gone {
		if _, err := os.Lstat(p); !os.IsNotExist(err) {
			t.Errorf("%s: still there (%v)", filepath.Base(p), err)
		}
	}
	for _, p := range kept {
		if _, err := os.Lstat(p); err != nil {
			t.Errorf("%s: removed (%v)", p, err)
		}
	}
	if t.Failed() {
		t.FailNow()
	}
}

// TestScanStartRemovesTempLeftovers: a scan killed midway leaves the
// indexer's spool directory (berth-index-*: a spooled RPM database or
// large file) in the temporary directory, and a vulnerability database
// upload killed midway its spooled zip (berth-vulndb-*.zip), which only
// the killed process's deferred removal would have taken. The scan
// service removes those an hour old when it starts; fresh ones, and
// entries of other names or kinds, stay.
func TestScanStartRemovesTempLeftovers(t *testing.T) {
	_, gone, kept := tempLeftovers(t)
	scan.New(scan.Stores{}, nil, scan.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	checkLeftovers(t, gone, kept)
}

// TestScanJobsRemoveTempLeftovers: the scanner's jobs remove them too,
// hourly: a scan killed midway leaves its spool younger than an hour
// when the process starts again.
func TestScanJobsRemoveTempLeftovers(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	_, gone, kept := tempLeftovers(t)
	e.push("acme/alp", "1", alpineLayer(t))
	e.drain()
	for _, p := range gone {
		if _, err := os.Lstat(p); err != nil {
			t.Fatalf("%s removed before the hour since the last removal was up (%v)", p, err)
		}
	}
	scan.ForgetTempSweep(e.svc) // an hour later
	e.push("acme/alp", "2", alpineLayer(t), layer(t, map[string]string{"app/x": "y"}))
	e.drain()
	checkLeftovers(t, gone, kept)
}

// TestUpdaterRemovesTempLeftovers: the scheduled vulnerability database
// updates remove them too, as they run (at their start, then hourly).
func TestUpdaterRemovesTempLeftovers(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	_, gone, kept := tempLeftovers(t)
	srv := newOSVServer(t)
	f := scan.NewFetcher(e.db.VulnDB(), scan.FetchOptions{BaseURL: srv.URL, StateDir: t.TempDir()})
	u := scan.NewUpdater(e.db.VulnDB(), e.db.Jobs(), f, scan.UpdaterOptions{Every: time.Hour, Tick: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); u.Run(ctx) }()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Lstat(gone[0]); os.IsNotExist(err) || time.Now().After(deadline) {
			break
		}
	}
	cancel()
	<-done
	checkLeftovers(t, gone, kept)
}
