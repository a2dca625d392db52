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

// DefaultStaleAfter is the age past which imported advisories of an
// ecosystem are called stale (scan.vulndb.staleAfter): OSV changes every
// day, so a week-old copy misses the week's advisories.
const DefaultStaleAfter = 7 * 24 * time.Hour

// redHat is the base ecosystem of Red Hat's advisories.
const redHat = "Red Hat"

// The states of an ecosystem's advisory data (EcosystemData.Status).
const (
	// DataCurrent: advisories were imported, or confirmed unchanged by a
	// fetch, within the staleness limit.
	DataCurrent = "current"
	// DataStale: advisories were imported, but longer ago than the limit:
	// still matched, but the image's coverage is not complete.
	DataStale = "stale"
	// DataMissing: nothing was imported for the ecosystem, or nothing
	// names the image's release of it.
	DataMissing = "missing"
	// DataUnsupported: the image has OS packages of a distribution Berth
	// does not know how to match, or of a kind its distribution does not
	// use, or its OS packages are not all known (a package database
	// unread or deleted, or none found: Report.Gaps).
	DataUnsupported = "unsupported"
)

// EcosystemData is the advisory data behind one ecosystem of an image.
type EcosystemData struct {
	// Ecosystem is OSV's base name ("Debian", "Go", "Red Hat"); for
	// unsupported packages, the distribution's os-release ID.
	Ecosystem string `json:"ecosystem"`
	// Release is the ecosystem as the image's OS packages are matched
	// ("Debian:12"), when it carries a release.
	Release string `json:"release,omitempty"`
	// Packages counts the image's packages in the ecosystem.
	Packages int    `json:"packages"`
	Status   string `json:"status"`
	// Records counts the imported advisories of the base ecosystem.
	Records int64 `json:"records"`
	// UpdatedAt is when the ecosystem was last imported, or confirmed
	// unchanged by `berth admin vulndb fetch`.
	UpdatedAt *time.Time `json:"updated_at,omitempty"`
	Reason    string     `json:"reason,omitempty"`
}

// DataCoverage says whether an image's vulnerability report can be
// complete: which ecosystems its packages are in, and whether current
// advisories were imported for each. A report without vulnerabilities
// is "clean" only when Complete is true. It is Berth's addition to the
// security endpoint ("vulnerability_data"), the manifest_scanned event's,
// and the fact a gate consumes.
type DataCoverage struct {
	// Complete is true when every ecosystem of the image had current
	// advisory data: none is missing, unsupported or stale (data older
	// than the staleness limit is still matched, but a report without
	// findings on it is not clean).
	Complete bool `json:"complete"`
	// Missing lists the ecosystems (with release when known) that had no
	// data, or that Berth cannot match.
	Missing []string `json:"missing"`
	// Stale lists the ecosystems whose data is older than the limit (each
	// makes the coverage incomplete, as Missing's do).
	Stale      []string        `json:"stale"`
	Ecosystems []EcosystemData `json:"ecosystems"`
}

// Reason is a one-line explanation of what is missing or stale; "" when
// the data is complete and current.
func (c DataCoverage) Reason() string {
	var parts []string
	for _, e := range c.Ecosystems {
		name := e.Ecosystem
		if e.Release != "" {
			name = e.Release
		}
		switch e.Status {
		case DataMissing, DataUnsupported:
			parts = append(parts, fmt.Sprintf("%s (%d packages): %s", name, e.Packages, e.Reason))
		case DataStale:
			parts = append(parts, fmt.Sprintf("%s: %s", name, e.Reason))
		}
	}
	return strings.Join(parts, "; ")
}

// FetchHint names the command that would fill what is missing or stale.
func (c DataCoverage) FetchHint() string {
	seen := map[string]bool{}
	var names []string
	for _, e := range c.Ecosystems {
		if (e.Status == DataMissing || e.Status == DataStale) && !seen[e.Ecosystem] {
			seen[e.Ecosystem] = true
			names = append(names, quoteArg(e.Ecosystem))
		}
	}
	if len(names) == 0 {
		return ""
	}
	return "berth admin vulndb fetch " + strings.Join(names, " ")
}

func quoteArg(s string) string {
	if strings.ContainsAny(s, " '\"") {
		return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
	}
	return s
}

// dataSources is the import state the coverage of several images is
// computed from: read once per request.
type dataSources struct {
	vulns    Vulns
	now      time.Time
	stale    time.Duration
	sources  map[string]meta.VulnSource
	releases map[string]bool // exact ecosystem → any advisory names it
	cpeMap   *bool           // Red Hat's content-set mapping imported (read once, when needed)
}

