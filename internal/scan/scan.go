// Package scan is Berth's security scanner: it indexes the packages of
// every image manifest (each layer once, by digest), matches them against
// the imported OSV advisories, stores the report, attaches the computed
// SBOM as a referrer, announces manifest_scanned and vulnerability_found,
// and re-matches the manifests an advisory import changes.
//
// The work runs on the durable job queue (meta.ScanQueue): a manifest's scan
// is queued by the feed subscriber OnPush when its repo_push event comes,
// and a database import queues its re-match in the import's transaction.
package scan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sort"
	"sync/atomic"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/scan/osv"
	"github.com/berth-dev/berth/internal/storage"
)

// Actor is the actor of the scanner's events and generated content.
const Actor = "berth-scanner"

// Options tune a Service.
type Options struct {
	Limits index.Limits
	// SBOM attaches the computed SPDX SBOM of every scanned image as a
	// referrer in the repository it was pushed to.
	SBOM bool
	// Host names the registry in generated documents (externalURL's host).
	Host string
	// Version is Berth's version, recorded in generated documents.
	Version string
	// StaleAfter is the age past which an ecosystem's advisories are
	// reported stale (DefaultStaleAfter when zero; never when negative).
	StaleAfter time.Duration
	Logger     *slog.Logger
	// Metrics, if set, counts manifest scans by outcome.
	Metrics Metrics
}

// Metrics counts the outcomes of manifest scans: meta.ScanScanned,
// meta.ScanUnsupported, meta.ScanFailed (the last attempt failed), "error"
// (an attempt failed and will be retried) or "deleted" (the manifest went
// before its scan).
type Metrics interface {
	Scan(outcome string)
}

// Service scans manifests. It is safe for concurrent use; every replica
// can run one.
type Service struct {
	stores Stores
	driver storage.Driver
	opts   Options
	log    *slog.Logger
	// maxImagePackages bounds the packages of one image's layers
	// (maxImagePackages when zero; tests set less).
	maxImagePackages int
	// maxImageRecorded bounds the bytes the results of one image's
	// layers record (maxImageRecordedBytes when zero; tests set less).
	maxImageRecorded int64
	// swept is when removeTempLeftovers last ran (Unix nanoseconds).
	swept atomic.Int64
}

// New returns a scanner over the stores and the blob storage. It
// removes the spools that scans (and vulnerability database uploads)
// killed midway left in the temporary directory (removeTempLeftovers).
func New(stores Stores, driver storage.Driver, opts Options) *Service {
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.StaleAfter == 0 {
		opts.StaleAfter = DefaultStaleAfter
	}
	s := &Service{stores: stores, driver: driver, opts: opts, log: opts.Logger.With("component", "scan")}
	s.sweepTemp(time.Now())
	return s
}

// Report is what the scanner stores for a scanned manifest.
type Report struct {
	Ecosystem string            `json:"ecosystem,omitempty"`
	OSRelease map[string]string `json:"osRelease,omitempty"`
	Layers    []string          `json:"layers"`
	Packages  []index.Package   `json:"packages"`
	Warnings  []string          `json:"warnings,omitempty"`
	// ContentSets are the image's content sets (Red Hat content manifests)
	// and CPEs the CPEs the stored mapping gave them when last matched
	// (cpemap.go).
	ContentSets []string `json:"contentSets,omitempty"`
	CPEs        []string `json:"cpes,omitempty"`
	// Gaps are the OS package databases whose packages are unknown
	// (index.Image.Gaps): the report is not complete with them.
	Gaps []index.Gap `json:"gaps,omitempty"`
}

