package scan

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/scan/osv"
)

// SecurityInfo is Quay's answer to GET .../manifest/{digest}/security:
// status and, once scanned, the image's packages ("Features") with their
// vulnerabilities. Reason (why unsupported or failed), Manifests (the
// platforms of an index) and VulnerabilityData (whether advisories were
// imported for the image's ecosystems) are Berth's additions.
type SecurityInfo struct {
	Status            string             `json:"status"`
	Data              *SecurityData      `json:"data"`
	Reason            string             `json:"reason,omitempty"`
	Manifests         []PlatformSecurity `json:"manifests,omitempty"`
	VulnerabilityData *DataCoverage      `json:"vulnerability_data,omitempty"`
}

// PlatformSecurity is the scan state of one platform of an index.
type PlatformSecurity struct {
	Digest            string        `json:"digest"`
	Platform          *oci.Platform `json:"platform,omitempty"`
	Status            string        `json:"status"`
	Reason            string        `json:"reason,omitempty"`
	VulnerabilityData *DataCoverage `json:"vulnerability_data,omitempty"`
	// Data is the platform's report, when a client filled it in (berth
	// vulns --json); the API's answer for an index leaves it out.
	Data *SecurityData `json:"data,omitempty"`
}

// SecurityData wraps the layer, as Quay's API does.
type SecurityData struct {
	Layer SecurityLayer `json:"Layer"`
}

// SecurityLayer is the image as Clair v2 described it: one "layer" named
// by the manifest digest.
type SecurityLayer struct {
	Name             string    `json:"Name"`
	ParentName       string    `json:"ParentName"`
	NamespaceName    string    `json:"NamespaceName"`
	IndexedByVersion int       `json:"IndexedByVersion"`
	Features         []Feature `json:"Features"`
	// ContentSets and CPEs (Berth's additions) are the image's Red Hat
	// content sets and the CPEs they map to, whose ecosystems its RPMs
	// were matched in.
	ContentSets []string `json:"ContentSets,omitempty"`
	CPEs        []string `json:"CPEs,omitempty"`
}

// Feature is a package of the image.
type Feature struct {
	Name          string    `json:"Name"`
	VersionFormat string    `json:"VersionFormat"`
	NamespaceName string    `json:"NamespaceName"`
	AddedBy       string    `json:"AddedBy"`
	Version       string    `json:"Version"`
	BaseScores    []float64 `json:"BaseScores"`
	CVEIds        []string  `json:"CVEIds"`
	// Vulnerabilities is always sent, as Quay does: [] when none
	// affects the package; null when they were not asked for
	// (vulnerabilities=false).
	Vulnerabilities []Vulnerability `json:"Vulnerabilities"`
}

// Vulnerability is one advisory affecting a feature.
type Vulnerability struct {
	Name          string       `json:"Name"`
	Severity      string       `json:"Severity"`
	NamespaceName string       `json:"NamespaceName"`
	Link          string       `json:"Link"`
	FixedBy       string       `json:"FixedBy"`
	Description   string       `json:"Description"`
	Metadata      VulnMetadata `json:"Metadata"`
}

// VulnMetadata is Quay's metadata of a vulnerability; Reclassified is
// Berth's addition, present when the NVD score overrode the vendor's
// severity.
type VulnMetadata struct {
	UpdatedBy     string        `json:"UpdatedBy"`
	RepoName      *string       `json:"RepoName"`
	RepoLink      *string       `json:"RepoLink"`
	DistroName    string        `json:"DistroName"`
	DistroVersion string        `json:"DistroVersion"`
	NVD           NVD           `json:"NVD"`
	Reclassified  *Reclassified `json:"Reclassified,omitempty"`
	Aliases       []string      `json:"Aliases,omitempty"`
}

// NVD holds the CVSS data of a vulnerability: CVSSv3 (Quay's) only from
// a CVSS v3 vector; CVSSv4 and CVSSv2 are Berth's additions, the v4
// vector when the record has one, the v2 vector when it has no v3 or v4.
type NVD struct {
	CVSSv3 *CVSSv3 `json:"CVSSv3,omitempty"`
	CVSSv4 *CVSSv3 `json:"CVSSv4,omitempty"`
	CVSSv2 *CVSSv3 `json:"CVSSv2,omitempty"`
}