func (s *Service) dataSources(ctx context.Context) (*dataSources, error) {
	srcs, err := s.stores.Vulns.VulnSources(ctx)
	if err != nil {
		return nil, err
	}
	ds := &dataSources{vulns: s.stores.Vulns, now: time.Now(), stale: s.opts.StaleAfter, sources: map[string]meta.VulnSource{}, releases: map[string]bool{}}
	for _, src := range srcs {
		ds.sources[src.Ecosystem] = src
	}
	return ds, nil
}

func (ds *dataSources) hasCPEMapping(ctx context.Context) (bool, error) {
	if ds.cpeMap == nil {
		_, ok, err := ds.vulns.CPEMappingState(ctx)
		if err != nil {
			return false, err
		}
		ds.cpeMap = &ok
	}
	return *ds.cpeMap, nil
}

// redHatGap says why the RPMs of a Red Hat image cannot be matched
// although Red Hat advisories were imported: those are keyed by the CPEs
// of the image's content sets.
func (ds *dataSources) redHatGap(ctx context.Context, sum *coverageSummary) (string, error) {
	rh := sum.RedHat
	if rh == nil {
		rh = &redHatSummary{}
	}
	if len(rh.ContentSets) == 0 {
		return "the image names no content sets (root/buildinfo/content_manifests/*.json or usr/share/buildinfo/content-sets.json), and Red Hat's advisories are keyed by the CPEs of content sets", nil
	}
	ok, err := ds.hasCPEMapping(ctx)
	if err != nil {
		return "", err
	}
	if !ok {
		return "Red Hat's content-set mapping (repository-to-cpe.json) is not imported", nil
	}
	if len(rh.CPEs) == 0 {
		return fmt.Sprintf("the content-set mapping names none of the image's content sets (%s)", strings.Join(rh.ContentSets, ", ")), nil
	}
	// The mapping is there, but do any advisories name the image's CPE
	// ecosystems (or bare "Red Hat")? Records for other RHEL streams do
	// not cover this image.
	return redHatDataGap(sum.Ecosystem, rh.RPMs, rh.ContentSets, rh.CPEs, func(e string) (bool, error) { return ds.hasRelease(ctx, e) })
}

func (ds *dataSources) hasRelease(ctx context.Context, eco string) (bool, error) {
	if v, ok := ds.releases[eco]; ok {
		return v, nil
	}
	v, err := ds.vulns.HasVulnEcosystem(ctx, eco)
	if err != nil {
		return false, err
	}
	ds.releases[eco] = v
	return v, nil
}

// coverage computes the data coverage of a scanned image's report: that
// of its summary.
func (ds *dataSources) coverage(ctx context.Context, rep *Report) (DataCoverage, error) {
	return ds.evaluate(ctx, summarize(rep))
}

// osReleaseID is the report's os-release ID, in lower case; "" when none.
func osReleaseID(rep *Report) string {
	return strings.ToLower(strings.Trim(strings.TrimSpace(rep.OSRelease["ID"]), `"'`))
}

// maxGapsNamed bounds the package databases a coverage reason names.
const maxGapsNamed = 3

// gapsReason says which OS package databases of the image are unknown,
// and why.
func gapsReason(gaps []index.Gap) string {
	parts := make([]string, 0, min(len(gaps), maxGapsNamed))
	for i, g := range gaps {
		if i == maxGapsNamed {
			parts = append(parts, fmt.Sprintf("and %d more", len(gaps)-i))
			break
		}
		where := ""
		if g.Layer != "" {
			where = " (layer " + g.Layer + ")"
		}
		parts = append(parts, fmt.Sprintf("/%s%s: %s", g.Path, where, g.Reason))
	}
	return "OS packages unknown, the report may miss some: " + strings.Join(parts, "; ")
}

// roundAge renders a duration in days past two days, else in hours.
func roundAge(d time.Duration) string {
	if d >= 48*time.Hour {
		return fmt.Sprintf("%d days", int(d/(24*time.Hour)))
	}
	return d.Round(time.Minute).String()
}

// mergeCoverage is the coverage of an index: complete when every
// platform's is; each ecosystem listed once, with the largest package
// count among the platforms.
func mergeCoverage(parts []DataCoverage) DataCoverage {
	out := DataCoverage{Complete: true, Missing: []string{}, Stale: []string{}, Ecosystems: []EcosystemData{}}
	at := map[[2]string]int{}
	seen := map[string]bool{}
	for _, c := range parts {
		out.Complete = out.Complete && c.Complete
		for _, m := range c.Missing {
			if !seen["m"+m] {
				seen["m"+m] = true
				out.Missing = append(out.Missing, m)
			}
		}
		for _, s := range c.Stale {
			if !seen["s"+s] {
				seen["s"+s] = true
				out.Stale = append(out.Stale, s)
			}
		}
		for _, e := range c.Ecosystems {
			k := [2]string{e.Ecosystem, e.Release}
			if i, ok := at[k]; ok {
				out.Ecosystems[i].Packages = max(out.Ecosystems[i].Packages, e.Packages)
				continue
			}
			at[k] = len(out.Ecosystems)
			out.Ecosystems = append(out.Ecosystems, e)
		}
	}
	sort.Strings(out.Missing)
	sort.Strings(out.Stale)
	sort.SliceStable(out.Ecosystems, func(i, j int) bool {
		a, b := out.Ecosystems[i], out.Ecosystems[j]
		return a.Ecosystem+"\x00"+a.Release < b.Ecosystem+"\x00"+b.Release
	})
	return out
}