// Handle runs one scan queue job (the jobs.Handler of meta.ScanQueue).
func (s *Service) Handle(ctx context.Context, j meta.Job) error {
	// A scan's results and SBOM are derived data: if a power cut loses
	// them, it loses this job's completion too, and the scan runs again.
	ctx = meta.LaxCommits(ctx)
	s.sweepTemp(time.Now()) // hourly
	var sj meta.ScanJob
	if err := json.Unmarshal(j.Payload, &sj); err != nil {
		return fmt.Errorf("scan job %d: %w", j.ID, err)
	}
	switch sj.Kind {
	case meta.ScanJobManifest:
		status, err := s.scanManifest(ctx, sj.Repository, sj.Digest, j.Attempts >= j.MaxAttempts)
		if err != nil && ctx.Err() == nil {
			var wait bool
			if wait, err = waitForLayer(err, j, time.Now()); wait {
				return err // deferred: no attempt spent
			}
		}
		last := err != nil && j.Attempts >= j.MaxAttempts && ctx.Err() == nil
		if last {
			// The last attempt: say so rather than stay queued forever,
			// and announce it as any scan's end (receivers and gates
			// waiting for the scan hear of it); but a report scanned
			// before is kept (keepScanned).
			fctx, reason := context.WithoutCancel(ctx), err.Error()
			kept, kerr := s.keepScanned(fctx, sj.Repository, sj.Digest, reason)
			if kerr != nil {
				return errors.Join(err, kerr)
			}
			if !kept {
				if serr := s.stores.Results.SaveScan(fctx, meta.ScanResult{Digest: sj.Digest, Status: meta.ScanFailed, Reason: reason,
					Events: s.announce(fctx, sj.Repository, sj.Digest, meta.ScanFailed, reason, nil, nil, nil)}); serr != nil {
					return errors.Join(err, serr)
				}
			}
		}
		if s.opts.Metrics != nil && ctx.Err() == nil {
			switch {
			case last:
				status = meta.ScanFailed
			case err != nil:
				status = "error" // retried
			}
			s.opts.Metrics.Scan(status)
		}
		return err
	case meta.ScanJobRematch:
		_, err := s.Rematch(ctx, sj.Records)
		return err
	case meta.ScanJobRemap:
		var rj meta.RemapJob
		if err := json.Unmarshal(j.Payload, &rj); err != nil {
			return fmt.Errorf("scan job %d: %w", j.ID, err)
		}
		_, err := s.Remap(ctx, rj.ContentSets)
		return err
	}
	return fmt.Errorf("scan job %d: unknown kind %q", j.ID, sj.Kind)
}

