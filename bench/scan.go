package main

// The scanning benchmark (-scan): Berth's vulnerability scanner, run
// in-process on the embedded defaults (SQLite in a temp dir, filesystem
// blobs) and, with -scan-postgres, on PostgreSQL. It times the scan job of
// an image (cold and warm layer cache), an advisory import, matching an
// image against the database, and the re-match that follows an import
// changing advisories. See bench/README.md.

import (
	"bytes"
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	_ "github.com/jackc/pgx/v5/stdlib" // database/sql driver "pgx", for creating the bench database

	"github.com/berth-dev/berth/internal/feed"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	berthregistry "github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// scanFlags are the flags of the scanning benchmark.
type scanFlags struct {
	enabled                              bool
	postgres                             string
	records, manifests, changed, runs    int
	dpkgPkgs, npmPkgs, pypiPkgs, perMfst int
}

func (s *scanFlags) register(fset *flag.FlagSet) {
	fset.BoolVar(&s.enabled, "scan", false, "instead of the registry workloads, benchmark Berth's vulnerability scanner in-process (SQLite; see -scan-postgres)")
	fset.StringVar(&s.postgres, "scan-postgres", "", "also run the scan benchmark on PostgreSQL at this postgres:// URL (a database of its own is created and dropped)")
	fset.IntVar(&s.records, "scan-records", 50000, "OSV records in the advisory database")
	fset.IntVar(&s.manifests, "scan-manifests", 10000, "scanned manifests for the re-match measurement")
	fset.IntVar(&s.changed, "scan-changed", 100, "advisories changed by the import before the re-match")
	fset.IntVar(&s.runs, "scan-runs", 5, "repetitions of the scan and match measurements (the median is reported)")
	s.dpkgPkgs, s.npmPkgs, s.pypiPkgs, s.perMfst = 300, 500, 100, 150
}

// rematchRuns is how many changing imports the re-match row takes the
// median of.
const rematchRuns = 3

// scanBackend is one metadata store with a registry and a scanner on it.
type scanBackend struct {
	label string
	db    *meta.DB
	svc   *scan.Service
	feed  *feed.Dispatcher // the scan-on-push subscriber, drained after each push
	host  string
	srv   *httptest.Server
}

// scanResult holds one backend's figures.
type scanResult struct {
	cold, warm, match    []float64 // ms
	importSecs           float64
	imported             scan.ImportStats
	vulns, vulnRecords   int
	packages             map[string]int
	saveRate             float64 // manifests/s
	rematch              []float64
	rematchStats         scan.RematchStats
	firstRematch         float64
	firstStats           scan.RematchStats
	lookupExact, lookupB float64 // ms, one ManifestsWithPackages key
	pgVersion            string
}

// runScanBench runs the scanning benchmark and returns the markdown report.
func runScanBench(ctx context.Context, c config, work string) (string, error) {
	sf := c.scan
	if sf.records < 1 || sf.manifests < 1 || sf.changed < 1 || sf.runs < 1 {
		return "", errors.New("-scan-records, -scan-manifests, -scan-changed and -scan-runs must be positive")
	}
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	goBin := c.berthBin
	if goBin == "" {
		if goBin, err = buildBerth(work); err != nil {
			return "", err
		}
	}
	t0 := time.Now()
	debPool := debianPool()
	img, err := buildImage(root, goBin, debPool, sf.dpkgPkgs, sf.npmPkgs, sf.pypiPkgs)
	if err != nil {
		return "", err
	}
	recs, err := makeRecords(sf.records, img, debPool)
	if err != nil {
		return "", err
	}
	pop := makePopulation(sf.manifests, sf.perMfst, sf.changed, debPool)
	logf("generated the image (%d dpkg, %d Go modules, %d npm, %d PyPI packages), %d records (%.1f MB, %d naming the image's packages) and %d manifests in %.1fs",
		len(img.dpkg), len(img.gomods), len(img.npm), len(img.pypi), recs.count, float64(len(recs.json))/1e6, recs.hits, len(pop.manifests), time.Since(t0).Seconds())

	type target struct{ label, dsn string }
	targets := []target{{"SQLite", filepath.Join(work, "scan-sqlite", "meta.db")}}
	if sf.postgres != "" {
		targets = append(targets, target{"PostgreSQL", sf.postgres})
	}
	results := map[string]*scanResult{}
	var errs []string
	for _, t := range targets {
		logf("scan bench on %s", t.label)
		res, err := runScanBackend(ctx, t.label, t.dsn, filepath.Join(work, "scan-"+strings.ToLower(t.label)), img, recs, pop, sf)
		if err != nil {
			errs = append(errs, fmt.Sprintf("%s: %v", t.label, err))
			exitStatus = 1
			logf("%s: %v", t.label, err)
			continue
		}
		results[t.label] = res
	}
	var labels []string
	for _, t := range targets {
		labels = append(labels, t.label)
	}
	return renderScanReport(sf, img, recs, pop, labels, results, errs), nil
}

// runScanBackend runs every measurement on one store.
func runScanBackend(ctx context.Context, label, dsn, dir string, img *imageSpec, recs *recordSet, pop *population, sf scanFlags) (*scanResult, error) {
	res := &scanResult{packages: map[string]int{}}
	if strings.HasPrefix(dsn, "postgres") {
		fresh, version, drop, err := createPostgresDB(ctx, dsn)
		if err != nil {
			return nil, err
		}
		defer drop()
		dsn, res.pgVersion = fresh, version
	}
	b, err := openScanBackend(ctx, label, dsn, dir)
	if err != nil {
		return nil, err
	}
	defer b.close()

	// 1. The advisory import.
	t0 := time.Now()
	im := scan.NewImporter(b.db.VulnDB(), nil)
	if err := im.JSON(ctx, bytes.NewReader(recs.json), "bench"); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	if res.imported, err = im.Finish(ctx); err != nil {
		return nil, fmt.Errorf("import: %w", err)
	}
	res.importSecs = time.Since(t0).Seconds()
	if res.imported.Applied != recs.count || res.imported.Rejected != 0 {
		return nil, fmt.Errorf("import: %+v", res.imported)
	}
	logf("  import: %d records in %.1fs (%.0f/s)", recs.count, res.importSecs, float64(recs.count)/res.importSecs)
	// The re-match jobs it queued find no manifest yet.
	if _, err := b.runJobs(ctx, ""); err != nil {
		return nil, err
	}

	// 2. Scan jobs: cold (every layer new), then warm (one new layer).
	var last [][]byte
	var lastDigest string
	for i := range sf.runs {
		layers, err := img.layers(fmt.Sprintf("cold-%d-%s", i, randHex(4)))
		if err != nil {
			return nil, err
		}
		d, err := b.push(ctx, "bench/app", fmt.Sprintf("cold-%d", i), layers)
		if err != nil {
			return nil, err
		}
		took, err := b.runJobs(ctx, d)
		if err != nil {
			return nil, err
		}
		res.cold = append(res.cold, ms(took))
		last, lastDigest = layers, d
		logf("  cold scan %d: %.0f ms", i+1, ms(took))
	}
	if err := b.countPackages(ctx, lastDigest, res.packages); err != nil {
		return nil, err
	}
	for i := range sf.runs {
		tiny, err := gzipTar([]tarFile{{name: "usr/src/app/VERSION", data: []byte("warm-" + randHex(8) + "\n")}}, true)
		if err != nil {
			return nil, err
		}
		d, err := b.push(ctx, "bench/app", fmt.Sprintf("warm-%d", i), append(slices.Clone(last), tiny))
		if err != nil {
			return nil, err
		}
		took, err := b.runJobs(ctx, d)
		if err != nil {
			return nil, err
		}
		res.warm = append(res.warm, ms(took))
		logf("  warm scan %d: %.0f ms", i+1, ms(took))
	}

	// 3. Matching the scanned image (the security endpoint's work).
	dg, err := oci.ParseDigest(lastDigest)
	if err != nil {
		return nil, err
	}
	m, err := b.db.Manifests().GetManifest(ctx, "bench/app", "", dg, true)
	if err != nil {
		return nil, fmt.Errorf("read manifest: %w", err)
	}
	for i := -1; i < sf.runs; i++ { // one unmeasured warm-up
		t := time.Now()
		info, err := b.svc.Security(ctx, "bench/app", m, true)
		took := time.Since(t)
		if err != nil {
			return nil, fmt.Errorf("security: %w", err)
		}
		if info.Status != meta.ScanScanned || info.Data == nil {
			return nil, fmt.Errorf("security: status %q %s", info.Status, info.Reason)
		}
		if i < 0 {
			ids := map[string]bool{}
			for _, f := range info.Data.Layer.Features {
				res.vulns += len(f.Vulnerabilities)
				for _, v := range f.Vulnerabilities {
					ids[v.Name] = true
				}
			}
			res.vulnRecords = len(ids)
			continue
		}
		res.match = append(res.match, ms(took))
	}
	logf("  match: median %.0f ms, %d vulnerabilities", median(res.match), res.vulns)

	// 4. Re-match: scanned manifests, advisories naming their packages,
	// then imports changing those advisories.
	if err := b.saveScans(ctx, pop, res); err != nil {
		return nil, err
	}
	if err := b.probeLookups(ctx, pop, img, res); err != nil {
		return nil, err
	}
	for rev := 0; rev <= rematchRuns; rev++ {
		js, _, err := pop.changedRecords(rev)
		if err != nil {
			return nil, err
		}
		im := scan.NewImporter(b.db.VulnDB(), nil)
		if err := im.JSON(ctx, bytes.NewReader(js), "bench-changed"); err != nil {
			return nil, fmt.Errorf("import changed advisories: %w", err)
		}
		st, err := im.Finish(ctx)
		if err != nil {
			return nil, fmt.Errorf("import changed advisories: %w", err)
		}
		if st.Applied != len(pop.changed) {
			return nil, fmt.Errorf("import changed advisories: %+v", st)
		}
		took, rst, err := b.rematchQueued(ctx)
		if err != nil {
			return nil, err
		}
		logf("  re-match (revision %d): %.2fs, %d manifests considered, %d changed, %d announced", rev, took.Seconds(), rst.Manifests, rst.Changed, rst.Announced)
		if rev == 0 {
			res.firstRematch, res.firstStats = took.Seconds(), rst
			continue
		}
		res.rematch = append(res.rematch, took.Seconds())
		res.rematchStats = rst
	}
	return res, nil
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// createPostgresDB creates a database of its own next to the one base
// names and returns its DSN, the server version and a function dropping it.
func createPostgresDB(ctx context.Context, base string) (string, string, func(), error) {
	u, err := url.Parse(base)
	if err != nil {
		return "", "", nil, fmt.Errorf("-scan-postgres: %w", err)
	}
	admin, err := sql.Open("pgx", base)
	if err != nil {
		return "", "", nil, fmt.Errorf("postgres: %w", err)
	}
	var version string
	if err := admin.QueryRowContext(ctx, "SHOW server_version").Scan(&version); err != nil {
		admin.Close()
		return "", "", nil, fmt.Errorf("postgres at %s: %w", u.Redacted(), err)
	}
	name := "bench_scan_" + randHex(6)
	if _, err := admin.ExecContext(ctx, "CREATE DATABASE "+name); err != nil {
		admin.Close()
		return "", "", nil, fmt.Errorf("postgres: create database: %w", err)
	}
	var once sync.Once
	drop := func() {
		once.Do(func() {
			if _, err := admin.ExecContext(context.WithoutCancel(ctx), "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
				logf("drop database %s: %v", name, err)
			}
			admin.Close()
		})
	}
	atCleanup(drop) // also on interrupt
	u.Path = "/" + name
	return u.String(), version, drop, nil
}

func openScanBackend(ctx context.Context, label, dsn, dir string) (*scanBackend, error) {
	db, err := meta.Open(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", label, err)
	}
	// Scan on push, as in the server: the feed's scan subscriber, which
	// push drains.
	onPush := feed.New(db.Outbox(), []feed.Subscriber{scan.NewOnPush(db.Scans())}, feed.Options{})
	if err := onPush.Subscribe(ctx); err != nil {
		db.Close()
		return nil, err
	}
	driver, err := fs.New(filepath.Join(dir, "blobs"), fs.Options{Fsync: true})
	if err != nil {
		db.Close()
		return nil, err
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	srv := httptest.NewServer(berthregistry.New(wire.RegistryStores(db), driver, berthregistry.Options{Policy: policy, Logger: log}))
	host := strings.TrimPrefix(srv.URL, "http://")
	return &scanBackend{label: label, db: db, srv: srv, host: host, feed: onPush,
		svc: scan.New(wire.ScanStores(db), driver, scan.Options{SBOM: true, Host: host, Version: "bench", Logger: log})}, nil
}

func (b *scanBackend) close() {
	b.srv.Close()
	b.db.Close()
}

// push stores an image of the layers through the registry API (as a
// client would) and returns its digest; the push's event queues its scan
// (the feed's scan subscriber, drained here).
func (b *scanBackend) push(ctx context.Context, repo, tag string, blobs [][]byte) (string, error) {
	layers := make([]v1.Layer, len(blobs))
	for i, l := range blobs {
		layers[i] = static.NewLayer(l, types.OCILayer)
	}
	base, err := mutate.ConfigFile(empty.Image, &v1.ConfigFile{Architecture: "amd64", OS: "linux", RootFS: v1.RootFS{Type: "layers"},
		Config: v1.Config{Cmd: []string{"/usr/local/bin/berth", "serve"}, Env: []string{"PATH=/usr/local/bin:/usr/bin:/bin"}}})
	if err != nil {
		return "", err
	}
	image, err := mutate.AppendLayers(mutate.MediaType(mutate.ConfigMediaType(base, types.OCIConfigJSON), types.OCIManifestSchema1), layers...)
	if err != nil {
		return "", err
	}
	ref, err := name.ParseReference(b.host+"/"+repo+":"+tag, name.Insecure)
	if err != nil {
		return "", err
	}
	if err := remote.Write(ref, image, remote.WithContext(ctx)); err != nil {
		return "", fmt.Errorf("push %s: %w", ref, err)
	}
	if err := b.feed.Drain(ctx); err != nil {
		return "", fmt.Errorf("queue the scan of %s: %w", ref, err)
	}
	d, err := image.Digest()
	if err != nil {
		return "", err
	}
	return d.String(), nil
}

// runJobs runs the scan queue's jobs until none is ready, as a worker
// would, and returns how long the job scanning digest took.
func (b *scanBackend) runJobs(ctx context.Context, digest string) (time.Duration, error) {
	var took time.Duration
	found := digest == ""
	for range 10000 {
		j, ok, err := b.db.Jobs().ClaimJob(ctx, meta.ScanQueue, "bench", 30*time.Minute)
		if err != nil {
			return 0, err
		}
		if !ok {
			break
		}
		var sj meta.ScanJob
		if err := json.Unmarshal(j.Payload, &sj); err != nil {
			return 0, fmt.Errorf("job %d: %w", j.ID, err)
		}
		t := time.Now()
		err = b.svc.Handle(ctx, j)
		d := time.Since(t)
		if err != nil {
			return 0, fmt.Errorf("scan job %s: %w", j.Payload, err)
		}
		if err := b.db.Jobs().CompleteJob(ctx, j.ID, "bench"); err != nil {
			return 0, err
		}
		if sj.Kind == meta.ScanJobManifest && sj.Digest == digest {
			took, found = d, true
		}
	}
	if !found {
		return 0, fmt.Errorf("no scan job ran for %s", digest)
	}
	if digest != "" {
		st, err := b.db.Scans().ManifestScan(ctx, digest)
		if err != nil {
			return 0, err
		}
		if st.Status != meta.ScanScanned {
			return 0, fmt.Errorf("scan of %s: status %s: %s", digest, st.Status, st.Reason)
		}
	}
	return took, nil
}

// countPackages counts the scanned image's packages by kind.
func (b *scanBackend) countPackages(ctx context.Context, digest string, out map[string]int) error {
	st, err := b.db.Scans().ManifestScan(ctx, digest)
	if err != nil {
		return err
	}
	var rep scan.Report
	if err := json.Unmarshal(st.Report, &rep); err != nil {
		return fmt.Errorf("scan report: %w", err)
	}
	for _, p := range rep.Packages {
		out[p.Kind]++
	}
	if len(rep.Warnings) > 0 {
		logf("  scan warnings: %v", rep.Warnings)
	}
	return nil
}

// saveScans stores the population's scan results (the manifests_scans and
// manifest_packages rows a scan leaves), from a few goroutines.
func (b *scanBackend) saveScans(ctx context.Context, pop *population, res *scanResult) error {
	t0 := time.Now()
	work := make(chan meta.ScanResult)
	errc := make(chan error, 4)
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for r := range work {
				if err := b.db.Scans().SaveScan(ctx, r); err != nil {
					errc <- err
					for range work {
					}
					return
				}
			}
		})
	}
	for _, r := range pop.manifests {
		work <- r
	}
	close(work)
	wg.Wait()
	select {
	case err := <-errc:
		return fmt.Errorf("save scans: %w", err)
	default:
	}
	res.saveRate = float64(len(pop.manifests)) / time.Since(t0).Seconds()
	logf("  saved %d scanned manifests in %.1fs (%.0f/s)", len(pop.manifests), time.Since(t0).Seconds(), res.saveRate)
	return nil
}

