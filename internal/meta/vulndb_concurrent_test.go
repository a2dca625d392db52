package meta_test

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestConcurrentVulnImports: two imports of the same new advisories at
// once (a scheduled update and `berth admin vulndb fetch`, or two
// superuser uploads) both succeed, and the data is each record once, as
// imported.
func TestConcurrentVulnImports(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			vdb := db.VulnDB()
			for round := range 6 {
				var recs []meta.VulnRecord
				var ids []string
				for i := range 40 {
					id := fmt.Sprintf("DSA-%d-%d", round, i)
					ids = append(ids, id)
					recs = append(recs, meta.VulnRecord{ID: id, Modified: "2026-01-01T00:00:00Z", Data: []byte(`{"id":"` + id + `"}`),
						Keys: []meta.VulnKey{{Ecosystem: "Debian:12", Name: fmt.Sprintf("pkg%d", i)}, {Ecosystem: "Debian:13", Name: fmt.Sprintf("pkg%d", i)}}})
				}
				start := make(chan struct{})
				var wg sync.WaitGroup
				errs := make([]error, 2)
				applied := make([][]string, 2)
				for g := range 2 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						applied[g], errs[g] = vdb.ImportVulns(ctx, recs)
					}()
				}
				close(start)
				wg.Wait()
				for g, err := range errs {
					if err != nil {
						t.Fatalf("round %d: import %d of two at once failed: %v", round, g, err)
					}
				}
				// Each record is applied by one of the two imports; the
				// other finds it stored.
				both := slices.Sorted(slices.Values(append(slices.Clone(applied[0]), applied[1]...)))
				if !slices.Equal(both, slices.Sorted(slices.Values(ids))) {
					t.Fatalf("round %d: applied %v and %v, want each of %v once", round, applied[0], applied[1], ids)
				}
				got, err := vdb.VulnRecordsByID(ctx, ids)
				if err != nil || len(got) != len(ids) {
					t.Fatalf("round %d: stored %d records of %d: %v", round, len(got), len(ids), err)
				}
				for _, v := range got {
					if string(v.Data) != `{"id":"`+v.ID+`"}` {
						t.Fatalf("round %d: %s stored as %s", round, v.ID, v.Data)
					}
				}
				keys, err := vdb.VulnKeysOf(ctx, ids)
				if err != nil || len(keys) != 2*len(ids) {
					t.Fatalf("round %d: %d packages named, want %d: %v", round, len(keys), 2*len(ids), err)
				}
				found, err := vdb.VulnRecordsFor(ctx, []meta.VulnKey{{Ecosystem: "Debian:12", Name: "pkg7"}})
				if err != nil || len(found) != round+1 {
					t.Fatalf("round %d: pkg7 has %d advisories, want %d: %v", round, len(found), round+1, err)
				}
			}
		})
	}
}

// TestConcurrentCPEMappingImports: two imports of the same new content
// set mapping at once both succeed, and the mapping is stored once.
func TestConcurrentCPEMappingImports(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			vdb := metatest.Open(t, dialect).VulnDB()
			for round := range 6 {
				mapping := map[string][]string{}
				for i := range 40 {
					mapping[fmt.Sprintf("set-%d-%d", round, i)] = []string{fmt.Sprintf("cpe:/o:redhat:enterprise_linux:%d", round)}
				}
				start := make(chan struct{})
				var wg sync.WaitGroup
				errs := make([]error, 2)
				for g := range 2 {
					wg.Add(1)
					go func() {
						defer wg.Done()
						<-start
						_, errs[g] = vdb.ReplaceCPEMapping(ctx, mapping)
					}()
				}
				close(start)
				wg.Wait()
				for g, err := range errs {
					if err != nil {
						t.Fatalf("round %d: import %d of two at once failed: %v", round, g, err)
					}
				}
				st, ok, err := vdb.CPEMappingState(ctx)
				if err != nil || !ok || st.ContentSets != len(mapping) {
					t.Fatalf("round %d: content set mapping %+v %v %v, want %d sets", round, st, ok, err, len(mapping))
				}
			}
		})
	}
}