// scanManifest indexes and matches digest unless that was done already,
// then announces the result in repo and attaches the SBOM there. On its
// job's last attempt (last) the announcement is saved with the result,
// not with the job's completion: a last attempt that saved the result
// and then failed, or lost its job, is not run again to announce it.
func (s *Service) scanManifest(ctx context.Context, repo, dgst string, last bool) (string, error) {
	d, err := oci.ParseDigest(dgst)
	if err != nil {
		return "", fmt.Errorf("scan job: %w", err)
	}
	m, err := s.stores.Manifests.GetManifest(ctx, repo, "", d, true)
	if errors.Is(err, meta.ErrNotFound) {
		return "deleted", nil // deleted since it was pushed: nothing to announce
	}
	if err != nil {
		return "", err
	}
	st, err := s.stores.Results.ManifestScan(ctx, dgst)
	if err != nil && !errors.Is(err, meta.ErrNotFound) {
		return "", err
	}
	fresh := (st.Status == meta.ScanScanned || st.Status == meta.ScanUnsupported) && st.IndexerVersion == index.IndexerVersion
	var rep *Report
	if fresh && st.Status == meta.ScanScanned {
		if rep, err = decodeReport(st.Report); err != nil {
			return "", err
		}
	}
	// A result a limit may have shaped (a gap, a skipped file, a layer
	// too large) is derived again from the layer cache: raised scan.*
	// limits read those layers again (layer).
	fresh = fresh && !reportLimitBound(st.Status, rep)
	var findings []Finding
	var cov *DataCoverage
	// The scan's announcement in repo commits with the job's completion
	// when a job worker runs it (withJob).
	var events []meta.Event
	withJob := !last && s.withJob(ctx, &events)
	sbomDone := false // the SBOM was stored with the result
	if fresh {
		// Scanned before: for another repository, or by this job, run
		// again after its process was killed between saving the result
		// and completing the job (that run's announcement went with it).
		if st.Status == meta.ScanScanned {
			if findings, err = s.match(ctx, rep); err != nil {
				return "", err
			}
			if cov, err = s.reportCoverage(ctx, repo, dgst, rep); err != nil {
				return "", err
			}
		}
		events = s.announce(ctx, repo, dgst, st.Status, st.Reason, rep, findings, cov)
		if !withJob {
			if err := s.stores.Results.AppendEvents(ctx, events); err != nil {
				return "", err
			}
		}
	} else {
		res, r, f, err := s.index(ctx, m)
		if err != nil {
			return "", err
		}
		rep, findings = r, f
		if rep != nil {
			if cov, err = s.reportCoverage(ctx, repo, dgst, rep); err != nil {
				return "", err
			}
		}
		// A new result stores its SBOM with it, in one transaction.
		var sb *sbom
		defer func() {
			if sb != nil { // placed, or partly, and no save was tried: leave nothing behind
				if err := s.unplace(context.WithoutCancel(ctx), sb); err != nil {
					s.log.Warn("delete the SBOM's blobs placed for a scan that failed", "digest", dgst, "err", err)
				}
			}
		}()
		if s.opts.SBOM && res.Status == meta.ScanScanned && rep != nil {
			if sb, err = s.prepareSBOM(ctx, repo, m, rep); err != nil {
				return "", fmt.Errorf("attach SBOM: %w", err)
			}
			if sb == nil {
				sbomDone = true // the repository holds it already
			} else if err := sb.place(ctx); err != nil {
				return "", fmt.Errorf("attach SBOM: %w", err)
			}
		}
		for attempt := 0; ; attempt++ {
			before, err := s.stores.Vulns.VulnDBVersion(ctx)
			if err != nil {
				return "", err
			}
			if rep != nil {
				if findings, err = s.match(ctx, rep); err != nil {
					return "", err
				}
				// With the CPEs of the content set mapping as it is now.
				setReport(&res, rep)
				res.Packages = scanPackages(rep)
			}
			res.Vulns = vulnRows(findings)
			events = s.announce(ctx, repo, dgst, res.Status, res.Reason, rep, findings, cov)
			res.Events = nil
			if !withJob && attempt == 0 {
				res.Events = events // with the result, once
			}
			stored, err := s.saveScan(ctx, res, sb)
			sb = nil // stored, or taken back and left to attachSBOM
			if err != nil {
				return "", err
			}
			sbomDone = sbomDone || stored
			// An import that committed while this matched could have been
			// re-matched before these packages were saved: match again.
			after, err := s.stores.Vulns.VulnDBVersion(ctx)
			if err != nil {
				return "", err
			}
			if after == before || attempt == 2 {
				break
			}
			res.Layers = nil
		}
		st.Status = res.Status
	}
	if s.opts.SBOM && st.Status == meta.ScanScanned && rep != nil && !sbomDone {
		if err := s.attachSBOM(ctx, repo, m, rep); err != nil {
			return "", fmt.Errorf("attach SBOM: %w", err)
		}
	}
	return st.Status, nil
}

// eventsIn append events in a given transaction (meta.Scans).
type eventsIn interface {
	AppendEventsIn(ctx context.Context, tx meta.Tx, evs []meta.Event) error
}

// withJob asks the job worker running the scan to append the events
// *evs holds once the scan is done in the transaction that completes its
// job (jobs.OnComplete), and reports whether it will; if not, the caller
// appends them. Not with the result: a job run again after its process
// was killed between saving the result and completing (its lease taken
// over) finds the result saved and announces it then, so a scan is
// announced once, however often its job runs.
func (s *Service) withJob(ctx context.Context, evs *[]meta.Event) bool {
	in, ok := s.stores.Results.(eventsIn)
	return ok && jobs.OnComplete(ctx, func(ctx context.Context, tx meta.Tx) error {
		return in.AppendEventsIn(ctx, tx, *evs)
	})
}

