package scan

import (
	"encoding/json"
	"reflect"
	"testing"

	"github.com/berth-dev/berth/internal/scan/index"
)

// TestDecodeReportWithin: within its budget, a stored report decodes to
// the report decodeReport gives, every field of it; past the budget, to
// none, having decoded no more than the budget and the one package past
// it.
func TestDecodeReportWithin(t *testing.T) {
	rep := Report{Ecosystem: "Red Hat", OSRelease: map[string]string{"ID": "rhel", "VERSION_ID": "8.6"}, Layers: []string{"sha256:a", "sha256:b"},
		Warnings: []string{"w"}, ContentSets: []string{"rhel-8-for-x86_64-baseos-rpms"}, CPEs: []string{"cpe:/o:redhat:enterprise_linux:8::baseos"},
		Gaps: []index.Gap{{Path: "var/lib/rpm/rpmdb.sqlite", Reason: "too large", Layer: "sha256:b"}}}
	for i := range 5 {
		rep.Packages = append(rep.Packages, index.Package{Kind: "rpm", Name: string(rune('a' + i)), Version: "1-1", SourceName: "src", Path: "var/lib/rpm/rpmdb.sqlite"})
	}
	b, err := json.Marshal(rep)
	if err != nil {
		t.Fatal(err)
	}
	want, err := decodeReport(b)
	if err != nil {
		t.Fatal(err)
	}
	for _, budget := range []int{5, 6, 1000} {
		got, n, err := decodeReportWithin(b, budget)
		if err != nil || n != 5 || !reflect.DeepEqual(got, want) {
			t.Errorf("budget %d: %+v, %d, %v; want %+v", budget, got, n, err, want)
		}
	}
	if got, n, err := decodeReportWithin(b, 4); err != nil || got != nil || n > 4 {
		t.Errorf("budget 4 for 5 packages: %+v, %d decoded, %v; want none, at most 4", got, n, err)
	}
	empty, _ := json.Marshal(Report{Layers: []string{}, Packages: []index.Package{}})
	if got, n, err := decodeReportWithin(empty, 0); err != nil || got == nil || n != 0 || got.Packages == nil {
		t.Errorf("no packages, budget 0: %+v, %d, %v; want the report", got, n, err)
	}
	if _, _, err := decodeReportWithin([]byte(`{"packages": 3}`), 10); err == nil {
		t.Error("a report whose packages are not a list decoded")
	}
}
