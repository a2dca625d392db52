package meta_test

import (
	"context"
	"encoding/json"
	"slices"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestReplaceCPEMapping: a mapping replaces the stored one in one
// transaction with the job that re-matches the images of the content sets
// that changed, and moves the database version scans compare; the same
// mapping again changes nothing and queues nothing.
func TestReplaceCPEMapping(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			if _, ok, err := db.VulnDB().CPEMappingState(ctx); ok || err != nil {
				t.Fatalf("state before any import: %v %v", ok, err)
			}
			v0, err := db.VulnDB().VulnDBVersion(ctx)
			if err != nil {
				t.Fatal(err)
			}
			remaps := func() [][]string {
				t.Helper()
				jobs, err := db.Jobs().Jobs(ctx, meta.ScanQueue, "", 100)
				if err != nil {
					t.Fatal(err)
				}
				var out [][]string
				for _, j := range jobs {
					var rj meta.RemapJob
					if err := json.Unmarshal(j.Payload, &rj); err != nil || rj.Kind != meta.ScanJobRemap {
						t.Fatalf("job %s: %v", j.Payload, err)
					}
					out = append(out, rj.ContentSets)
				}
				return out
			}
			first := map[string][]string{
				"a-rpms": {"cpe:/o:redhat:enterprise_linux:8::baseos", "cpe:/o:redhat:enterprise_linux:8::baseos", ""},
				"b-rpms": {"cpe:/a:redhat:enterprise_linux:8::appstream"},
				"":       {"cpe:/a:redhat:x"},
				"c-rpms": {},
			}
			changed, err := db.VulnDB().ReplaceCPEMapping(ctx, first)
			if err != nil || !slices.Equal(changed, []string{"a-rpms", "b-rpms"}) {
				t.Fatalf("first import changed %v, %v", changed, err)
			}
			if got := remaps(); len(got) != 1 || !slices.Equal(got[0], []string{"a-rpms", "b-rpms"}) {
				t.Fatalf("remap jobs: %v", got)
			}
			v1, _ := db.VulnDB().VulnDBVersion(ctx)
			if v1 <= v0 {
				t.Fatalf("version did not move: %d -> %d", v0, v1)
			}
			st, ok, err := db.VulnDB().CPEMappingState(ctx)
			if err != nil || !ok || st.ContentSets != 2 {
				t.Fatalf("state: %+v %v %v", st, ok, err)
			}

			if changed, err := db.VulnDB().ReplaceCPEMapping(ctx, first); err != nil || len(changed) != 0 {
				t.Fatalf("same mapping changed %v, %v", changed, err)
			}
			if got := remaps(); len(got) != 1 {
				t.Fatalf("the same mapping queued a remap: %v", got)
			}
			if v, _ := db.VulnDB().VulnDBVersion(ctx); v != v1 {
				t.Fatalf("the same mapping moved the version")
			}

			changed, err = db.VulnDB().ReplaceCPEMapping(ctx, map[string][]string{
				"a-rpms": {"cpe:/o:redhat:enterprise_linux:8::baseos"},
				"b-rpms": {"cpe:/a:redhat:enterprise_linux:8::appstream", "cpe:/a:redhat:rhel_eus:8.6::appstream"},
				"d-rpms": {"cpe:/a:redhat:enterprise_linux:8::crb"},
			})
			if err != nil || !slices.Equal(changed, []string{"b-rpms", "d-rpms"}) {
				t.Fatalf("second import changed %v, %v", changed, err)
			}
			got, err := db.Scans().CPEsOf(ctx, []string{"a-rpms", "b-rpms", "c-rpms", "d-rpms"})
			if err != nil || len(got) != 3 || len(got["b-rpms"]) != 2 {
				t.Fatalf("mapping: %v %v", got, err)
			}
		})
	}
}