// saveScan saves a scan's result, and with it, in the same transaction,
// the SBOM sb (if not nil): stored reports whether the SBOM went in. If
// that transaction fails, the result is saved on its own, and the caller
// attaches the SBOM as it does for a scan known already (attachSBOM).
func (s *Service) saveScan(ctx context.Context, res meta.ScanResult, sb *sbom) (stored bool, err error) {
	if sb != nil {
		err := s.stores.Results.SaveScan(ctx, res, s.storeIn(sb))
		if err == nil {
			return true, nil
		}
		s.log.Warn("store a scan with its SBOM; storing them one after the other", "digest", res.Digest, "err", err)
		if uerr := s.unplace(context.WithoutCancel(ctx), sb); uerr != nil {
			s.log.Warn("delete the SBOM's blobs placed for the failed transaction", "digest", res.Digest, "err", uerr)
		}
	}
	return false, s.stores.Results.SaveScan(ctx, res)
}

// index reads the manifest's layers (each from the cache when it was
// indexed before) and merges them.
func (s *Service) index(ctx context.Context, m meta.Manifest) (meta.ScanResult, *Report, []Finding, error) {
	res := meta.ScanResult{Digest: m.Digest.String(), IndexerVersion: index.IndexerVersion}
	man, err := oci.ParseManifest(m.Content, m.MediaType)
	if err != nil {
		res.Status, res.Reason = meta.ScanUnsupported, "manifest: "+err.Error()
		return res, nil, nil, nil
	}
	if man.Config == nil || (man.Config.MediaType != oci.MediaTypeImageConfig && man.Config.MediaType != oci.MediaTypeDockerConfig) || man.ArtifactType != "" {
		res.Status, res.Reason = meta.ScanUnsupported, "not a container image (an artifact)"
		return res, nil, nil, nil
	}
	if len(man.Layers) > maxImageLayers {
		res.Status, res.Reason = meta.ScanUnsupported, fmt.Sprintf("%d layers, over the %d this scanner reads", len(man.Layers), maxImageLayers)
		return res, nil, nil, nil
	}
	layers := make([]index.LayerResult, 0, len(man.Layers))
	rep := &Report{Layers: []string{}}
	// A layer the manifest lists again is read once: a manifest may list
	// one layer thousands of times.
	seen := map[digest.Digest]index.LayerResult{}
	// The packages of the image's layers, each layer counted once: what
	// Merge, the report and the stored rows could hold at most.
	packages, maxPackages := 0, s.maxImagePackages
	if maxPackages <= 0 {
		maxPackages = maxImagePackages
	}
	// The bytes those layers' results record (paths, packages), each
	// bounded on its own: all are held until the scan is stored.
	recorded, maxRecorded := int64(0), s.maxImageRecorded
	if maxRecorded <= 0 {
		maxRecorded = maxImageRecordedBytes
	}
	for _, l := range man.Layers {
		lr, ok := seen[l.Digest]
		if !ok {
			var entry *meta.LayerIndexEntry
			lr, entry, err = s.layer(ctx, l)
			if err != nil {
				var nl *layerNotStoredError
				if errors.As(err, &nl) {
					nl.stored = m.CreatedAt
				}
				return res, nil, nil, err
			}
			if entry != nil {
				res.Layers = append(res.Layers, *entry)
			}
			seen[l.Digest] = lr
			if packages += len(lr.Packages); packages > maxPackages {
				res.Status, res.Reason = meta.ScanUnsupported, fmt.Sprintf("over %d packages in the image's layers (%d in its first %d distinct layers), over the %d this scanner reads in one image",
					maxPackages, packages, len(seen), maxPackages)
				return res, nil, nil, nil
			}
			if recorded += index.RecordedBytes(lr); recorded > maxRecorded {
				res.Status, res.Reason = meta.ScanUnsupported, fmt.Sprintf("over %d bytes of paths and packages recorded in the image's layers (%d in its first %d distinct layers), over what this scanner holds for one image",
					maxRecorded, recorded, len(seen))
				return res, nil, nil, nil
			}
		}
		if lr.Status != index.StatusIndexed {
			res.Status, res.Reason = meta.ScanUnsupported, fmt.Sprintf("layer %s: %s", l.Digest, lr.Reason)
			return res, nil, nil, nil
		}
		layers = append(layers, lr)
		rep.Layers = append(rep.Layers, l.Digest.String())
		rep.Warnings = append(rep.Warnings, lr.Warnings...)
	}
	img := index.Merge(layers)
	rep.OSRelease = img.OSRelease
	rep.ContentSets = img.ContentSets
	rep.Gaps = img.Gaps
	rep.Packages = img.Packages
	if rep.Packages == nil {
		rep.Packages = []index.Package{}
	}
	if eco, ok := osv.OSEcosystem(img.OSRelease); ok {
		rep.Ecosystem = eco
	}
	setReport(&res, rep)
	res.Status = meta.ScanScanned
	res.Packages = scanPackages(rep)
	return res, rep, nil, nil
}