// CVSSv3 is a vector and its computed base score.
type CVSSv3 struct {
	Vectors string  `json:"Vectors"`
	Score   float64 `json:"Score"`
}

// Reclassified says a vendor severity was overridden: from what, to what,
// and by whose score.
type Reclassified struct {
	From string `json:"From"`
	By   string `json:"By"`
}

// versionFormat is Clair's version format name per package kind.
var versionFormat = map[string]string{"dpkg": "dpkg", "apk": "apk", "rpm": "rpm", "go": "semver", "pypi": "pep440", "npm": "semver", "maven": "maven"}

// Security answers the security endpoint for a manifest of repo.
func (s *Service) Security(ctx context.Context, repo string, m meta.Manifest, withVulns bool) (SecurityInfo, error) {
	if m.MediaType == oci.MediaTypeImageIndex || m.MediaType == oci.MediaTypeDockerList {
		return s.indexSecurity(ctx, repo, m, withVulns)
	}
	st, err := s.stores.Results.ManifestScan(ctx, m.Digest.String())
	if errors.Is(err, meta.ErrNotFound) {
		// Stored before scanning was on, or not an image: queue it once.
		if err := s.stores.Results.QueueFirstScan(ctx, repo, m.Digest.String()); err != nil {
			return SecurityInfo{}, err
		}
		return SecurityInfo{Status: meta.ScanQueued}, nil
	}
	if err != nil {
		return SecurityInfo{}, err
	}
	if st.Status == meta.ScanFailed {
		queued, err := s.rescanFailed(ctx, repo, st, nil)
		if err != nil {
			return SecurityInfo{}, err
		}
		if queued {
			return SecurityInfo{Status: meta.ScanQueued}, nil
		}
	}
	if st.Status != meta.ScanScanned {
		return SecurityInfo{Status: st.Status, Reason: st.Reason}, nil
	}
	rep, err := decodeReport(st.Report)
	if err != nil {
		return SecurityInfo{}, err
	}
	var findings []Finding
	if withVulns {
		if findings, err = s.match(ctx, rep); err != nil {
			return SecurityInfo{}, err
		}
	}
	ds, err := s.dataSources(ctx)
	if err != nil {
		return SecurityInfo{}, err
	}
	cov, err := ds.coverage(ctx, rep)
	if err != nil {
		return SecurityInfo{}, err
	}
	return SecurityInfo{Status: meta.ScanScanned, Data: &SecurityData{Layer: layerOf(m.Digest.String(), st.IndexerVersion, rep, findings, withVulns)},
		VulnerabilityData: &cov}, nil
}

// maxIndexPlatforms bounds the distinct platforms of an index whose scan
// state (and stored report) the security answer reads: an index may list
// tens of thousands of entries within the manifest size cap, and anyone
// who may pull may ask.
const maxIndexPlatforms = 64

