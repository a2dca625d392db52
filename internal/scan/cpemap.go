package scan

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/scan/osv"
)

// maxCPEMappingBytes bounds a repository-to-cpe.json file (Red Hat's is
// a few MiB).
const maxCPEMappingBytes = 256 << 20

// ErrCPEMapping marks a repository-to-cpe.json file that cannot be read.
var ErrCPEMapping = errors.New("content set mapping")

// cpeMappingFile is Red Hat's repository-to-cpe.json:
// {"data": {"<content set>": {"cpes": ["cpe:/o:redhat:..."]}}}.
type cpeMappingFile struct {
	Data map[string]struct {
		CPEs []string `json:"cpes"`
	} `json:"data"`
}

// ImportCPEMapping reads Red Hat's repository-to-cpe.json from r and
// stores it in place of the mapping stored before. It returns the number
// of content sets stored.
func ImportCPEMapping(ctx context.Context, db VulnData, r io.Reader) (int, error) {
	m, err := parseCPEMapping(r)
	if err != nil {
		return 0, err
	}
	// The mapping's transaction queues the re-match of the images whose
	// content sets changed.
	if _, err := db.ReplaceCPEMapping(ctx, m); err != nil {
		return 0, fmt.Errorf("%w: %w", ErrStore, err)
	}
	return len(m), nil
}

// parseCPEMapping decodes a repository-to-cpe.json file into the CPEs of
// each content set that names any.
func parseCPEMapping(r io.Reader) (map[string][]string, error) {
	lr := &io.LimitedReader{R: r, N: maxCPEMappingBytes + 1}
	var f cpeMappingFile
	if err := json.NewDecoder(lr).Decode(&f); err != nil {
		if lr.N <= 0 {
			return nil, fmt.Errorf("%w: larger than %d bytes", ErrCPEMapping, maxCPEMappingBytes)
		}
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return nil, fmt.Errorf("%w: not a repository-to-cpe.json file: %q is a JSON %s, where Red Hat's file has {\"data\": {\"<content set>\": {\"cpes\": [\"<cpe>\", ...]}}}",
				ErrCPEMapping, te.Field, te.Value)
		}
		return nil, fmt.Errorf("%w: not a repository-to-cpe.json file: %w", ErrCPEMapping, err)
	}
	if f.Data == nil {
		return nil, fmt.Errorf("%w: not a repository-to-cpe.json file: no \"data\" object", ErrCPEMapping)
	}
	out := make(map[string][]string, len(f.Data))
	for set, v := range f.Data {
		var cpes []string
		for _, c := range v.CPEs {
			if c != "" {
				cpes = append(cpes, c)
			}
		}
		if set != "" && len(cpes) > 0 {
			out[set] = cpes
		}
	}
	return out, nil
}

// resolveCPEs sets rep.CPEs to the CPEs the stored mapping gives the
// report's content sets (none without content sets or mapping).
func (s *Service) resolveCPEs(ctx context.Context, rep *Report) error {
	rep.CPEs = nil
	if len(rep.ContentSets) == 0 {
		return nil
	}
	m, err := s.stores.Rematches.CPEsOf(ctx, rep.ContentSets)
	if err != nil {
		return err
	}
	var cpes []string
	for _, cs := range m {
		cpes = append(cpes, cs...)
	}
	slices.Sort(cpes)
	rep.CPEs = slices.Compact(cpes)
	return nil
}

// redHatEcosystems are the OSV ecosystems of the report's Red Hat CPEs
// ("Red Hat:enterprise_linux:8::baseos"), sorted.
func redHatEcosystems(rep *Report) []string { return redHatEcosystemsOf(rep.CPEs) }

