package scan_test

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/berth-dev/berth/internal/wire"
	"io"
	"log/slog"
	"maps"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/feed"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/fs"
)

// env is a registry on one metadata store with a scanner whose jobs the
// test runs itself (drain), so that each step is observed in order.
type env struct {
	t      *testing.T
	db     *meta.DB
	driver storage.Driver
	svc    *scan.Service
	feed   *feed.Dispatcher // scan on push: the feed's scan subscriber
	host   string
}

func newEnv(t *testing.T, dialect string, limits index.Limits) *env {
	t.Helper()
	db := metatest.Open(t, dialect)
	onPush := feed.New(db.Outbox(), []feed.Subscriber{scan.NewOnPush(db.Scans())}, feed.Options{})
	if err := onPush.Subscribe(context.Background()); err != nil {
		t.Fatal(err)
	}
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	srv := httptest.NewServer(registry.New(wire.RegistryStores(db), driver, registry.Options{Policy: policy, Logger: log}))
	t.Cleanup(srv.Close)
	host := strings.TrimPrefix(srv.URL, "http://")
	return &env{t: t, db: db, driver: driver, host: host, feed: onPush,
		svc: scan.New(wire.ScanStores(db), driver, scan.Options{Limits: limits, SBOM: true, Host: host, Version: "test", Logger: log})}
}

// layer is a gzipped tar layer of the given files (path → content; a
// path ending in "/" is a directory).
func layer(t *testing.T, files map[string]string) v1.Layer {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, p := range slices.Sorted(maps.Keys(files)) {
		hdr := &tar.Header{Name: p, Mode: 0o644, Size: int64(len(files[p])), Typeflag: tar.TypeReg, ModTime: time.Unix(0, 0)}
		if strings.HasSuffix(p, "/") {
			hdr.Typeflag, hdr.Size, hdr.Mode = tar.TypeDir, 0, 0o755
		}
		if strings.HasPrefix(p, "usr/local/bin/") {
			hdr.Mode = 0o755
		}
		if err := tw.WriteHeader(hdr); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write([]byte(files[p])); err != nil {
			t.Fatal(err)
		}
	}
	tw.Close()
	zw.Close()
	return static.NewLayer(buf.Bytes(), types.OCILayer)
}

func rawLayer(b []byte, mt types.MediaType) v1.Layer { return static.NewLayer(b, mt) }

// debianLayer is the committed Debian 12 fixture (real .deb contents).
func debianLayer(t *testing.T) v1.Layer {
	t.Helper()
	b, err := os.ReadFile("index/testdata/debian-layer.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	return static.NewLayer(b, types.OCILayer)
}

const alpineInstalled = `C:Q1abc=
P:musl
V:1.2.4-r2
A:x86_64
o:musl
T:the musl c library (libc) implementation

C:Q1def=
P:libcrypto3
V:3.1.4-r5
A:x86_64
o:openssl
T:Crypto library from openssl

C:Q1ghi=
P:busybox
V:1.36.1-r15
A:x86_64
o:busybox
T:Size optimized toolbox of many common UNIX utilities

`

const alpineOSRelease = "NAME=\"Alpine Linux\"\nID=alpine\nVERSION_ID=3.19.1\nPRETTY_NAME=\"Alpine Linux v3.19\"\n"

func alpineLayer(t *testing.T) v1.Layer {
	return layer(t, map[string]string{"etc/os-release": alpineOSRelease, "lib/apk/db/installed": alpineInstalled})
}

// goBinaryLayer holds a Go binary built from index/testdata/gobin with
// this module's go.mod: its build info lists real dependencies of the
// project.
// (A `go test` binary carries no module list, so it cannot serve.)
func goBinaryLayer(t *testing.T) v1.Layer {
	t.Helper()
	out := filepath.Join(t.TempDir(), "app")
	cmd := exec.Command("go", "build", "-o", out, "./index/testdata/gobin")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return layer(t, map[string]string{"usr/local/bin/app": string(b)})
}

// goModVersion is the version go.mod pins for a module.
func goModVersion(t *testing.T, module string) string {
	t.Helper()
	b, err := os.ReadFile("../../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && f[0] == module {
			return f[1]
		}
	}
	t.Fatalf("go.mod does not require %s", module)
	return ""
}