// maxImageLayers bounds the layers of one image the scanner reads.
const maxImageLayers = 1000

// maxImagePackages bounds the packages the layers of one image may bring,
// each layer counted once (a layer may bring 200,000): past it the image
// is unsupported, rather than held in memory and stored whole.
const maxImagePackages = 500_000

// maxImageRecordedBytes bounds the bytes the results of one image's
// distinct layers record together (index.RecordedBytes): each is bounded
// to 64 MiB, and an image has up to maxImageLayers of them, all held at
// once while it is scanned. Past it the image is unsupported.
const maxImageRecordedBytes = 256 << 20

// layer returns a layer's index result, from the cache or by reading it;
// a result just read is also returned as the entry to cache (stored with
// the scan, in its transaction).
func (s *Service) layer(ctx context.Context, d oci.Descriptor) (index.LayerResult, *meta.LayerIndexEntry, error) {
	limits := effectiveLimits(s.opts.Limits)
	cached, err := s.stores.Results.LayerIndex(ctx, d.Digest.String())
	if err == nil && cached.Version == index.IndexerVersion {
		// Unless a limit shaped it and the limits were raised since.
		if lr, ok := reusable(cached.Result, limits); ok {
			return lr, nil, nil
		}
	} else if err != nil && !errors.Is(err, meta.ErrNotFound) {
		return index.LayerResult{}, nil, err
	}
	var lr index.LayerResult
	if !index.IsLayerMediaType(d.MediaType) {
		// What this manifest says, not what the bytes are: not cached by
		// the blob's digest, which other images' manifests name too (one
		// tenant's descriptor must not make another's layer unscanned).
		lr, err = index.IndexLayer(ctx, d.Digest.String(), nil, d.MediaType, d.Size, s.opts.Limits)
		return lr, nil, err
	}
	// The stored blob's own size, not the descriptor's claim.
	fi, err := s.driver.Stat(ctx, storage.BlobPath(d.Digest))
	if errors.Is(err, storage.ErrNotFound) && oci.IsForeignLayer(d.MediaType) {
		// A foreign (non-distributable) layer, such as a Windows base
		// layer, is pushed without its bytes: they never arrive, and
		// nothing is known of its packages (not cached: another
		// manifest may name the same digest with its bytes stored).
		return index.LayerResult{Digest: d.Digest.String(), Status: index.StatusUnsupported,
			Reason: "a foreign (non-distributable) layer whose bytes are not stored in this registry"}, nil, nil
	}
	if errors.Is(err, storage.ErrNotFound) {
		// A pull-through cache stores a manifest before its layers: the
		// scan waits for them (waitForLayer).
		return index.LayerResult{}, nil, &layerNotStoredError{layer: d.Digest, err: err}
	}
	if err != nil {
		return index.LayerResult{}, nil, fmt.Errorf("open layer %s: %w", d.Digest, err)
	}
	if limit := s.opts.Limits.MaxLayerBytes; limit > 0 && fi.Size > limit {
		lr, err = index.IndexLayer(ctx, d.Digest.String(), nil, d.MediaType, fi.Size, s.opts.Limits)
	} else {
		rc, rerr := s.driver.Reader(ctx, storage.BlobPath(d.Digest), 0)
		if errors.Is(rerr, storage.ErrNotFound) {
			return index.LayerResult{}, nil, &layerNotStoredError{layer: d.Digest, err: rerr}
		}
		if rerr != nil {
			return index.LayerResult{}, nil, fmt.Errorf("open layer %s: %w", d.Digest, rerr)
		}
		lr, err = index.IndexLayer(ctx, d.Digest.String(), rc, d.MediaType, fi.Size, s.opts.Limits)
		rc.Close()
	}
	if err != nil {
		return index.LayerResult{}, nil, fmt.Errorf("index layer %s: %w", d.Digest, err)
	}
	b, err := encodeCachedLayer(lr, limits)
	if err != nil {
		return index.LayerResult{}, nil, fmt.Errorf("encode layer %s: %w", d.Digest, err)
	}
	return lr, &meta.LayerIndexEntry{Digest: d.Digest.String(), Version: index.IndexerVersion, Status: lr.Status, Result: b}, nil
}

