package scan_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/wire"
)

// oldManifests are the manifests as if each was stored age ago.
type oldManifests struct {
	scan.Manifests
	age time.Duration
}

func (o oldManifests) GetManifest(ctx context.Context, repo, tag string, d digest.Digest, withContent bool) (meta.Manifest, error) {
	m, err := o.Manifests.GetManifest(ctx, repo, tag, d, withContent)
	m.CreatedAt = m.CreatedAt.Add(-o.age)
	return m, err
}

// oldScans are the scan results as if each was stored age ago (the
// store's other methods, QueueScan among them, are meta's).
type oldScans struct {
	meta.Scans
	age time.Duration
}

func (o oldScans) ManifestScan(ctx context.Context, d string) (meta.ManifestScan, error) {
	st, err := o.Scans.ManifestScan(ctx, d)
	st.UpdatedAt = st.UpdatedAt.Add(-o.age)
	return st, err
}

func (o oldScans) RequeueFailedScan(ctx context.Context, repo, d string, age time.Duration) (bool, error) {
	return o.Scans.RequeueFailedScan(ctx, repo, d, age-o.age)
}

// downVulns is the advisory store during an outage: matching fails.
type downVulns struct{ scan.Vulns }

func (downVulns) VulnRecordsFor(context.Context, []meta.VulnKey) ([]meta.StoredVuln, error) {
	return nil, errors.New("database unreachable")
}

// lastAttempt claims the scan queue's next job and makes this attempt its
// last.
func (e *env) lastAttempt() meta.Job {
	e.t.Helper()
	j, ok, err := e.db.Jobs().ClaimJob(context.Background(), meta.ScanQueue, "test", time.Minute)
	if err != nil || !ok {
		e.t.Fatalf("claim a scan job: %v %v", ok, err)
	}
	j.Attempts = j.MaxAttempts
	return j
}