// probeLookups times the manifests-by-package lookup of one key with a
// release ("Debian:12", a changed package) and one without (an npm
// package of the image: language ecosystems have no release).
func (b *scanBackend) probeLookups(ctx context.Context, pop *population, img *imageSpec, res *scanResult) error {
	for _, k := range []struct {
		key meta.VulnKey
		out *float64
	}{{meta.VulnKey{Ecosystem: "Debian:12", Name: pop.changed[0].name}, &res.lookupExact}, {meta.VulnKey{Ecosystem: "npm", Name: img.npm[0].name}, &res.lookupB}} {
		var runs []float64
		for range 3 {
			t := time.Now()
			if _, err := b.db.Scans().ManifestsWithPackages(ctx, []meta.VulnKey{k.key}); err != nil {
				return err
			}
			runs = append(runs, ms(time.Since(t)))
		}
		*k.out = median(runs)
	}
	logf("  ManifestsWithPackages, one key: Debian:12 %.2f ms, npm %.2f ms", res.lookupExact, res.lookupB)
	return nil
}

// rematchQueued claims the re-match job an import queued and runs its
// re-match, timed.
func (b *scanBackend) rematchQueued(ctx context.Context) (time.Duration, scan.RematchStats, error) {
	var took time.Duration
	var st scan.RematchStats
	ran := false
	for {
		j, ok, err := b.db.Jobs().ClaimJob(ctx, meta.ScanQueue, "bench", 30*time.Minute)
		if err != nil {
			return 0, st, err
		}
		if !ok {
			break
		}
		var sj meta.ScanJob
		if err := json.Unmarshal(j.Payload, &sj); err != nil {
			return 0, st, fmt.Errorf("job %d: %w", j.ID, err)
		}
		if sj.Kind != meta.ScanJobRematch || ran {
			return 0, st, fmt.Errorf("unexpected job %s", j.Payload)
		}
		t := time.Now()
		st, err = b.svc.Rematch(ctx, sj.Records)
		took = time.Since(t)
		if err != nil {
			return 0, st, fmt.Errorf("re-match: %w", err)
		}
		if err := b.db.Jobs().CompleteJob(ctx, j.ID, "bench"); err != nil {
			return 0, st, err
		}
		ran = true
	}
	if !ran {
		return 0, st, errors.New("the import queued no re-match")
	}
	return took, st, nil
}