// indexSecurity answers the security endpoint for an index: each platform's
// state, the least advanced being the index's. Attestation manifests (as
// docker buildx adds them) are no platform and are left out, as the gate
// leaves them out. A platform never queued is queued now, as a single
// manifest is. A manifest the index lists more than once is read and
// listed once (with the platform of its first entry); past
// maxIndexPlatforms distinct ones the rest are not read, and the answer
// is "unsupported" at best with its data incomplete, never clean. So it
// is past the per-image package bound (maxImagePackages) of the reports
// decoded in all: a report that would pass it is not decoded whole, and
// neither it nor any after it is listed.
// Only a "scanned" index has data: the union of its platforms' reports
// (indexLayer), as Quay's clients read data.Layer once scanned. Its
// advisories are looked up only then, once for all its platforms
// (unionLayer).
func (s *Service) indexSecurity(ctx context.Context, repo string, m meta.Manifest, withVulns bool) (SecurityInfo, error) {
	man, err := oci.ParseManifest(m.Content, m.MediaType)
	if err != nil {
		return SecurityInfo{Status: meta.ScanUnsupported, Reason: err.Error()}, nil
	}
	ds, err := s.dataSources(ctx)
	if err != nil {
		return SecurityInfo{}, err
	}
	out := SecurityInfo{Status: meta.ScanScanned, Manifests: []PlatformSecurity{}}
	rank := map[string]int{meta.ScanScanned: 0, meta.ScanUnsupported: 1, meta.ScanQueued: 2, meta.ScanFailed: 3}
	var covs []DataCoverage
	// reports are the platforms' reports while all read are scanned (nil
	// after one is not: the index will have no data).
	reports := []platformReport{}
	seen := map[string]bool{}
	// The packages of the reports decoded, within budget in all: past it,
	// no further report is read.
	budget, decoded := s.maxImagePackages, 0
	if budget <= 0 {
		budget = maxImagePackages
	}
	incomplete := ""
	for _, c := range man.Manifests {
		if oci.IsAttestation(c) || seen[c.Digest.String()] {
			continue
		}
		if len(seen) == maxIndexPlatforms {
			incomplete = fmt.Sprintf("the index lists more than %d platforms: only the first %d were read, so its vulnerabilities are not all known",
				maxIndexPlatforms, maxIndexPlatforms)
			break
		}
		seen[c.Digest.String()] = true
		ps := PlatformSecurity{Digest: c.Digest.String(), Platform: c.Platform, Status: meta.ScanUnsupported}
		st, err := s.stores.Results.ManifestScan(ctx, c.Digest.String())
		switch {
		case err == nil && st.Status == meta.ScanFailed:
			ps.Status, ps.Reason = st.Status, st.Reason
			// Scanned again once its missing layer is stored
			// (rescanFailed), if the repository holds the platform (the
			// scan job reads it there).
			queued, err := s.rescanFailed(ctx, repo, st, func(ctx context.Context) (bool, error) {
				_, err := s.stores.Manifests.GetManifest(ctx, repo, "", c.Digest, false)
				if errors.Is(err, meta.ErrNotFound) {
					return false, nil
				}
				return err == nil, err
			})
			if err != nil {
				return SecurityInfo{}, err
			}
			if queued {
				ps.Status, ps.Reason = meta.ScanQueued, ""
			}
		case err == nil:
			ps.Status, ps.Reason = st.Status, st.Reason
		case errors.Is(err, meta.ErrNotFound):
			ps.Reason = "not an image manifest, or not scanned"
			if !scannable(c.MediaType) {
				break
			}
			// Stored before scanning was on: queue it once, if the
			// repository holds it (the scan job reads it there).
			_, gerr := s.stores.Manifests.GetManifest(ctx, repo, "", c.Digest, false)
			if errors.Is(gerr, meta.ErrNotFound) {
				break
			}
			if gerr != nil {
				return SecurityInfo{}, gerr
			}
			if err := s.stores.Results.QueueFirstScan(ctx, repo, c.Digest.String()); err != nil {
				return SecurityInfo{}, err
			}
			ps.Status, ps.Reason = meta.ScanQueued, ""
		default:
			return SecurityInfo{}, err
		}
		if ps.Status == meta.ScanScanned {
			rep, n, err := decodeReportWithin(st.Report, budget-decoded)
			if err != nil {
				return SecurityInfo{}, err
			}
			if rep == nil {
				incomplete = fmt.Sprintf("the index's platforms hold more than %d packages together, the most this scanner reads in one answer: "+
					"%d of its platforms were read, so its vulnerabilities are not all known", budget, len(out.Manifests))
				reports = nil
				break
			}
			decoded += n
			cov, err := ds.coverage(ctx, rep)
			if err != nil {
				return SecurityInfo{}, err
			}
			ps.VulnerabilityData = &cov
			covs = append(covs, cov)
			if reports != nil {
				reports = append(reports, platformReport{digest: c.Digest.String(), indexer: st.IndexerVersion, rep: rep})
			}
		} else {
			reports = nil
		}
		if rank[ps.Status] > rank[out.Status] {
			out.Status = ps.Status
		}
		out.Manifests = append(out.Manifests, ps)
	}
	if len(out.Manifests) == 0 {
		out.Status, out.Reason = meta.ScanUnsupported, "an empty index"
	}
	if len(covs) > 0 {
		merged := mergeCoverage(covs)
		out.VulnerabilityData = &merged
	}
	if incomplete != "" {
		if rank[out.Status] < rank[meta.ScanUnsupported] {
			out.Status = meta.ScanUnsupported
		}
		out.Reason = incomplete
		if out.VulnerabilityData == nil {
			out.VulnerabilityData = &DataCoverage{Missing: []string{}, Stale: []string{}, Ecosystems: []EcosystemData{}}
		}
		out.VulnerabilityData.Complete = false
	}
	if out.Status == meta.ScanScanned && reports != nil {
		l, err := s.unionLayer(ctx, m.Digest.String(), reports, withVulns)
		if err != nil {
			return SecurityInfo{}, err
		}
		out.Data = &SecurityData{Layer: l}
	}
	return out, nil
}

