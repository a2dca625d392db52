package scan_test

import (
	"archive/zip"
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
)

// zipFiles is a zip of the files (name → content).
func zipFiles(t *testing.T, files map[string]string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for name, body := range files {
		w, err := zw.Create(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write([]byte(body)); err != nil {
			t.Fatal(err)
		}
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// javaPythonLayer holds a Maven jar (org.example:lib 1.0.0) and a Python
// package (foo 1.0.0).
func javaPythonLayer(t *testing.T) v1.Layer {
	return layer(t, map[string]string{
		"opt/app/lib-1.0.0.jar": string(zipFiles(t, map[string]string{
			"META-INF/maven/org.example/lib/pom.properties": "groupId=org.example\nartifactId=lib\nversion=1.0.0\n",
		})),
		"usr/lib/python3.12/site-packages/foo-1.0.0.dist-info/METADATA": "Metadata-Version: 2.1\nName: foo\nVersion: 1.0.0\n",
	})
}

// ghsaPyPIMaven is one advisory naming a PyPI and a Maven package, as
// GHSA records in PyPI's all.zip do.
var ghsaPyPIMaven = record("GHSA-test-pypi-mavn", modifiedBase,
	`{"package":{"ecosystem":"PyPI","name":"foo"},"versions":["1.0.0"]}`,
	`{"package":{"ecosystem":"Maven","name":"org.example:lib"},"versions":["1.0.0"]}`)

// TestImportCoversOnlyItsEcosystem: an import records as imported only
// the ecosystem it holds in full (a fetch of PyPI, PyPI/all.zip), not the
// others its records name: with PyPI's file imported, an image with a
// Maven jar is not complete, Maven's data is missing, and the start
// warning names it. Loose JSON files and zips named otherwise record
// nothing. The records are matched all the same.
func TestImportCoversOnlyItsEcosystem(t *testing.T) {
	pypiZip := func(t *testing.T) []byte {
		return zipFiles(t, map[string]string{"GHSA-test-pypi-mavn.json": ghsaPyPIMaven})
	}
	importPath := func(t *testing.T, e *env, path string) {
		t.Helper()
		im := scan.NewImporter(e.db.VulnDB(), nil)
		if err := im.Path(context.Background(), path); err != nil {
			t.Fatal(err)
		}
		if _, err := im.Finish(context.Background()); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		name     string
		imp      func(t *testing.T, e *env)
		wantPyPI bool // PyPI recorded as imported
	}{
		{"fetch PyPI", func(t *testing.T, e *env) {
			srv := newOSVServer(t)
			srv.put("/PyPI/all.zip", pypiZip(t), `"v1"`, time.Now())
			f := scan.NewFetcher(e.db.VulnDB(), scan.FetchOptions{BaseURL: srv.URL})
			if rs, err := f.Fetch(context.Background(), scan.FetchRequest{Ecosystems: []string{"pypi"}}); err != nil ||
				only(t, rs).Import == nil || !slices.Equal(only(t, rs).Import.Covered, []string{"PyPI"}) {
				t.Fatalf("fetch: %+v %v", rs, err)
			}
		}, true},
		{"import directory with PyPI/all.zip", func(t *testing.T, e *env) {
			dir := t.TempDir()
			os.Mkdir(filepath.Join(dir, "PyPI"), 0o755)
			os.WriteFile(filepath.Join(dir, "PyPI", "all.zip"), pypiZip(t), 0o644)
			importPath(t, e, dir)
		}, true},
		{"import PyPI/all.zip", func(t *testing.T, e *env) {
			p := filepath.Join(t.TempDir(), "PyPI", "all.zip")
			os.Mkdir(filepath.Dir(p), 0o755)
			os.WriteFile(p, pypiZip(t), 0o644)
			importPath(t, e, p)
		}, true},
		{"import a zip named otherwise", func(t *testing.T, e *env) {
			p := filepath.Join(t.TempDir(), "Downloads", "all.zip")
			os.Mkdir(filepath.Dir(p), 0o755)
			os.WriteFile(p, pypiZip(t), 0o644)
			importPath(t, e, p)
		}, false},
		{"import a loose JSON file", func(t *testing.T, e *env) {
			p := filepath.Join(t.TempDir(), "PyPI", "GHSA-test-pypi-mavn.json")
			os.Mkdir(filepath.Dir(p), 0o755)
			os.WriteFile(p, []byte(ghsaPyPIMaven), 0o644)
			importPath(t, e, p)
		}, false},
		{"JSON in hand", func(t *testing.T, e *env) {
			if st := e.importLoose(ghsaPyPIMaven); st.Applied != 1 || len(st.Covered) != 0 || !slices.Equal(st.Ecosystems, []string{"Maven", "PyPI"}) {
				t.Fatalf("import: %+v", st)
			}
		}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			e := newEnv(t, "sqlite", index.Limits{})
			logs := e.logTo(0)
			dgst, _ := e.push("acme/app", "1", javaPythonLayer(t))
			e.drain()
			c.imp(t, e)
			e.drain()

			info := e.security("acme/app", dgst)
			cov := info.VulnerabilityData
			if info.Status != meta.ScanScanned || cov == nil {
				t.Fatalf("scan: %+v", info)
			}
			st := ecosystemStatus(cov)
			wantMissing := []string{"Maven", "PyPI"}
			if c.wantPyPI {
				wantMissing = []string{"Maven"}
			}
			if cov.Complete || !slices.Equal(cov.Missing, wantMissing) || st["Maven"] != scan.DataMissing {
				t.Fatalf("coverage complete=%v missing=%v %v, want Maven's data missing", cov.Complete, cov.Missing, st)
			}
			srcs, err := e.db.VulnDB().VulnSources(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, s := range srcs {
				names = append(names, s.Ecosystem)
			}
			want := []string(nil)
			if c.wantPyPI {
				want = []string{"PyPI"}
			}
			if !slices.Equal(names, want) {
				t.Fatalf("imported ecosystems %v, want %v", names, want)
			}

			// What was imported is matched all the same.
			for _, pkg := range []string{"org.example:lib", "foo"} {
				if f := feature(info, pkg); f == nil || !slices.Contains(vulnNames(f), "GHSA-test-pypi-mavn") {
					t.Errorf("%s: %+v, want GHSA-test-pypi-mavn", pkg, f)
				}
			}
			if err := e.svc.WarnIfNoData(context.Background()); err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(logs.String(), "no vulnerability data for ecosystems of stored images") || !strings.Contains(logs.String(), "Maven") {
				t.Errorf("start log: %s", logs)
			}
		})
	}
}