func (e *env) scanStatus(dgst string) meta.ManifestScan {
	e.t.Helper()
	st, err := e.db.Scans().ManifestScan(context.Background(), dgst)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

func (e *env) putBlob(l v1.Layer) {
	e.t.Helper()
	ld, _ := l.Digest()
	rc, err := l.Compressed()
	if err != nil {
		e.t.Fatal(err)
	}
	b, err := io.ReadAll(rc)
	rc.Close()
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.driver.PutContent(context.Background(), storage.BlobPath(mustDigest(e.t, ld.String())), b); err != nil {
		e.t.Fatal(err)
	}
}

func (e *env) deleteBlob(l v1.Layer) {
	e.t.Helper()
	ld, _ := l.Digest()
	if err := e.driver.Delete(context.Background(), storage.BlobPath(mustDigest(e.t, ld.String()))); err != nil {
		e.t.Fatal(err)
	}
}

func quietScanner(e *env, stores scan.Stores) *scan.Service {
	return scan.New(stores, e.driver, scan.Options{Host: e.host, Version: "test", Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
}

// TestMissingLayerIsDeferred: a pull-through cache stores a manifest
// before its layers (or never gets them, for a client that had them).
// The scan whose layer blob is not stored is deferred, even on its last
// attempt: the image stays queued, nothing announces it failed; once the
// blob is stored, the same job scans it. A scanned report survives a
// later scan whose last attempt fails (an outage): its packages and
// vulnerabilities stay, for re-matching. A manifest stored more than a
// day ago whose layer still is not there fails, saying why; a security
// request re-queues it after a cool-down, and it is scanned once its
// layer came.
func TestMissingLayerIsDeferred(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, index.Limits{})
			ctx := context.Background()
			e.importJSON(debianRecords[0]) // affects the fixture's zlib
			e.drain()                      // its re-match job
			l := debianLayer(t)
			dgst, lds := e.push("acme/app", "1", l)
			e.deleteBlob(l)

			j := e.lastAttempt()
			err := e.svc.Handle(ctx, j)
			if err == nil || !strings.Contains(err.Error(), "deferred until") || !strings.Contains(err.Error(), lds[0]) {
				t.Fatalf("the last attempt without the layer: %v; want deferred, naming the layer", err)
			}
			if st := e.scanStatus(dgst); st.Status != meta.ScanQueued {
				t.Fatalf("scan %s (%s) while the layer is not stored; want queued", st.Status, st.Reason)
			}
			if evs, _ := e.events(0, meta.EventManifestScanned); len(evs) != 0 {
				t.Fatalf("manifest_scanned while the layer is not stored: %v", evs)
			}

			e.putBlob(l)
			if err := e.svc.Handle(ctx, j); err != nil {
				t.Fatalf("the job run again once the layer is stored: %v", err)
			}
			if st := e.scanStatus(dgst); st.Status != meta.ScanScanned {
				t.Fatalf("scan %s (%s) with the layer stored; want scanned", st.Status, st.Reason)
			}
			if err := e.db.Jobs().CompleteJob(ctx, j.ID, "test"); err != nil {
				t.Fatal(err)
			}

			// A scan of the scanned image fails on its last attempt: the
			// report is kept, and with it what re-matching reads.
			stores := wire.ScanStores(e.db)
			stores.Vulns = downVulns{stores.Vulns}
			down := quietScanner(e, stores)
			if err := e.db.Scans().EnqueueScan(ctx, "acme/app", dgst); err != nil {
				t.Fatal(err)
			}
			j = e.lastAttempt()
			if err := down.Handle(ctx, j); err == nil {
				t.Fatal("a scan during the outage succeeded")
			}
			if err := e.db.Jobs().KillJob(ctx, j.ID, "test", "outage"); err != nil {
				t.Fatal(err)
			}
			if st := e.scanStatus(dgst); st.Status != meta.ScanScanned || len(st.Report) == 0 {
				t.Fatalf("scan %s (%s) after a failed rescan; want the scanned report kept", st.Status, st.Reason)
			}
			if vs, err := e.db.Scans().ManifestVulns(ctx, dgst); err != nil || len(vs) == 0 {
				t.Fatalf("vulnerabilities after a failed rescan: %v %v; want kept", vs, err)
			}
			if ds, err := e.db.Scans().ManifestsInEcosystem(ctx, "Debian"); err != nil || !slices.Contains(ds, dgst) {
				t.Fatalf("manifests with Debian packages after a failed rescan: %v %v; want the image", ds, err)
			}
			if info, err := e.svc.Security(ctx, "acme/app", mustManifest(e, "acme/app", dgst), true); err != nil || info.Status != meta.ScanScanned || vulnCount(info) == 0 {
				t.Fatalf("security after a failed rescan: %+v %v", info, err)
			}

			// A manifest stored a day ago whose layer never came fails.
			l2 := layer(t, map[string]string{"README": "cached, its layer never pulled"})
			late, lds2 := e.push("acme/app", "2", l2)
			e.deleteBlob(l2)
			stores = wire.ScanStores(e.db)
			stores.Manifests = oldManifests{Manifests: stores.Manifests, age: 25 * time.Hour}
			j = e.lastAttempt()
			if err := quietScanner(e, stores).Handle(ctx, j); err == nil || strings.Contains(err.Error(), "deferred until") {
				t.Fatalf("the last attempt a day after: %v; want failed", err)
			}
			if err := e.db.Jobs().KillJob(ctx, j.ID, "test", "failed"); err != nil {
				t.Fatal(err)
			}
			st := e.scanStatus(late)
			if st.Status != meta.ScanFailed || !strings.Contains(st.Reason, lds2[0]) || !strings.Contains(st.Reason, "not stored") {
				t.Fatalf("scan %s (%s); want failed, naming the layer not stored", st.Status, st.Reason)
			}
			// Within the cool-down a security request answers failed.
			m := mustManifest(e, "acme/app", late)
			if info, err := e.svc.Security(ctx, "acme/app", m, true); err != nil || info.Status != meta.ScanFailed || info.Reason == "" {
				t.Fatalf("security just after the failure: %+v %v", info, err)
			}
			if pending := pendingScans(e); pending != 0 {
				t.Fatalf("%d scans queued by a request within the cool-down", pending)
			}
			// Past it, while the layer is still missing, a request queues
			// nothing: the scan would fail again, and announce it again.
			stores = wire.ScanStores(e.db)
			stores.Results = oldScans{Scans: e.db.Scans(), age: 15 * time.Minute}
			late15 := quietScanner(e, stores)
			if info, err := late15.Security(ctx, "acme/app", m, true); err != nil || info.Status != meta.ScanFailed {
				t.Fatalf("security past the cool-down, the layer still missing: %+v %v; want failed", info, err)
			}
			if pending := pendingScans(e); pending != 0 {
				t.Fatalf("%d scans queued while the layer is still missing; want 0", pending)
			}
			// Once the layer is stored, the requests queue the scan again:
			// of many at once, one.
			e.putBlob(l2)
			var wg sync.WaitGroup
			queued := make(chan string, 20)
			for range 20 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					info, err := late15.Security(ctx, "acme/app", m, true)
					if err != nil {
						t.Errorf("security past the cool-down: %v", err)
					}
					queued <- info.Status
				}()
			}
			wg.Wait()
			close(queued)
			for st := range queued {
				if st != meta.ScanQueued && st != meta.ScanFailed {
					t.Errorf("security past the cool-down, the layer stored: %s; want queued", st)
				}
			}
			if pending := pendingScans(e); pending != 1 {
				t.Fatalf("%d scans queued by 20 requests at once past the cool-down; want 1", pending)
			}
			if st := e.scanStatus(late); st.Status != meta.ScanQueued {
				t.Fatalf("scan %s after the request; want queued", st.Status)
			}
			e.drain()
			if st := e.scanStatus(late); st.Status != meta.ScanScanned {
				t.Fatalf("scan %s (%s) once the layer came; want scanned", st.Status, st.Reason)
			}
		})
	}
}

