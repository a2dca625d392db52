package scan_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/wire"
)

// TestScanFailedForGoodIsAnnounced: a scan whose last attempt fails (its
// layer blob is still not stored a day after the manifest was, as for a
// pull-through cache whose layers never came) is stored failed, and
// manifest_scanned announces it, with status failed and the reason, in
// the repository it was pushed to: receivers and gates waiting for the
// scan hear of it.
func TestScanFailedForGoodIsAnnounced(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	l := layer(t, map[string]string{"README": "gone"})
	ld, _ := l.Digest()
	dgst, _ := e.push("acme/app", "1.0", l)
	ctx := context.Background()
	if err := e.driver.Delete(ctx, storage.BlobPath(mustDigest(t, ld.String()))); err != nil {
		t.Fatal(err)
	}
	j, ok, err := e.db.Jobs().ClaimJob(ctx, meta.ScanQueue, "test", time.Minute)
	if err != nil || !ok {
		t.Fatalf("claim the scan job: %v %v", ok, err)
	}
	j.MaxAttempts = 1 // this attempt is the last
	stores := wire.ScanStores(e.db)
	stores.Manifests = oldManifests{Manifests: stores.Manifests, age: 25 * time.Hour}
	if err := quietScanner(e, stores).Handle(ctx, j); err == nil {
		t.Fatal("the scan of an image without its layer succeeded")
	}
	if st, err := e.db.Scans().ManifestScan(ctx, dgst); err != nil || st.Status != meta.ScanFailed {
		t.Fatalf("scan %+v, %v; want failed", st, err)
	}
	scanned, _ := e.events(0, meta.EventManifestScanned)
	if len(scanned) != 1 {
		t.Fatalf("%d manifest_scanned events after the scan failed for good, want 1", len(scanned))
	}
	ev := scanned[0]
	reason, _ := ev["reason"].(string)
	if ev["status"] != meta.ScanFailed || ev["digest"] != dgst || ev["_repository"] != "acme/app" || !strings.Contains(reason, ld.String()) {
		t.Errorf("manifest_scanned %v; want status failed, the digest, acme/app, a reason naming the layer", ev)
	}
	if tags, _ := ev["tags"].([]any); len(tags) != 1 || tags[0] != "1.0" {
		t.Errorf("manifest_scanned tags %v, want [1.0]", ev["tags"])
	}
}