func decodeReport(b []byte) (*Report, error) {
	var r Report
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode scan report: %w", err)
	}
	return &r, nil
}

// reportCoverage computes the data coverage of a scanned image and logs a
// warning when data is missing or stale.
func (s *Service) reportCoverage(ctx context.Context, repo, dgst string, rep *Report) (*DataCoverage, error) {
	ds, err := s.dataSources(ctx)
	if err != nil {
		return nil, err
	}
	cov, err := ds.coverage(ctx, rep)
	if err != nil {
		return nil, err
	}
	s.warnCoverage(repo, dgst, cov)
	return &cov, nil
}

// announce makes the events of a scan in one repository: manifest_scanned
// always, and vulnerability_found with the most severe of the findings
// when there are any.
func (s *Service) announce(ctx context.Context, repo, dgst, status, reason string, rep *Report, findings []Finding, cov *DataCoverage) []meta.Event {
	tags := s.tagsIn(ctx, repo, dgst)
	counts := map[string]int{}
	for _, f := range findings {
		counts[f.Assessment.Severity]++
	}
	data := map[string]any{"digest": dgst, "tags": tags, "status": status, "vulnerabilities": counts}
	if reason != "" {
		data["reason"] = reason
	}
	if rep != nil {
		data["packages"] = len(rep.Packages)
		if rep.Ecosystem != "" {
			data["distribution"] = rep.Ecosystem
		}
	}
	if cov != nil {
		data["vulnerability_data"] = map[string]any{"complete": cov.Complete, "missing": cov.Missing, "stale": cov.Stale}
	}
	evs := []meta.Event{{Kind: meta.EventManifestScanned, Repository: repo, Actor: Actor, Data: mustJSON(data)}}
	if len(findings) > 0 {
		evs = append(evs, meta.Event{Kind: meta.EventVulnerabilityFound, Repository: repo, Actor: Actor, Data: mustJSON(vulnEventData(dgst, tags, findings))})
	}
	return evs
}

// vulnEventData is Quay's vulnerability_found data: the most severe of
// the findings as "vulnerability", and (Berth's addition) all of them.
func vulnEventData(dgst string, tags []string, findings []Finding) map[string]any {
	sorted := append([]Finding(nil), findings...)
	sort.SliceStable(sorted, func(i, j int) bool {
		return osv.SeverityRank(sorted[i].Assessment.Severity) > osv.SeverityRank(sorted[j].Assessment.Severity)
	})
	top := sorted[0]
	all := make([]map[string]any, 0, len(sorted))
	seen := map[string]bool{}
	for _, f := range sorted {
		if seen[f.Record.ID+"|"+f.Key.Name] {
			continue
		}
		seen[f.Record.ID+"|"+f.Key.Name] = true
		all = append(all, map[string]any{"id": f.Record.ID, "priority": f.Assessment.Severity, "package": f.Key.Name,
			"version": f.Key.Version, "fixed_by": f.Match.FixedBy})
	}
	return map[string]any{
		"digest": dgst,
		"tags":   tags,
		"vulnerability": map[string]any{
			"id": top.Record.ID, "description": top.Record.Description(), "link": top.Record.Link(),
			"priority": top.Assessment.Severity, "has_fix": top.Match.FixedBy != "",
		},
		"vulnerabilities": all,
	}
}

func (s *Service) tagsIn(ctx context.Context, repo, dgst string) []string {
	holders, err := s.stores.Results.ManifestHolders(ctx, dgst)
	if err != nil {
		s.log.Warn("list tags of scanned manifest", "digest", dgst, "err", err)
	}
	for _, h := range holders {
		if h.Repository == repo {
			return h.Tags
		}
	}
	return []string{}
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err) // only maps of strings, numbers and lists
	}
	return b
}
