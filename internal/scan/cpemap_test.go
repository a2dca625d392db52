package scan_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
)

// repositoryToCPE is a trimmed repository-to-cpe.json in Red Hat's shape.
const repositoryToCPE = `{"data": {
	"rhel-8-for-x86_64-baseos-rpms": {"cpes": ["cpe:/o:redhat:enterprise_linux:8::baseos", "cpe:/o:redhat:rhel:8.3::baseos"]},
	"rhel-8-for-x86_64-appstream-rpms": {"cpes": ["cpe:/a:redhat:enterprise_linux:8::appstream"]},
	"rhel-8-for-x86_64-nothing-rpms": {"cpes": []}
}}`

func TestImportCPEMapping(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			n, err := scan.ImportCPEMapping(ctx, db.VulnDB(), strings.NewReader(repositoryToCPE))
			if err != nil || n != 2 {
				t.Fatalf("import: %d, %v; want 2 content sets", n, err)
			}
			got, err := db.Scans().CPEsOf(ctx, []string{"rhel-8-for-x86_64-baseos-rpms", "rhel-8-for-x86_64-appstream-rpms", "unknown-rpms"})
			if err != nil {
				t.Fatal(err)
			}
			want := map[string][]string{
				"rhel-8-for-x86_64-baseos-rpms":    {"cpe:/o:redhat:enterprise_linux:8::baseos", "cpe:/o:redhat:rhel:8.3::baseos"},
				"rhel-8-for-x86_64-appstream-rpms": {"cpe:/a:redhat:enterprise_linux:8::appstream"},
			}
			if !reflect.DeepEqual(got, want) {
				t.Fatalf("CPEs: %v, want %v", got, want)
			}
			// A new file replaces the mapping as a whole.
			n, err = scan.ImportCPEMapping(ctx, db.VulnDB(), strings.NewReader(`{"data": {"rhel-9-for-x86_64-baseos-rpms": {"cpes": ["cpe:/o:redhat:enterprise_linux:9::baseos"]}}}`))
			if err != nil || n != 1 {
				t.Fatalf("second import: %d, %v", n, err)
			}
			if got, _ := db.Scans().CPEsOf(ctx, []string{"rhel-8-for-x86_64-baseos-rpms", "rhel-9-for-x86_64-baseos-rpms"}); len(got) != 1 || got["rhel-9-for-x86_64-baseos-rpms"] == nil {
				t.Fatalf("after replacement: %v", got)
			}
			st, ok, err := db.VulnDB().CPEMappingState(ctx)
			if err != nil || !ok || st.ContentSets != 1 {
				t.Fatalf("state: %+v %v %v", st, ok, err)
			}
			for _, bad := range []string{``, `[]`, `{"data": 3}`, `{"other": {}}`, `{"data": {"x": {"cpes": "no"}}}`} {
				if _, err := scan.ImportCPEMapping(ctx, db.VulnDB(), strings.NewReader(bad)); !errors.Is(err, scan.ErrCPEMapping) {
					t.Errorf("import %q: %v, want ErrCPEMapping", bad, err)
				}
			}
			if got, _ := db.Scans().CPEsOf(ctx, []string{"rhel-9-for-x86_64-baseos-rpms"}); len(got) != 1 {
				t.Fatalf("a refused file changed the mapping: %v", got)
			}
		})
	}
}

