package scan_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/scan"
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
			n, err := scan.ImportCPEMapping(ctx, db, strings.NewReader(repositoryToCPE))
			if err != nil || n != 2 {
				t.Fatalf("import: %d, %v; want 2 content sets", n, err)
			}
			got, err := db.CPEsOf(ctx, []string{"rhel-8-for-x86_64-baseos-rpms", "rhel-8-for-x86_64-appstream-rpms", "unknown-rpms"})
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
			n, err = scan.ImportCPEMapping(ctx, db, strings.NewReader(`{"data": {"rhel-9-for-x86_64-baseos-rpms": {"cpes": ["cpe:/o:redhat:enterprise_linux:9::baseos"]}}}`))
			if err != nil || n != 1 {
				t.Fatalf("second import: %d, %v", n, err)
			}
			if got, _ := db.CPEsOf(ctx, []string{"rhel-8-for-x86_64-baseos-rpms", "rhel-9-for-x86_64-baseos-rpms"}); len(got) != 1 || got["rhel-9-for-x86_64-baseos-rpms"] == nil {
				t.Fatalf("after replacement: %v", got)
			}
			st, ok, err := db.CPEMappingState(ctx)
			if err != nil || !ok || st.ContentSets != 1 {
				t.Fatalf("state: %+v %v %v", st, ok, err)
			}
			for _, bad := range []string{``, `[]`, `{"data": 3}`, `{"other": {}}`, `{"data": {"x": {"cpes": "no"}}}`} {
				if _, err := scan.ImportCPEMapping(ctx, db, strings.NewReader(bad)); !errors.Is(err, scan.ErrCPEMapping) {
					t.Errorf("import %q: %v, want ErrCPEMapping", bad, err)
				}
			}
			if got, _ := db.CPEsOf(ctx, []string{"rhel-9-for-x86_64-baseos-rpms"}); len(got) != 1 {
				t.Fatalf("a refused file changed the mapping: %v", got)
			}
		})
	}
}
