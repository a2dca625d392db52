package scan_test

import (
	"archive/zip"
	"bytes"
	"context"
	"database/sql"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/scan"
)

// TestFetchWithoutItsEcosystem: a mirror that serves, as Debian's
// all.zip, an empty zip (a failed sync), a zip of no JSON, or another
// ecosystem's advisories fails the fetch: Debian's data keeps its update
// time (stale stays stale, for `berth vulns --max-data-age` and the
// reports), no other ecosystem is recorded as imported, and the download
// is not remembered (the next fetch asks again, not "unchanged").
func TestFetchWithoutItsEcosystem(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			dsn := metatest.DSN(t, dialect)
			db, err := meta.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			srv := newOSVServer(t)
			mod := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			srv.put("/Debian/all.zip", zipOf(t, debRecord("DEBIAN-CVE-2026-0100", modifiedBase, "zlib")), `"v1"`, mod)
			state := t.TempDir()
			f := scan.NewFetcher(db.VulnDB(), scan.FetchOptions{BaseURL: srv.URL, StateDir: state})
			if rs, err := f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"Debian"}}); err != nil || only(t, rs).Status != scan.FetchUpdated {
				t.Fatalf("first fetch: %+v %v", rs, err)
			}
			// The data was last updated 30 days ago.
			driver, month := "sqlite", time.Now().Add(-30*24*time.Hour).UnixMicro()
			if dialect == "postgres" {
				driver = "pgx"
			}
			raw, err := sql.Open(driver, dsn)
			if err != nil {
				t.Fatal(err)
			}
			defer raw.Close()
			if _, err := raw.ExecContext(ctx, "UPDATE vuln_sources SET updated_at = "+strconv.FormatInt(month, 10)); err != nil {
				t.Fatal(err)
			}
			before := debianSource(t, db)
			if time.Since(before.UpdatedAt) < 29*24*time.Hour {
				t.Fatalf("seeded: %+v", before)
			}

			// Alpine's, of more records than one batch applies: the
			// first batch, naming no Debian package, fails the file.
			var alpineRecs []string
			for i := range 600 {
				alpineRecs = append(alpineRecs, record("ALPINE-CVE-2026-"+strconv.Itoa(i), modifiedBase,
					`{"package":{"ecosystem":"Alpine:v3.19","name":"musl"},"versions":["0"]}`))
			}
			alpine := zipOf(t, alpineRecs...)
			for i, c := range []struct {
				name string
				body []byte
			}{
				{"an empty zip", zipNamed(t)},
				{"a zip of no JSON", zipNamed(t, "README.txt", "Debian/")},
				{"Alpine's all.zip", alpine},
			} {
				srv.put("/Debian/all.zip", c.body, `"bad`+strconv.Itoa(i)+`"`, mod.Add(time.Duration(i+1)*time.Hour))
				rs, err := f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"Debian"}})
				r := only(t, rs)
				if err == nil || r.Status != scan.FetchFailed || !strings.Contains(r.Error, "not Debian's all.zip") {
					t.Fatalf("%s: %+v %v", c.name, r, err)
				}
				if after := debianSource(t, db); !after.UpdatedAt.Equal(before.UpdatedAt) || after.Records != before.Records {
					t.Fatalf("%s: Debian's data was %+v, is %+v", c.name, before, after)
				}
				if srcs, _ := db.VulnDB().VulnSources(ctx); len(srcs) != 1 {
					t.Fatalf("%s: recorded as imported: %+v", c.name, srcs)
				}
				if got, err := db.VulnDB().VulnRecordsByID(ctx, []string{"ALPINE-CVE-2026-0", "ALPINE-CVE-2026-599"}); err != nil || len(got) != 0 {
					t.Fatalf("%s: applied %d of its records: %v", c.name, len(got), err)
				}
				t.Logf("%s: %s", c.name, r.Error)
				if b, err := os.ReadFile(filepath.Join(state, "osv-Debian.json")); err != nil || !strings.Contains(string(b), `"etag": "\"v1\""`) {
					t.Fatalf("%s: remembered %s %v", c.name, b, err)
				}
			}
			// A good file again: fetched and imported, the data current.
			srv.put("/Debian/all.zip", zipOf(t, debRecord("DEBIAN-CVE-2026-0100", modifiedBase, "zlib"), debRecord("DEBIAN-CVE-2026-0101", modifiedBase, "xz-utils")),
				`"v2"`, mod.Add(24*time.Hour))
			if rs, err := f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"Debian"}}); err != nil || only(t, rs).Status != scan.FetchUpdated {
				t.Fatalf("good again: %+v %v", rs, err)
			}
			if after := debianSource(t, db); time.Since(after.UpdatedAt) > time.Hour || after.Records != 2 {
				t.Fatalf("good again: %+v", after)
			}
		})
	}
}

func debianSource(t *testing.T, db *meta.DB) meta.VulnSource {
	t.Helper()
	srcs, err := db.VulnDB().VulnSources(context.Background())
	for _, s := range srcs {
		if s.Ecosystem == "Debian" {
			return s
		}
	}
	t.Fatalf("no Debian data: %+v %v", srcs, err)
	return meta.VulnSource{}
}

// zipNamed is a zip of empty entries of these names.
func zipNamed(t *testing.T, names ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for _, n := range names {
		if _, err := zw.Create(n); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
