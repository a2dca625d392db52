package meta_test

import (
	"context"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestOlderAdvisoryIsNotApplied: importing an older version of a stored
// advisory (an old offline bundle) changes nothing: the record is not
// rolled back, and a withdrawal stays.
func TestOlderAdvisoryIsNotApplied(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			key := meta.VulnKey{Ecosystem: "Debian:12", Name: "openssl"}
			rec := func(modified string, withdrawn bool, data string) meta.VulnRecord {
				return meta.VulnRecord{ID: "DSA-1", Modified: modified, Withdrawn: withdrawn, Data: []byte(data), Keys: []meta.VulnKey{key}}
			}
			if _, err := db.VulnDB().ImportVulns(ctx, []meta.VulnRecord{rec("2026-11-02T00:00:00Z", true, `{"v":"new, withdrawn"}`)}); err != nil {
				t.Fatal(err)
			}
			applied, err := db.VulnDB().ImportVulns(ctx, []meta.VulnRecord{rec("2026-10-01T00:00:00Z", false, `{"v":"old"}`)})
			if err != nil {
				t.Fatal(err)
			}
			if len(applied) != 0 {
				t.Fatalf("the older version was applied: %v", applied)
			}
			got, err := db.VulnDB().VulnRecordsByID(ctx, []string{"DSA-1"})
			if err != nil || len(got) != 1 || string(got[0].Data) != `{"v":"new, withdrawn"}` || !got[0].Withdrawn {
				t.Fatalf("stored: %+v %v", got, err)
			}
			// A newer one is.
			if applied, err := db.VulnDB().ImportVulns(ctx, []meta.VulnRecord{rec("2026-12-01T00:00:00Z", false, `{"v":"newer"}`)}); err != nil || len(applied) != 1 {
				t.Fatalf("newer: %v %v", applied, err)
			}
		})
	}
}