// platformReport is the stored report of a scanned platform of an index.
type platformReport struct {
	digest  string
	indexer int
	rep     *Report
}

// unionLayer is the data of a scanned index: the union (indexLayer) of
// its platforms' layers, each with its own advisories when withVulns
// (matchEach).
func (s *Service) unionLayer(ctx context.Context, dgst string, platforms []platformReport, withVulns bool) (SecurityLayer, error) {
	findings := make([][]Finding, len(platforms))
	if withVulns {
		reps := make([]*Report, len(platforms))
		for i, p := range platforms {
			reps[i] = p.rep
		}
		var err error
		if findings, err = s.matchEach(ctx, reps); err != nil {
			return SecurityLayer{}, err
		}
	}
	u := newIndexLayer(dgst)
	for i, p := range platforms {
		u.add(layerOf(p.digest, p.indexer, p.rep, findings[i], withVulns))
		platforms[i].rep, findings[i] = nil, nil // merged: let it go
	}
	return u.layer(), nil
}

// decodeReportWithin decodes a stored report unless it lists more than
// budget packages: then it stops at the first package past the budget,
// and the report is nil. n is the report's packages.
func decodeReportWithin(b []byte, budget int) (rep *Report, n int, err error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	if err := expectDelim(dec, '{'); err != nil {
		return nil, 0, err
	}
	// The other fields, few and small, are decoded as a report without
	// packages.
	rest := map[string]json.RawMessage{}
	var pkgs []index.Package
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, 0, fmt.Errorf("decode scan report: %w", err)
		}
		key, _ := tok.(string)
		if key != "packages" {
			var raw json.RawMessage
			if err := dec.Decode(&raw); err != nil {
				return nil, 0, fmt.Errorf("decode scan report: %w", err)
			}
			rest[key] = raw
			continue
		}
		tok, err = dec.Token()
		if err != nil {
			return nil, 0, fmt.Errorf("decode scan report: %w", err)
		}
		if tok == nil {
			continue // "packages": null
		}
		if d, ok := tok.(json.Delim); !ok || d != '[' {
			return nil, 0, fmt.Errorf("decode scan report: packages is %v, not a list", tok)
		}
		pkgs = []index.Package{}
		for dec.More() {
			if len(pkgs) == budget {
				return nil, len(pkgs), nil
			}
			var p index.Package
			if err := dec.Decode(&p); err != nil {
				return nil, 0, fmt.Errorf("decode scan report: %w", err)
			}
			pkgs = append(pkgs, p)
		}
		if err := expectDelim(dec, ']'); err != nil {
			return nil, 0, err
		}
	}
	if err := expectDelim(dec, '}'); err != nil {
		return nil, 0, err
	}
	fields, err := json.Marshal(rest)
	if err != nil {
		return nil, 0, fmt.Errorf("decode scan report: %w", err)
	}
	if rep, err = decodeReport(fields); err != nil {
		return nil, 0, err
	}
	rep.Packages = pkgs
	return rep, len(pkgs), nil
}

// expectDelim reads the delimiter d.
func expectDelim(dec *json.Decoder, d json.Delim) error {
	tok, err := dec.Token()
	if err != nil {
		return fmt.Errorf("decode scan report: %w", err)
	}
	if got, ok := tok.(json.Delim); !ok || got != d {
		return fmt.Errorf("decode scan report: %v where %v was expected", tok, d)
	}
	return nil
}