// redHatEcosystemsOf are the OSV ecosystems of Red Hat CPEs, sorted.
func redHatEcosystemsOf(cpes []string) []string {
	var out []string
	for _, c := range cpes {
		if eco, ok := osv.RedHatEcosystem(c); ok {
			out = append(out, eco)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// packageKeys names a package of the report under every ecosystem whose
// advisories apply to it: matchKey's, and for an RPM of an image with
// content sets, each Red Hat CPE ecosystem its content sets map to. An
// RPM of an image with content sets but no os-release the scanner knows
// is a Red Hat one (bare "Red Hat"). An OS package of a kind the
// distribution does not use (dpkg packages in an Alpine image) is named
// under none: its name and version would be read in the wrong scheme.
func packageKeys(rep *Report, p index.Package) []meta.ScanPackage {
	eco := rep.Ecosystem
	rpm := p.Kind == index.KindRPM && len(rep.ContentSets) > 0
	if rpm && eco == "" {
		eco = osv.RedHat
	}
	if want := osv.OSPackageKind(eco); want != "" && index.IsOSKind(p.Kind) && p.Kind != want {
		return nil
	}
	k, ok := matchKey(eco, p)
	if !ok {
		return nil
	}
	out := []meta.ScanPackage{k}
	if rpm {
		for _, e := range redHatEcosystems(rep) {
			out = append(out, meta.ScanPackage{Ecosystem: e, Name: k.Name, Version: k.Version})
		}
	}
	return out
}

// Remap matches again the scanned images with content sets among
// contentSets (every image with content sets when none are named) after
// the content set mapping changed: it stores their packages under the
// ecosystems of the new mapping and their matches, and announces
// vulnerability_found for what is new. An image indexed by an older
// indexer (before content manifests were read) is queued for a new scan.
func (s *Service) Remap(ctx context.Context, contentSets []string) (RematchStats, error) {
	var st RematchStats
	digests, err := s.stores.Rematches.ManifestsInEcosystem(ctx, osv.RedHat)
	if err != nil {
		return st, err
	}
	for _, d := range digests {
		ms, err := s.stores.Results.ManifestScan(ctx, d)
		if errors.Is(err, meta.ErrNotFound) {
			continue // deleted since
		}
		if err != nil {
			return st, err
		}
		if ms.Status != meta.ScanScanned {
			continue
		}
		if ms.IndexerVersion != index.IndexerVersion {
			if err := s.rescan(ctx, d); err != nil {
				return st, err
			}
			st.Manifests++
			continue
		}
		rep, err := decodeReport(ms.Report)
		if err != nil {
			return st, err
		}
		if len(rep.ContentSets) == 0 || (len(contentSets) > 0 && !intersects(rep.ContentSets, contentSets)) {
			continue
		}
		st.Manifests++
		before := slices.Clone(rep.CPEs)
		findings, err := s.match(ctx, rep)
		if err != nil {
			return st, err
		}
		old, err := s.stores.Results.ManifestVulns(ctx, d)
		if err != nil {
			return st, err
		}
		rows := vulnRows(findings)
		added := newFindings(findings, old)
		if slices.Equal(before, rep.CPEs) && len(added) == 0 && sameRows(rows, old) {
			continue
		}
		st.Changed++
		res := meta.ScanResult{Digest: d, Status: meta.ScanScanned, IndexerVersion: ms.IndexerVersion, Packages: scanPackages(rep), Vulns: rows}
		setReport(&res, rep)
		if len(added) > 0 {
			holders, err := s.stores.Results.ManifestHolders(ctx, d)
			if err != nil {
				return st, err
			}
			for _, h := range holders {
				res.Events = append(res.Events, meta.Event{Kind: meta.EventVulnerabilityFound, Repository: h.Repository, Actor: Actor,
					Data: mustJSON(vulnEventData(d, h.Tags, added))})
			}
			st.Announced++
		}
		if err := s.stores.Results.SaveScan(ctx, res); err != nil {
			return st, err
		}
	}
	s.log.Debug("re-match after content set mapping change", "content_sets", len(contentSets), "manifests", st.Manifests,
		"changed", st.Changed, "announced", st.Announced)
	return st, nil
}

// rescan queues a new scan of a manifest in a repository holding it.
func (s *Service) rescan(ctx context.Context, dgst string) error {
	holders, err := s.stores.Results.ManifestHolders(ctx, dgst)
	if err != nil || len(holders) == 0 {
		return err
	}
	return s.stores.Results.EnqueueScan(ctx, holders[0].Repository, dgst)
}

func intersects(a, b []string) bool {
	return slices.ContainsFunc(a, func(x string) bool { return slices.Contains(b, x) })
}

// findingsFor lists the findings of a package named under keys.
func findingsFor(byKey map[meta.ScanPackage][]Finding, keys []meta.ScanPackage) []Finding {
	var out []Finding
	for _, k := range keys {
		out = append(out, byKey[k]...)
	}
	return out
}

// cpeMapping imports the content set mappings at path: path itself when
// it is a JSON file holding one (done is then true), or the files named
// osv.CPEMappingFile in a directory.
func (im *Importer) cpeMapping(ctx context.Context, path string) (done bool, err error) {
	info, err := os.Stat(path)
	if err != nil {
		return false, nil // osv.Read reports it
	}
	var files []string
	if info.IsDir() {
		err := filepath.WalkDir(path, func(p string, d fs.DirEntry, err error) error {
			if err == nil && d.Type().IsRegular() && strings.EqualFold(d.Name(), osv.CPEMappingFile) {
				files = append(files, p)
			}
			return nil // osv.Read reports unreadable directories
		})
		if err != nil {
			return false, err
		}
	} else if strings.EqualFold(filepath.Ext(path), ".json") {
		is, err := isCPEMappingFile(path)
		if err != nil {
			return false, err
		}
		if !is {
			return false, nil
		}
		files, done = []string{path}, true
	}
	for _, p := range files {
		if err := im.importCPEMappingFile(ctx, p); err != nil {
			return done, err
		}
	}
	return done, nil
}

func (im *Importer) importCPEMappingFile(ctx context.Context, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("read content set mapping: %w", err)
	}
	defer f.Close()
	n, err := ImportCPEMapping(ctx, im.db, f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	im.stats.ContentSets = n
	return nil
}

// isCPEMappingFile reports whether the JSON file at path is Red Hat's
// content set mapping: an object with a "data" member, which no OSV
// record has. It reads no further than that member.
func isCPEMappingFile(path string) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, fmt.Errorf("read osv source: %w", err)
	}
	defer f.Close()
	dec := json.NewDecoder(bufio.NewReader(f))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return false, nil
	}
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return false, nil
		}
		if key == "data" {
			return true, nil
		}
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return false, nil
		}
	}
	return false, nil
}