// push writes an image of the layers to repo:tag and returns its digest
// and layer digests.
func (e *env) push(repo, tag string, layers ...v1.Layer) (string, []string) {
	e.t.Helper()
	img, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(empty.Image, types.OCIConfigJSON), types.OCIManifestSchema1), layers...)
	if err != nil {
		e.t.Fatal(err)
	}
	ref, err := name.ParseReference(e.host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		e.t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		e.t.Fatal(err)
	}
	e.queueScans()
	d, _ := img.Digest()
	var lds []string
	for _, l := range layers {
		ld, _ := l.Digest()
		lds = append(lds, ld.String())
	}
	return d.String(), lds
}

// queueScans hands the pushes' events to the scan subscriber, which
// queues their scans (the server's dispatcher does it at once).
func (e *env) queueScans() {
	e.t.Helper()
	if err := e.feed.Drain(context.Background()); err != nil {
		e.t.Fatal(err)
	}
}

// drain queues the scans of what was pushed and runs scan jobs until none
// is ready.
func (e *env) drain() {
	e.t.Helper()
	e.queueScans()
	ctx := context.Background()
	for i := 0; i < 1000; i++ {
		j, ok, err := e.db.Jobs().ClaimJob(ctx, meta.ScanQueue, "test", time.Minute)
		if err != nil {
			e.t.Fatal(err)
		}
		if !ok {
			return
		}
		if err := e.svc.Handle(ctx, j); err != nil {
			e.t.Fatalf("scan job %s: %v", j.Payload, err)
		}
		if err := e.db.Jobs().CompleteJob(ctx, j.ID, "test"); err != nil {
			e.t.Fatal(err)
		}
	}
	e.t.Fatal("scan jobs never ran out")
}

// importJSON imports OSV records given as JSON objects, declared to hold
// every advisory of each ecosystem they name, as that ecosystem's all.zip
// would (Importer.Cover): the coverage of the images they concern is then
// complete. importLoose imports them without.
func (e *env) importJSON(records ...string) scan.ImportStats {
	e.t.Helper()
	return e.importRecords(true, records...)
}

func (e *env) importLoose(records ...string) scan.ImportStats {
	e.t.Helper()
	return e.importRecords(false, records...)
}

func (e *env) importRecords(cover bool, records ...string) scan.ImportStats {
	e.t.Helper()
	ctx := context.Background()
	im := scan.NewImporter(e.db.VulnDB(), nil)
	if err := im.JSON(ctx, strings.NewReader("["+strings.Join(records, ",")+"]"), "test"); err != nil {
		e.t.Fatal(err)
	}
	for _, r := range records {
		var rec struct {
			Affected []struct {
				Package struct {
					Ecosystem string `json:"ecosystem"`
				} `json:"package"`
			} `json:"affected"`
		}
		if err := json.Unmarshal([]byte(r), &rec); err != nil || !cover {
			continue // rejected by the import, or not declared
		}
		for _, a := range rec.Affected {
			if err := im.Cover(a.Package.Ecosystem); err != nil {
				e.t.Fatal(err)
			}
		}
	}
	st, err := im.Finish(ctx)
	if err != nil {
		e.t.Fatal(err)
	}
	return st
}

// security is the endpoint's answer for repo@digest.
func (e *env) security(repo, dgst string) scan.SecurityInfo {
	e.t.Helper()
	d, _ := oci.ParseDigest(dgst)
	m, err := e.db.Manifests().GetManifest(context.Background(), repo, "", d, true)
	if err != nil {
		e.t.Fatal(err)
	}
	info, err := e.svc.Security(context.Background(), repo, m, true)
	if err != nil {
		e.t.Fatal(err)
	}
	// Quay's clients read data.Layer once the status is "scanned".
	if (info.Status == meta.ScanScanned) != (info.Data != nil) {
		e.t.Fatalf("%s@%s: status %s with data %v", repo, dgst, info.Status, info.Data)
	}
	images := []string{dgst}
	for _, p := range info.Manifests {
		images = append(images, p.Digest)
	}
	for _, d := range images {
		e.sameCoverage(d)
	}
	return info
}