// matchEach finds, as match does for one, the advisories affecting each
// of several reports (an index's platforms, which share most packages),
// looking up and parsing the records of all their packages once. Each
// report is evaluated against the records naming one of its packages,
// the same findings as from the records of its own lookup: a record
// matches a package only in the package's ecosystem or its base, the
// keys that lookup asks for.
func (s *Service) matchEach(ctx context.Context, reps []*Report) ([][]Finding, error) {
	pkgs := make([][]meta.ScanPackage, len(reps))
	var all []meta.ScanPackage
	for i, rep := range reps {
		if err := s.resolveCPEs(ctx, rep); err != nil {
			return nil, err
		}
		pkgs[i] = scanPackages(rep)
		all = append(all, pkgs[i]...)
	}
	stored, err := s.stores.Vulns.VulnRecordsFor(ctx, lookupKeys(all))
	if err != nil {
		return nil, err
	}
	recs, err := parseRecords(stored)
	if err != nil {
		return nil, err
	}
	naming := map[string][]int{} // package name → the records naming it
	for i, r := range recs {
		for _, k := range r.Keys() {
			naming[k.Name] = append(naming[k.Name], i)
		}
	}
	out := make([][]Finding, len(reps))
	for i := range reps {
		mine := map[int]bool{}
		for _, p := range pkgs[i] {
			for _, j := range naming[p.Name] {
				mine[j] = true
			}
		}
		subset := make([]*osv.Record, 0, len(mine))
		for j, r := range recs {
			if mine[j] {
				subset = append(subset, r)
			}
		}
		out[i] = evaluate(subset, pkgs[i])
	}
	return out, nil
}

// indexLayer is the union of an index's platforms' layers, in Quay's
// shape: named by the index digest, with no parent, indexed by the
// oldest indexer among its platforms, in their namespace when they share
// one (else none: each feature names its own). A package (name, version
// and namespace) of several platforms is listed once, added by the layer
// of the first platform that has it, with each of its advisories (by
// name) once; content sets and CPEs are the platforms' together.
type indexLayer struct {
	out     SecurityLayer
	at      map[featureKey]int
	n       int
	mixedNS bool
}

type featureKey struct{ name, version, namespace string }

func newIndexLayer(dgst string) *indexLayer {
	return &indexLayer{out: SecurityLayer{Name: dgst, Features: []Feature{}}, at: map[featureKey]int{}}
}

// add merges one platform's layer.
func (u *indexLayer) add(l SecurityLayer) {
	switch {
	case u.n == 0:
		u.out.NamespaceName, u.out.IndexedByVersion = l.NamespaceName, l.IndexedByVersion
	case l.NamespaceName != u.out.NamespaceName:
		u.mixedNS = true
	}
	u.out.IndexedByVersion = min(u.out.IndexedByVersion, l.IndexedByVersion)
	u.n++
	u.out.ContentSets = append(u.out.ContentSets, l.ContentSets...)
	u.out.CPEs = append(u.out.CPEs, l.CPEs...)
	for _, f := range l.Features {
		k := featureKey{f.Name, f.Version, f.NamespaceName}
		i, ok := u.at[k]
		if !ok {
			f.Vulnerabilities, f.BaseScores, f.CVEIds = slices.Clone(f.Vulnerabilities), slices.Clone(f.BaseScores), slices.Clone(f.CVEIds)
			u.at[k] = len(u.out.Features)
			u.out.Features = append(u.out.Features, f)
			continue
		}
		mergeFeature(&u.out.Features[i], f)
	}
}

// mergeFeature adds to f the advisories of g (the same package on
// another platform) that f does not list.
func mergeFeature(f *Feature, g Feature) {
	added := false
	for _, v := range g.Vulnerabilities {
		if slices.ContainsFunc(f.Vulnerabilities, func(w Vulnerability) bool { return w.Name == v.Name }) {
			continue
		}
		added = true
		f.Vulnerabilities = append(f.Vulnerabilities, v)
		if v.Metadata.NVD.CVSSv3 != nil {
			f.BaseScores = append(f.BaseScores, v.Metadata.NVD.CVSSv3.Score)
		}
	}
	for _, id := range g.CVEIds {
		if !slices.Contains(f.CVEIds, id) {
			f.CVEIds = append(f.CVEIds, id)
		}
	}
	if added {
		sort.SliceStable(f.Vulnerabilities, func(i, j int) bool {
			return osv.SeverityRank(f.Vulnerabilities[i].Severity) > osv.SeverityRank(f.Vulnerabilities[j].Severity)
		})
	}
}

// layer is the union of the layers added.
func (u *indexLayer) layer() SecurityLayer {
	l := u.out
	if u.mixedNS {
		l.NamespaceName = ""
	}
	l.ContentSets, l.CPEs = sortedSet(l.ContentSets), sortedSet(l.CPEs)
	return l
}