// TestImportPathFindsCPEMapping: `berth admin vulndb import` takes
// repository-to-cpe.json as it takes OSV files: named on its own (under
// any name), or in a directory beside the all.zip files.
func TestImportPathFindsCPEMapping(t *testing.T) {
	ctx := context.Background()
	db := metatest.Open(t, "sqlite")
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	rec := `{"id":"RHSA-2022:7106","modified":"2026-01-01T00:00:00Z","affected":[{"package":{"ecosystem":"Red Hat:enterprise_linux:8::baseos","name":"zlib"},
		"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"0:1.2.11-19.el8_6"}]}]}]}`
	write("bundle/Red Hat/RHSA-2022_7106.json", rec)
	write("bundle/repository-to-cpe.json", repositoryToCPE)

	im := scan.NewImporter(db.VulnDB(), nil)
	if err := im.Path(ctx, filepath.Join(dir, "bundle")); err != nil {
		t.Fatal(err)
	}
	st, err := im.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Read != 1 || st.Applied != 1 || st.Rejected != 0 || st.ContentSets != 2 {
		t.Fatalf("directory import: %+v", st)
	}
	if got, _ := db.Scans().CPEsOf(ctx, []string{"rhel-8-for-x86_64-baseos-rpms"}); len(got) != 1 {
		t.Fatalf("mapping after the directory import: %v", got)
	}

	// Named on its own, under another name; an OSV file beside it is
	// still an OSV file.
	other := write("rh-cpes.json", `{"data": {"rhel-9-for-x86_64-baseos-rpms": {"cpes": ["cpe:/o:redhat:enterprise_linux:9::baseos"]}}}`)
	im = scan.NewImporter(db.VulnDB(), nil)
	for _, p := range []string{other, filepath.Join(dir, "bundle/Red Hat/RHSA-2022_7106.json")} {
		if err := im.Path(ctx, p); err != nil {
			t.Fatal(err)
		}
	}
	if st, err := im.Finish(ctx); err != nil || st.ContentSets != 1 || st.Read != 1 || st.Unchanged != 1 {
		t.Fatalf("file import: %+v %v", st, err)
	}
	if got, _ := db.Scans().CPEsOf(ctx, []string{"rhel-8-for-x86_64-baseos-rpms", "rhel-9-for-x86_64-baseos-rpms"}); len(got) != 1 || got["rhel-9-for-x86_64-baseos-rpms"] == nil {
		t.Fatalf("mapping after the file import: %v", got)
	}

	// A broken mapping is an error that names the file, and changes nothing.
	bad := write("broken.json", `{"data": {"x": {"cpes": 7}}}`)
	if err := scan.NewImporter(db.VulnDB(), nil).Path(ctx, bad); !errors.Is(err, scan.ErrCPEMapping) || !strings.Contains(err.Error(), "broken.json") {
		t.Fatalf("broken mapping: %v", err)
	}
	if got, _ := db.Scans().CPEsOf(ctx, []string{"rhel-9-for-x86_64-baseos-rpms"}); len(got) != 1 {
		t.Fatalf("a refused mapping changed the stored one: %v", got)
	}
}

func TestRedHatDataGap(t *testing.T) {
	rpm := []index.Package{{Kind: index.KindRPM, Name: "zlib", Version: "1.2.11-18.el8_5"}}
	imported := func(ecos ...string) func(string) (bool, error) {
		return func(e string) (bool, error) { return slices.Contains(ecos, e), nil }
	}
	baseos := "Red Hat:enterprise_linux:8::baseos"
	for _, tc := range []struct {
		name string
		rep  scan.Report
		has  func(string) (bool, error)
		want string // a part of the reason; "" for none
	}{
		{"not red hat", scan.Report{Ecosystem: "Debian:12", Packages: rpm}, imported(), ""},
		{"no rpms", scan.Report{Ecosystem: "Red Hat", ContentSets: []string{"a-rpms"}}, imported(), ""},
		{"mapped and imported", scan.Report{Ecosystem: "Red Hat", Packages: rpm, ContentSets: []string{"a-rpms"},
			CPEs: []string{"cpe:/o:redhat:enterprise_linux:8::baseos"}}, imported(baseos), ""},
		{"mapped, other releases imported", scan.Report{Ecosystem: "Red Hat", Packages: rpm, ContentSets: []string{"a-rpms"},
			CPEs: []string{"cpe:/o:redhat:enterprise_linux:8::baseos"}}, imported("Red Hat:enterprise_linux:9::baseos"), "no advisories imported for " + baseos},
		{"not mapped", scan.Report{Ecosystem: "Red Hat", Packages: rpm, ContentSets: []string{"a-rpms"}}, imported(baseos), "a-rpms) is in Red Hat's content set mapping"},
		{"no content sets", scan.Report{Ecosystem: "Red Hat", Packages: rpm}, imported(baseos), "lists no content sets"},
		{"no content sets, bare advisories", scan.Report{Ecosystem: "Red Hat", Packages: rpm}, imported("Red Hat"), ""},
		{"content sets, no os-release", scan.Report{Packages: rpm, ContentSets: []string{"a-rpms"}}, imported(), "content set mapping"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := scan.RedHatDataGap(&tc.rep, tc.has)
			if err != nil || (tc.want == "") != (got == "") || !strings.Contains(got, tc.want) {
				t.Fatalf("gap %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