// sameCoverage checks that the data coverage of a scanned image computed
// from the summary stored with its report is the one computed from the
// whole report (as before summaries), and is Coverages' answer.
func (e *env) sameCoverage(dgst string) {
	e.t.Helper()
	ctx := context.Background()
	legacy, summarized, err := scan.CoverageBothWays(ctx, e.svc, dgst)
	if errors.Is(err, scan.ErrNotScanned) {
		return
	}
	if err != nil {
		e.t.Fatalf("coverage of %s: %v", dgst, err)
	}
	if !reflect.DeepEqual(legacy, summarized) {
		e.t.Fatalf("coverage of %s from its summary:\n%+v\nfrom its report:\n%+v", dgst, summarized, legacy)
	}
	covs, err := e.svc.Coverages(ctx, []string{dgst, dgst})
	if got := covs[dgst]; err != nil || len(covs) != 1 || got.Complete != legacy.Complete || !slices.Equal(got.Missing, legacy.Missing) ||
		!slices.Equal(got.Stale, legacy.Stale) || got.Reason() != legacy.Reason() {
		e.t.Fatalf("Coverages of %s = %+v, %v; from its report: %+v", dgst, covs, err, legacy)
	}
}

// events returns the scanner's events after id, decoded.
func (e *env) events(after int64, kind string) ([]map[string]any, int64) {
	e.t.Helper()
	evs, err := e.db.Outbox().EventsAfter(context.Background(), after, 10000)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []map[string]any
	last := after
	for _, ev := range evs {
		last = ev.ID
		if ev.Kind != kind {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(ev.Data, &m); err != nil {
			e.t.Fatal(err)
		}
		m["_repository"] = ev.Repository
		out = append(out, m)
	}
	return out, last
}

// record is an OSV record for the tests.
func record(id, modified string, affected ...string) string {
	return `{"id":"` + id + `","modified":"` + modified + `","summary":"` + id + ` summary","affected":[` + strings.Join(affected, ",") + `]}`
}

func feature(info scan.SecurityInfo, name string) *scan.Feature {
	if info.Data == nil {
		return nil
	}
	for i, f := range info.Data.Layer.Features {
		if f.Name == name {
			return &info.Data.Layer.Features[i]
		}
	}
	return nil
}

func vulnNames(f *scan.Feature) []string {
	var out []string
	if f == nil {
		return nil
	}
	for _, v := range f.Vulnerabilities {
		out = append(out, v.Name)
	}
	return out
}

func mustDigest(t *testing.T, s string) digest.Digest {
	t.Helper()
	d, err := oci.ParseDigest(s)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// pushIndex writes an OCI index of the given image manifests (amd64,
// arm64 in that order) of repo to repo:tag.
func (e *env) pushIndex(repo, tag string, manifests ...string) string {
	e.t.Helper()
	archs := []string{"amd64", "arm64", "s390x"}
	var descs []string
	for i, m := range manifests {
		d := mustDigest(e.t, m)
		got, err := e.db.Manifests().GetManifest(context.Background(), repo, "", d, false)
		if err != nil {
			e.t.Fatal(err)
		}
		descs = append(descs, fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d,"platform":{"os":"linux","architecture":%q}}`,
			got.MediaType, m, got.Size, archs[i]))
	}
	body := `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[` + strings.Join(descs, ",") + `]}`
	req, _ := http.NewRequest(http.MethodPut, "http://"+e.host+"/v2/"+repo+"/manifests/"+tag, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/vnd.oci.image.index.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("push index: %d", resp.StatusCode)
	}
	return digest.FromString(body).String()
}

// putReferrer pushes a small artifact whose subject is the image.
func (e *env) putReferrer(repo, subject string) {
	e.t.Helper()
	m, err := e.db.Manifests().GetManifest(context.Background(), repo, "", mustDigest(e.t, subject), false)
	if err != nil {
		e.t.Fatal(err)
	}
	req, _ := http.NewRequest(http.MethodPost, "http://"+e.host+"/v2/"+repo+"/blobs/uploads/?digest="+digest.FromString("{}").String(), strings.NewReader("{}"))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	body := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/vnd.example.report",`+
		`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2},"layers":[{"mediaType":"application/vnd.oci.empty.v1+json","digest":%q,"size":2}],`+
		`"subject":{"mediaType":%q,"digest":%q,"size":%d}}`, digest.FromString("{}"), digest.FromString("{}"), m.MediaType, subject, m.Size)
	req, _ = http.NewRequest(http.MethodPut, "http://"+e.host+"/v2/"+repo+"/manifests/"+digest.FromString(body).String(), strings.NewReader(body))
	req.Header.Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		e.t.Fatalf("push referrer: %d", resp.StatusCode)
	}
}