// sortedSet sorts and deduplicates ss (nil stays nil).
func sortedSet(ss []string) []string {
	if len(ss) == 0 {
		return nil
	}
	slices.Sort(ss)
	return slices.Compact(ss)
}

// layerOf renders a report and its findings in Quay's shape.
func layerOf(dgst string, indexer int, rep *Report, findings []Finding, withVulns bool) SecurityLayer {
	ns := strings.ToLower(rep.Ecosystem)
	byKey := map[meta.ScanPackage][]Finding{}
	for _, f := range findings {
		byKey[f.Key] = append(byKey[f.Key], f)
	}
	layer := SecurityLayer{Name: dgst, NamespaceName: ns, IndexedByVersion: indexer, Features: []Feature{},
		ContentSets: rep.ContentSets, CPEs: rep.CPEs}
	for _, p := range rep.Packages {
		f := Feature{Name: p.Name, VersionFormat: versionFormat[p.Kind], AddedBy: p.AddedBy, Version: p.Version,
			BaseScores: []float64{}, CVEIds: []string{}, NamespaceName: ns}
		if eco := osv.LanguageEcosystem(p.Kind); eco != "" {
			f.NamespaceName = strings.ToLower(eco)
		}
		if withVulns {
			f.Vulnerabilities = []Vulnerability{}
		}
		if keys := packageKeys(rep, p); len(keys) > 0 && withVulns {
			seen := map[string]bool{}
			for _, fd := range findingsFor(byKey, keys) {
				if seen[fd.Record.ID] {
					continue
				}
				seen[fd.Record.ID] = true
				v := vulnerabilityOf(fd, strings.ToLower(fd.Key.Ecosystem), rep)
				f.Vulnerabilities = append(f.Vulnerabilities, v)
				if v.Metadata.NVD.CVSSv3 != nil {
					f.BaseScores = append(f.BaseScores, v.Metadata.NVD.CVSSv3.Score)
				}
				f.CVEIds = append(f.CVEIds, cveIDs(fd.Record)...)
			}
			sort.SliceStable(f.Vulnerabilities, func(i, j int) bool {
				return osv.SeverityRank(f.Vulnerabilities[i].Severity) > osv.SeverityRank(f.Vulnerabilities[j].Severity)
			})
		}
		layer.Features = append(layer.Features, f)
	}
	return layer
}

func vulnerabilityOf(f Finding, ns string, rep *Report) Vulnerability {
	a := f.Assessment
	v := Vulnerability{Name: f.Record.ID, Severity: a.Severity, NamespaceName: ns, Link: f.Record.Link(), FixedBy: f.Match.FixedBy,
		Description: f.Record.Description(),
		Metadata: VulnMetadata{UpdatedBy: a.Vendor, DistroName: rep.OSRelease["NAME"], DistroVersion: rep.OSRelease["VERSION_ID"],
			Aliases: f.Record.Aliases}}
	// a.CVSS is the v3 vector, else the v4, else the v2: Quay's CVSSv3
	// (and BaseScores, its scores) is a v3 vector's alone.
	switch {
	case a.CVSS == nil:
	case strings.HasPrefix(a.CVSS.Version, "3."):
		v.Metadata.NVD.CVSSv3 = &CVSSv3{Vectors: a.CVSS.Vector, Score: a.CVSS.Score}
	case a.CVSS.Version == "2.0":
		v.Metadata.NVD.CVSSv2 = &CVSSv3{Vectors: a.CVSS.Vector, Score: a.CVSS.Score}
	}
	if a.CVSSv4 != nil {
		v.Metadata.NVD.CVSSv4 = &CVSSv3{Vectors: a.CVSSv4.Vector, Score: a.CVSSv4.Score}
	}
	if a.Reclassified {
		v.Metadata.Reclassified = &Reclassified{From: a.ReclassifiedFrom, By: a.ReclassifiedBy}
	}
	return v
}

func cveIDs(r *osv.Record) []string {
	var out []string
	for _, id := range append([]string{r.ID}, r.Aliases...) {
		if strings.HasPrefix(id, "CVE-") {
			out = append(out, id)
		}
	}
	return out
}
