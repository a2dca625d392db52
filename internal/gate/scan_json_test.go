package gate

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"
)

// TestScanCountsAreWrittenAsThePolicyReadsThem: an evaluation's scan
// counts (the candidates API, promotion events) are written under the
// names a policy reads them by and docs/gates.md gives (counts.critical,
// ...), not Go's field names (Critical).
func TestScanCountsAreWrittenAsThePolicyReadsThem(t *testing.T) {
	b, err := json.Marshal(ScanSummary{Status: "scanned", Counts: Severities{Critical: 2, Unknown: 1}, Fixable: Severities{High: 3}})
	if err != nil {
		t.Fatal(err)
	}
	var got struct {
		Counts, Fixable map[string]int64
	}
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	typ := reflect.TypeFor[Severities]()
	for i := range typ.NumField() {
		name := typ.Field(i).Tag.Get("cel")
		if _, ok := got.Counts[name]; !ok {
			t.Errorf("%s: counts has no %q", b, name)
		}
	}
	if got.Counts["critical"] != 2 || got.Counts["unknown"] != 1 || got.Fixable["high"] != 3 || strings.Contains(string(b), "Critical") {
		t.Errorf("written as %s", b)
	}
}