func mustManifest(e *env, repo, dgst string) meta.Manifest {
	e.t.Helper()
	m, err := e.db.Manifests().GetManifest(context.Background(), repo, "", mustDigest(e.t, dgst), true)
	if err != nil {
		e.t.Fatal(err)
	}
	return m
}

func pendingScans(e *env) int {
	e.t.Helper()
	js, err := e.db.Jobs().Jobs(context.Background(), meta.ScanQueue, "pending", 100)
	if err != nil {
		e.t.Fatal(err)
	}
	return len(js)
}

// TestForeignLayerNotStoredIsNoWait: a foreign (non-distributable)
// layer, such as a Windows base layer, is pushed without its bytes, which
// never arrive: the scan does not wait for them (a day, queued, before),
// and the image is not reported clean.
func TestForeignLayerNotStoredIsNoWait(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	base, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.DockerManifestSchema2),
		layer(t, map[string]string{"README": "app files"}))
	if err != nil {
		t.Fatal(err)
	}
	foreign := layer(t, map[string]string{"Files/Windows/notepad.exe": "MZ"})
	img, err := mutate.Append(base, mutate.Addendum{Layer: foreign,
		MediaType: types.DockerForeignLayer, URLs: []string{"https://mcr.example/blobs/x"}})
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(e.host+"/acme/win:1", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	e.deleteBlob(foreign) // however the client sent it: a foreign layer's bytes need not be here
	e.drain()             // fails the test on a deferral
	st := e.scanStatus(d.String())
	if st.Status == meta.ScanQueued || st.Status == meta.ScanFailed {
		t.Fatalf("scan %s (%s); want it done, the foreign layer unsupported", st.Status, st.Reason)
	}
	info, err := e.svc.Security(context.Background(), "acme/win", mustManifest(e, "acme/win", d.String()), true)
	if err != nil {
		t.Fatal(err)
	}
	if info.Status == meta.ScanScanned && (info.VulnerabilityData == nil || info.VulnerabilityData.Complete) {
		t.Fatalf("security %+v: the image is complete although a layer was never read", info)
	}
}