// RedHatDataGap says why the RPMs of a Red Hat image (Ecosystem "Red Hat",
// or content sets) cannot be matched against the imported advisories, or
// "" when they can (or the image has no RPMs). Red Hat's OSV records name
// CPE ecosystems only ("Red Hat:enterprise_linux:8::baseos"), which an
// image reaches through its content sets and the content set mapping;
// hasEcosystem reports whether any imported advisory names an exact
// ecosystem. The report's CPEs are used as they are (match resolves them).
func RedHatDataGap(rep *Report, hasEcosystem func(string) (bool, error)) (string, error) {
	rpms := slices.ContainsFunc(rep.Packages, func(p index.Package) bool { return p.Kind == index.KindRPM })
	return redHatDataGap(rep.Ecosystem, rpms, rep.ContentSets, rep.CPEs, hasEcosystem)
}

// redHatDataGap is RedHatDataGap of a report of ecosystem, with RPMs or
// not, content sets and CPEs (what its coverage summary keeps).
func redHatDataGap(ecosystem string, rpms bool, contentSets, cpes []string, hasEcosystem func(string) (bool, error)) (string, error) {
	if !rpms || (ecosystem != osv.RedHat && len(contentSets) == 0) {
		return "", nil
	}
	ecos := redHatEcosystemsOf(cpes)
	switch {
	case len(contentSets) == 0:
		ecos = []string{osv.RedHat}
	case len(ecos) == 0:
		return fmt.Sprintf("none of the image's content sets (%s) is in Red Hat's content set mapping: import repository-to-cpe.json "+
			"(berth admin vulndb fetch --cpe-mapping, or berth admin vulndb import repository-to-cpe.json)", strings.Join(contentSets, ", ")), nil
	}
	for _, e := range append(ecos, osv.RedHat) {
		ok, err := hasEcosystem(e)
		if err != nil || ok {
			return "", err
		}
	}
	if len(contentSets) == 0 {
		return "the image lists no content sets (/root/buildinfo/content_manifests, /usr/share/buildinfo/content-sets.json) and Red Hat's advisories name CPE ecosystems only", nil
	}
	return fmt.Sprintf("no advisories imported for %s", strings.Join(ecos, ", ")), nil
}