// ---- report ----

func renderScanReport(sf scanFlags, img *imageSpec, recs *recordSet, pop *population, labels []string, results map[string]*scanResult, errs []string) string {
	var b strings.Builder
	b.WriteString("## Scanning: Berth's vulnerability scanner\n\n")
	facts := []string{
		"Date: " + time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		fmt.Sprintf("Machine: %d CPUs (nproc), %s, %s RAM, Linux %s", nproc(), cpuModel(), memTotal(), readTrim("/proc/sys/kernel/osrelease")),
		"Go: " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
	}
	berth := "in-process (internal/scan, internal/registry)"
	if rev := gitRev(); rev != "" {
		berth += ", commit " + rev
	}
	facts = append(facts, "Berth: "+berth+"; SQLite in a temp dir, filesystem blobs with fsync, SBOM attachment on (the defaults)")
	for _, l := range labels {
		if r := results[l]; r != nil && r.pgVersion != "" {
			facts = append(facts, "PostgreSQL: "+r.pgVersion+" on 127.0.0.1 (a database created for the run and dropped after)")
		}
	}
	facts = append(facts, "Command: `go run ./bench "+strings.Join(os.Args[1:], " ")+"`")
	var sizes []string
	for _, l := range img.bodies {
		sizes = append(sizes, fmt.Sprintf("%s %.1f MB", l.name, float64(len(l.body))/1e6))
	}
	facts = append(facts, "Image: 5 gzip layers ("+strings.Join(sizes, ", ")+"); the Go binary is "+
		fmt.Sprintf("%.1f MB with %d modules", float64(img.goBytes)/1e6, len(img.gomods)-1))
	for _, l := range labels {
		if r := results[l]; r != nil && len(r.packages) > 0 {
			var kinds []string
			total := 0
			for _, k := range []string{"dpkg", "go", "npm", "pypi"} {
				kinds = append(kinds, fmt.Sprintf("%d %s", r.packages[k], k))
				total += r.packages[k]
			}
			facts = append(facts, fmt.Sprintf("Packages found in the image: %d (%s)", total, strings.Join(kinds, ", ")))
			break
		}
	}
	facts = append(facts, fmt.Sprintf("Advisory database: %d synthetic OSV records (%.0f MB of JSON; %d Debian:12/11, %d npm, %d Go, %d PyPI, %d Alpine:v3.19); %d of them name a package of the image",
		recs.count, float64(len(recs.json))/1e6, recs.perEco["Debian"], recs.perEco["npm"], recs.perEco["Go"], recs.perEco["PyPI"], recs.perEco["Alpine"], recs.hits))
	facts = append(facts, fmt.Sprintf("Re-match population: %d scanned manifests × %d Debian packages (pool of 2000 names); %d changed advisories, each naming a package held by 5–50%% of the manifests; %d of them move their fixed version, the others change only metadata",
		len(pop.manifests), sf.perMfst, len(pop.changed), (len(pop.changed)+9)/10))
	for _, f := range facts {
		b.WriteString("- " + f + "\n")
	}

	b.WriteString("\n| Measurement | " + strings.Join(labels, " | ") + " |\n|---|" + strings.Repeat("---:|", len(labels)) + "\n")
	row := func(label string, cell func(r *scanResult) string) {
		cells := make([]string, len(labels))
		for i, l := range labels {
			cells[i] = "error"
			if r := results[l]; r != nil {
				cells[i] = cell(r)
			}
		}
		fmt.Fprintf(&b, "| %s | %s |\n", label, strings.Join(cells, " | "))
	}
	spread := func(v []float64, prec int) string {
		if len(v) == 0 {
			return "—"
		}
		s := fmt.Sprintf("%.*f", prec, median(v))
		if len(v) > 1 {
			s += fmt.Sprintf(" (%.*f–%.*f)", prec, slices.Min(v), prec, slices.Max(v))
		}
		return s
	}
	row(fmt.Sprintf("Scan job, cold: 5 new layers (ms per image, %d images)", sf.runs), func(r *scanResult) string { return spread(r.cold, 0) })
	row(fmt.Sprintf("Scan job, warm: 5 cached layers + 1 new tiny layer (ms per image, %d images)", sf.runs), func(r *scanResult) string { return spread(r.warm, 0) })
	row(fmt.Sprintf("Import of %d OSV records (records/s)", recs.count), func(r *scanResult) string {
		return fmt.Sprintf("%.0f (%.1f s)", float64(r.imported.Read)/r.importSecs, r.importSecs)
	})
	row(fmt.Sprintf("Match the scanned image against %d records, security endpoint with vulnerabilities (ms, %d runs)", recs.count, sf.runs),
		func(r *scanResult) string { return spread(r.match, 0) })
	row("Vulnerabilities found in the image (package × advisory / distinct advisories)", func(r *scanResult) string {
		return fmt.Sprintf("%d / %d", r.vulns, r.vulnRecords)
	})
	row(fmt.Sprintf("Store %d scan results of %d packages each, 4 writers (manifests/s; setup)", len(pop.manifests), sf.perMfst),
		func(r *scanResult) string { return fmt.Sprintf("%.0f", r.saveRate) })
	row(fmt.Sprintf("Re-match after an import changing %d advisories (s, %d imports)", len(pop.changed), rematchRuns),
		func(r *scanResult) string { return spread(r.rematch, 2) })
	row("… manifests considered / changed", func(r *scanResult) string {
		return fmt.Sprintf("%d / %d", r.rematchStats.Manifests, r.rematchStats.Changed)
	})
	row("… per manifest considered (µs)", func(r *scanResult) string {
		if r.rematchStats.Manifests == 0 {
			return "—"
		}
		return fmt.Sprintf("%.0f", median(r.rematch)*1e6/float64(r.rematchStats.Manifests))
	})
	row(fmt.Sprintf("Re-match after importing the %d advisories new (s; manifests considered / changed)", len(pop.changed)), func(r *scanResult) string {
		return fmt.Sprintf("%.2f (%d / %d)", r.firstRematch, r.firstStats.Manifests, r.firstStats.Changed)
	})
	row("Manifests holding a package (meta.ManifestsWithPackages), one Debian:12 key / one npm key (ms)", func(r *scanResult) string {
		return fmt.Sprintf("%.2f / %.2f", r.lookupExact, r.lookupB)
	})

	b.WriteString("\nCells are the median with (min–max) over the runs. The scan job is what a scan worker runs for a pushed image " +
		"(meta.ScanQueue job, (*scan.Service).Handle): read the layers not in the layer cache, merge, match against the whole database, " +
		"store the report, packages and matches, announce, attach the SBOM. Cold images have five new layers (each made new by a small extra gzip member, " +
		"so the digests differ but the content is the same); warm images reuse the last cold image's layers and add one. " +
		"The match row is (*scan.Service).Security with vulnerabilities for the scanned image. " +
		"The re-match rows time (*scan.Service).Rematch of the job the import queued, on the same database.\n")
	if len(errs) > 0 {
		b.WriteString("\nErrors:\n\n")
		for _, e := range errs {
			b.WriteString("- " + strings.ReplaceAll(e, "\n", "\n  ") + "\n")
		}
	}
	return b.String()
}
