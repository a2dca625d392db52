package scan

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/scan/osv"
)

// SetMaxImagePackages lowers the bound on the packages of one image's
// layers (maxImagePackages), for tests.
func SetMaxImagePackages(s *Service, n int) { s.maxImagePackages = n }

// SetMaxImageRecordedBytes lowers the bound on the bytes the results of
// one image's layers record (maxImageRecordedBytes), for tests.
func SetMaxImageRecordedBytes(s *Service, n int64) { s.maxImageRecorded = n }

// CoverageBothWays is the data coverage of a scanned manifest computed
// from its whole report as it was before coverage summaries
// (legacyCoverage), and from the summary stored with the report, against
// the same advisory sources; ErrNotScanned without a scanned report, an
// error when the report was stored without a readable summary by this
// indexer (a test may store an older indexer's report without one: its
// summary is then the report's).
func CoverageBothWays(ctx context.Context, s *Service, digest string) (legacy, summarized DataCoverage, err error) {
	st, err := s.stores.Results.ManifestScan(ctx, digest)
	if errors.Is(err, meta.ErrNotFound) || (err == nil && st.Status != meta.ScanScanned) {
		return DataCoverage{}, DataCoverage{}, ErrNotScanned
	}
	if err != nil {
		return DataCoverage{}, DataCoverage{}, err
	}
	rep, err := decodeReport(st.Report)
	if err != nil {
		return DataCoverage{}, DataCoverage{}, err
	}
	sums, err := s.stores.Summaries.ScanSummaries(ctx, []string{digest})
	if err != nil {
		return DataCoverage{}, DataCoverage{}, err
	}
	sum, ok := decodeSummary(sums[digest].Summary)
	if !ok && st.IndexerVersion != index.IndexerVersion {
		sum, ok = decodeSummary(encodeSummary(rep))
	}
	if !ok {
		return DataCoverage{}, DataCoverage{}, fmt.Errorf("scan of %s stored without a coverage summary (%q)", digest, sums[digest].Summary)
	}
	ds, err := s.dataSources(ctx)
	if err != nil {
		return DataCoverage{}, DataCoverage{}, err
	}
	if legacy, err = ds.legacyCoverage(ctx, rep); err != nil {
		return DataCoverage{}, DataCoverage{}, err
	}
	summarized, err = ds.evaluate(ctx, sum)
	return legacy, summarized, err
}

// legacyRedHatGap is redHatGap as it was before coverage summaries.
func (ds *dataSources) legacyRedHatGap(ctx context.Context, rep *Report) (string, error) {
	if len(rep.ContentSets) == 0 {
		return "the image names no content sets (root/buildinfo/content_manifests/*.json or usr/share/buildinfo/content-sets.json), and Red Hat's advisories are keyed by the CPEs of content sets", nil
	}
	ok, err := ds.hasCPEMapping(ctx)
	if err != nil {
		return "", err
	}
	if !ok {
		return "Red Hat's content-set mapping (repository-to-cpe.json) is not imported", nil
	}
	if len(rep.CPEs) == 0 {
		return fmt.Sprintf("the content-set mapping names none of the image's content sets (%s)", strings.Join(rep.ContentSets, ", ")), nil
	}
	return RedHatDataGap(rep, func(e string) (bool, error) { return ds.hasRelease(ctx, e) })
}

