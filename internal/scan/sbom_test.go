package scan_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/wire"
)

// runScanJob claims the next scan job and runs it with svc, returning the
// number of write transactions it made (SQLite counts them; ok is false
// on PostgreSQL) and the handler's error.
func runScanJob(t *testing.T, e *env, svc *scan.Service) (writes int64, ok bool, err error) {
	t.Helper()
	e.queueScans()
	ctx := context.Background()
	j, found, cerr := e.db.Jobs().ClaimJob(ctx, meta.ScanQueue, "test", time.Minute)
	if cerr != nil || !found {
		t.Fatalf("claim scan job: found %v, %v", found, cerr)
	}
	before, _, ok := e.db.WriterWait()
	err = svc.Handle(ctx, j)
	after, _, _ := e.db.WriterWait()
	if cerr := e.db.Jobs().CompleteJob(ctx, j.ID, "test"); cerr != nil {
		t.Fatal(cerr)
	}
	return after - before, ok, err
}

// sbomReferrers returns Berth's SBOMs of the manifest in repo.
func sbomReferrers(t *testing.T, e *env, repo, dgst string) []meta.Manifest {
	t.Helper()
	refs, err := e.db.Manifests().Referrers(context.Background(), repo, mustDigest(t, dgst), "application/spdx+json")
	if err != nil {
		t.Fatal(err)
	}
	var out []meta.Manifest
	for _, r := range refs {
		if r.Annotations[scan.SBOMAnnotation] != "" {
			out = append(out, r)
		}
	}
	return out
}

// wantScannedWithSBOM checks that the image is scanned and has one SBOM
// of Berth's, whose document a client can pull.
func wantScannedWithSBOM(t *testing.T, e *env, repo, dgst string) {
	t.Helper()
	if info := e.security(repo, dgst); info.Status != meta.ScanScanned {
		t.Fatalf("%s: status %q reason %q", repo, info.Status, info.Reason)
	}
	sboms := sbomReferrers(t, e, repo, dgst)
	if len(sboms) != 1 {
		t.Fatalf("%s: SBOM referrers %+v, want one", repo, sboms)
	}
	if doc := fetchSBOM(t, e.host, repo, sboms[0].Digest.String()); !strings.Contains(doc, `"spdxVersion": "SPDX-2.3"`) {
		t.Fatalf("%s: SBOM document %.300q", repo, doc)
	}
}

// TestSBOMCommitsWithScan: a new scan's result and its SBOM (both of its
// blobs and its manifest) are one write transaction, where they were three
// (the result, the document's blob, the manifest) and four with the
// shared empty config.
func TestSBOMCommitsWithScan(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, index.Limits{})
			dgst, _ := e.push("acme/one", "1", debianLayer(t))
			writes, counted, err := runScanJob(t, e, e.svc)
			if err != nil {
				t.Fatal(err)
			}
			if counted && writes != 1 {
				t.Fatalf("the scan made %d write transactions, want 1 (its result with its SBOM)", writes)
			}
			wantScannedWithSBOM(t, e, "acme/one", dgst)

			// A second image: the empty config is stored already, and the
			// scan is still one write.
			other, _ := e.push("acme/one", "2", debianLayer(t), layer(t, map[string]string{"app/x": "y"}))
			writes, counted, err = runScanJob(t, e, e.svc)
			if err != nil {
				t.Fatal(err)
			}
			if counted && writes != 1 {
				t.Fatalf("second scan: %d write transactions, want 1", writes)
			}
			if got := sbomReferrers(t, e, "acme/one", other); len(got) != 1 {
				t.Fatalf("second SBOM referrers: %+v", got)
			}
		})
	}
}

// failingSBOMManifests refuses the SBOM's push inside the scan's
// transaction (PutManifestIn), and also on its own when alone is set.
type failingSBOMManifests struct {
	scan.Manifests
	alone bool
}

var errRefused = errors.New("refused by the test")

func (f failingSBOMManifests) PutManifestIn(context.Context, meta.Tx, meta.PutManifest) error {
	return errRefused
}

func (f failingSBOMManifests) PutManifest(ctx context.Context, p meta.PutManifest) error {
	if f.alone {
		return errRefused
	}
	return f.Manifests.PutManifest(ctx, p)
}

// TestSBOMTransactionFails: when the SBOM cannot go in with the result,
// nothing of that transaction stays; the result is saved on its own and
// the SBOM attached after it, as before they shared a transaction. If the
// SBOM cannot be stored at all, the result is still saved and the job
// fails (it runs again).
func TestSBOMTransactionFails(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, index.Limits{})
			log := slog.New(slog.NewTextHandler(io.Discard, nil))
			newSvc := func(alone bool) *scan.Service {
				stores := wire.ScanStores(e.db)
				stores.Manifests = failingSBOMManifests{Manifests: stores.Manifests, alone: alone}
				return scan.New(stores, e.driver, scan.Options{SBOM: true, Host: e.host, Version: "test", Logger: log})
			}

			dgst, _ := e.push("acme/fallback", "1", debianLayer(t))
			if _, _, err := runScanJob(t, e, newSvc(false)); err != nil {
				t.Fatalf("scan with the SBOM stored on its own: %v", err)
			}
			wantScannedWithSBOM(t, e, "acme/fallback", dgst)

			other, _ := e.push("acme/fallback", "2", debianLayer(t), layer(t, map[string]string{"app/z": "z"}))
			_, _, err := runScanJob(t, e, newSvc(true))
			if !errors.Is(err, errRefused) {
				t.Fatalf("scan whose SBOM is refused: %v, want the refusal", err)
			}
			if info := e.security("acme/fallback", other); info.Status != meta.ScanScanned {
				t.Fatalf("refused SBOM: status %q reason %q (the result must be saved)", info.Status, info.Reason)
			}
			if got := sbomReferrers(t, e, "acme/fallback", other); len(got) != 0 {
				t.Fatalf("refused SBOM stored: %+v", got)
			}
		})
	}
}

// failingDocDriver refuses to write any blob but the shared empty config:
// an SBOM's placement fails after its first blob was placed.
type failingDocDriver struct{ storage.Driver }

func (d failingDocDriver) PutContent(ctx context.Context, p string, content []byte) error {
	if p != storage.BlobPath(oci.EmptyJSONDigest) {
		return errRefused
	}
	return d.Driver.PutContent(ctx, p, content)
}

// TestSBOMPlacementFailsPartway: a scan whose SBOM could place only some
// of its blobs fails (it runs again) and takes back what it placed, since
// nothing recorded it.
func TestSBOMPlacementFailsPartway(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := scan.New(wire.ScanStores(e.db), failingDocDriver{e.driver}, scan.Options{SBOM: true, Host: e.host, Version: "test", Logger: log})
	e.push("acme/partway", "1", debianLayer(t))
	if _, _, err := runScanJob(t, e, svc); !errors.Is(err, errRefused) {
		t.Fatalf("scan whose SBOM document cannot be written: %v, want the refusal", err)
	}
	if _, err := e.driver.Stat(context.Background(), storage.BlobPath(oci.EmptyJSONDigest)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("the empty config placed for the failed scan stays: %v", err)
	}
}
