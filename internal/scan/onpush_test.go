package scan_test

import (
	"context"
	"encoding/json"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/scan/index"
)

// TestScanOnPushSubscriber: the feed's scan subscriber queues one scan
// job per image manifest a push stores in a repository, with the job and
// ordering key the push transaction used to queue; a tag moved to a stored
// manifest, an index, and the SBOM the scanner generates queue none.
func TestScanOnPushSubscriber(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, index.Limits{})
			dgst, _ := e.push("acme/app", "v1", alpineLayer(t))
			if st, err := e.db.Scans().ManifestScan(ctx, dgst); err != nil || st.Status != meta.ScanQueued {
				t.Fatalf("after the push: %+v %v, want queued", st, err)
			}
			e.drain() // scans it and attaches its SBOM
			if again, _ := e.push("acme/app", "v2", alpineLayer(t)); again != dgst {
				t.Fatalf("the same image pushed again is %s, not %s", again, dgst)
			}
			e.push("acme/other", "v1", alpineLayer(t))
			idx := e.pushIndex("acme/app", "multi", dgst)
			e.queueScans()
			js, err := e.db.Jobs().Jobs(ctx, meta.ScanQueue, "", 100)
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]int{}
			for _, j := range js {
				var sj meta.ScanJob
				if err := json.Unmarshal(j.Payload, &sj); err != nil {
					t.Fatal(err)
				}
				if sj.Kind != meta.ScanJobManifest || j.OrderingKey != "manifest|"+sj.Digest {
					t.Fatalf("job %+v (payload %s)", j, j.Payload)
				}
				got[sj.Repository+"@"+sj.Digest]++
			}
			want := map[string]int{"acme/app@" + dgst: 1, "acme/other@" + dgst: 1}
			if len(got) != len(want) || got["acme/app@"+dgst] != 1 || got["acme/other@"+dgst] != 1 {
				t.Fatalf("scan jobs %v, want %v (none for the re-tag, the index %s or the SBOM)", got, want, idx)
			}
		})
	}
}