// legacyCoverage is the coverage of a report as it was computed before
// coverage summaries, from the whole report (kept to compare).
func (ds *dataSources) legacyCoverage(ctx context.Context, rep *Report) (DataCoverage, error) {
	type group struct {
		release  string
		packages int
		os       bool
		misfit   string // OS packages of a kind the distribution does not use: why
		gap      string // the image's OS packages are not all known: why
	}
	groups := map[string]*group{}
	get := func(base, release string, os bool) *group {
		g := groups[base]
		if g == nil {
			g = &group{release: release, os: os}
			groups[base] = g
		}
		return g
	}
	// The group of the distribution's packages.
	id := osReleaseID(rep)
	osBase, osRelease := id, ""
	if osBase == "" {
		osBase = "unknown distribution"
	}
	if rep.Ecosystem != "" {
		osBase = osv.BaseEcosystem(rep.Ecosystem)
		if strings.Contains(rep.Ecosystem, ":") {
			osRelease = rep.Ecosystem
		}
	}
	kind := osv.OSPackageKind(rep.Ecosystem)
	for _, p := range rep.Packages {
		switch p.Kind {
		case index.KindDpkg, index.KindApk, index.KindRPM:
			if rep.Ecosystem != "" && kind != "" && p.Kind != kind {
				// Matched under the distribution's scheme, they would match
				// nothing, or the wrong packages: not matched at all.
				g := get(p.Kind+" packages", "", true)
				g.packages++
				g.misfit = fmt.Sprintf("%s packages in an image whose os-release names %s (%s), whose advisories name %s packages: Berth does not match them",
					p.Kind, id, rep.Ecosystem, kind)
				continue
			}
			get(osBase, osRelease, true).packages++
		default:
			if eco := osv.LanguageEcosystem(p.Kind); eco != "" && p.Version != "" {
				get(eco, "", false).packages++
			}
		}
	}
	// An image with an os-release and no package database at all is not a
	// gap: ubi-micro and scratch images that copy an os-release have
	// none, and no setting or rescan could ever complete them. A database
	// a layer had and a later one deleted, or one not read, is (Gaps).
	if len(rep.Gaps) > 0 {
		get(osBase, osRelease, true).gap = gapsReason(rep.Gaps)
	}
	cov := DataCoverage{Complete: true, Missing: []string{}, Stale: []string{}, Ecosystems: []EcosystemData{}}
	bases := make([]string, 0, len(groups))
	for b := range groups {
		bases = append(bases, b)
	}
	sort.Strings(bases)
	for _, base := range bases {
		g := groups[base]
		e := EcosystemData{Ecosystem: base, Release: g.release, Packages: g.packages}
		name := base
		if g.release != "" {
			name = g.release
		}
		src, imported := ds.sources[base]
		switch {
		case g.misfit != "":
			e.Status, e.Reason = DataUnsupported, g.misfit
		case g.os && rep.Ecosystem == "":
			e.Status, e.Reason = DataUnsupported, fmt.Sprintf("Berth cannot match the packages of this distribution (os-release ID %q)", base)
		case !imported || src.Records == 0:
			e.Status, e.Reason = DataMissing, fmt.Sprintf("no advisories imported for %s", base)
		default:
			e.Records = src.Records
			at := src.UpdatedAt
			e.UpdatedAt = &at
			e.Status = DataCurrent
			if g.os && base != redHat {
				// The packages are matched under rep.Ecosystem exactly (and
				// the bare base for a release): data for other releases says
				// nothing about this one.
				ok, err := ds.hasRelease(ctx, rep.Ecosystem)
				if err == nil && !ok && g.release != "" {
					ok, err = ds.hasRelease(ctx, base)
				}
				if err != nil {
					return DataCoverage{}, err
				}
				switch {
				case ok:
				case g.release != "":
					e.Status, e.Reason = DataMissing, fmt.Sprintf("the %d advisories imported for %s name no package of %s", src.Records, base, g.release)
				default:
					e.Status, e.Reason = DataMissing, fmt.Sprintf("the image's os-release names no release of %s (no VERSION_ID), and none of the %d advisories imported for %s is for bare %q: "+
						"they name releases", base, src.Records, base, base)
				}
			}
			if g.os && base == redHat {
				gap, err := ds.legacyRedHatGap(ctx, rep)
				if err != nil {
					return DataCoverage{}, err
				}
				if gap != "" {
					e.Status, e.Reason = DataMissing, gap
				}
			}
			if age := ds.now.Sub(src.UpdatedAt); e.Status == DataCurrent && ds.stale > 0 && age > ds.stale {
				e.Status, e.Reason = DataStale, fmt.Sprintf("advisories last updated %s ago (%s), more than %s", roundAge(age),
					src.UpdatedAt.Format(time.RFC3339), roundAge(ds.stale))
			}
		}
		if g.gap != "" {
			reason := g.gap
			if e.Status == DataMissing || e.Status == DataUnsupported {
				reason += "; besides, " + e.Reason
			}
			e.Status, e.Reason = DataUnsupported, reason
		}
		switch e.Status {
		case DataMissing, DataUnsupported:
			cov.Complete = false
			cov.Missing = append(cov.Missing, name)
		case DataStale:
			cov.Complete = false // stale data is not complete (as evaluate says)
			cov.Stale = append(cov.Stale, name)
		}
		cov.Ecosystems = append(cov.Ecosystems, e)
	}
	return cov, nil
}