// Coverage is the data coverage of a scanned image manifest, by digest:
// what a gate reads before trusting a report without vulnerabilities.
// ErrNotScanned when the manifest has no scanned report.
func (s *Service) Coverage(ctx context.Context, digest string) (DataCoverage, error) {
	st, err := s.stores.Results.ManifestScan(ctx, digest)
	if errors.Is(err, meta.ErrNotFound) || (err == nil && st.Status != meta.ScanScanned) {
		return DataCoverage{}, ErrNotScanned
	}
	if err != nil {
		return DataCoverage{}, err
	}
	rep, err := decodeReport(st.Report)
	if err != nil {
		return DataCoverage{}, err
	}
	ds, err := s.dataSources(ctx)
	if err != nil {
		return DataCoverage{}, err
	}
	return ds.coverage(ctx, rep)
}

// ErrNotScanned is returned for a manifest that has no scanned report.
var ErrNotScanned = errors.New("manifest not scanned")

// WarnIfNoData logs, at start, a warning when the vulnerability database
// is empty, or has no data, or stale data, for an ecosystem of the stored
// images: scans then report fewer vulnerabilities than there are.
func (s *Service) WarnIfNoData(ctx context.Context) error {
	ds, err := s.dataSources(ctx)
	if err != nil {
		return err
	}
	ecos, err := s.stores.Vulns.PackageEcosystems(ctx)
	if err != nil {
		return err
	}
	seen := map[string]bool{}
	var missing, stale []string
	for _, eco := range ecos {
		base := osv.BaseEcosystem(eco)
		if seen[base] {
			continue
		}
		seen[base] = true
		src, ok := ds.sources[base]
		switch {
		case !ok || src.Records == 0:
			missing = append(missing, base)
		case ds.stale > 0 && ds.now.Sub(src.UpdatedAt) > ds.stale:
			stale = append(stale, base)
		}
	}
	hint := func(ecos []string, status string) string {
		return DataCoverage{Ecosystems: statusOf(ecos, status)}.FetchHint()
	}
	// Empty: no ecosystem imported, nor any record (loose records cover
	// no ecosystem, but are matched).
	empty := len(ds.sources) == 0
	if empty {
		v, err := s.stores.Vulns.VulnDBVersion(ctx)
		if err != nil {
			return err
		}
		empty = v == 0
	}
	switch {
	case empty && len(missing) == 0:
		s.log.Warn("the vulnerability database is empty: scans find packages but no vulnerabilities until advisories are imported;" +
			" run `berth admin vulndb fetch ECOSYSTEM...` (or `berth admin vulndb import` offline), or set scan.vulndb.updateInterval")
	case empty:
		s.log.Warn("the vulnerability database is empty: scans find packages but no vulnerabilities until advisories are imported;"+
			" run `berth admin vulndb fetch` (or `berth admin vulndb import` offline), or set scan.vulndb.updateInterval",
			"ecosystems", missing, "fix", hint(missing, DataMissing))
	case len(missing) > 0:
		s.log.Warn("no vulnerability data for ecosystems of stored images: their scans report no vulnerabilities there",
			"ecosystems", missing, "fix", hint(missing, DataMissing))
	}
	if len(stale) > 0 {
		s.log.Warn("stale vulnerability data for ecosystems of stored images", "ecosystems", stale, "older_than", s.opts.StaleAfter,
			"fix", hint(stale, DataStale))
	}
	return nil
}

func statusOf(ecos []string, status string) []EcosystemData {
	out := make([]EcosystemData, len(ecos))
	for i, e := range ecos {
		out[i] = EcosystemData{Ecosystem: e, Status: status}
	}
	return out
}

// warnCoverage logs a scan's missing or stale data.
func (s *Service) warnCoverage(repo, dgst string, cov DataCoverage) {
	if cov.Complete && len(cov.Stale) == 0 {
		return
	}
	s.log.Warn("image scanned without current vulnerability data: its report may miss vulnerabilities",
		"repository", repo, "digest", dgst, "missing", cov.Missing, "stale", cov.Stale, "fix", cov.FetchHint())
}
