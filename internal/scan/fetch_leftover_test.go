package scan_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
)

// TestFetchRemovesLeftoverDownloads: a fetch killed midway (SIGKILL, a
// power cut) leaves its spooled download, up to gigabytes, and perhaps
// the temporary file of its remembered state, in the state directory;
// the next fetch removes the fetcher's own leftovers once they are an
// hour old, and leaves fresh ones (another fetch's, under way) and files
// of other names alone.
func TestFetchRemovesLeftoverDownloads(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	ctx := context.Background()
	srv := newOSVServer(t)
	srv.put("/Debian/all.zip", zipOf(t, debRecord("DEBIAN-CVE-2026-0100", modifiedBase, "zlib")), `"v1"`, time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	state := filepath.Join(t.TempDir(), "vulndb")
	if err := os.MkdirAll(state, 0o700); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-2 * time.Hour)
	plant := func(name string, at time.Time) string {
		t.Helper()
		p := filepath.Join(state, name)
		if err := os.WriteFile(p, []byte("partial"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
		return p
	}
	gone := []string{
		plant("osv-Debian.1234567.download", old),
		plant("osv-Red%20Hat.42.download", old),
		plant("redhat-repository-to-cpe.99.download", old),
		plant("osv-Alpine.7.tmp", old),
	}
	kept := []string{
		plant("osv-Debian.7654321.download", time.Now()), // a fetch under way
		plant("osv-Debian.json", old),                    // remembered validators
		plant("notes.download", old),                     // not a name the fetcher makes
	}
	f := scan.NewFetcher(e.db.VulnDB(), scan.FetchOptions{BaseURL: srv.URL, StateDir: state})
	rs, err := f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"Debian"}})
	if r := only(t, rs); err != nil || r.Status != scan.FetchUpdated {
		t.Fatalf("fetch: %+v %v", r, err)
	}
	for _, p := range gone {
		if _, err := os.Stat(p); !os.IsNotExist(err) {
			t.Errorf("%s: still there after a fetch (%v)", filepath.Base(p), err)
		}
	}
	for _, p := range kept {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("%s: removed by a fetch (%v)", filepath.Base(p), err)
		}
	}
}
