package scan

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/scan/osv"
)

// Finding is one advisory affecting one package of an image.
type Finding struct {
	// Key is the package as matched (for Debian, its source package).
	Key        meta.ScanPackage
	Record     *osv.Record
	Match      osv.Match
	Assessment osv.Assessment
}

// matchKey names a package as advisories do: OS packages in the image's
// distribution ecosystem, by source name where the ecosystem uses it;
// language packages in their own ecosystem.
func matchKey(ecosystem string, p index.Package) (meta.ScanPackage, bool) {
	switch p.Kind {
	case "dpkg", "apk":
		if ecosystem == "" {
			return meta.ScanPackage{}, false
		}
		// Debian, Ubuntu and Alpine advisories name the source package.
		name, version := p.Name, p.Version
		if p.SourceName != "" {
			name = p.SourceName
		}
		if p.SourceVersion != "" {
			version = p.SourceVersion
		}
		return meta.ScanPackage{Ecosystem: ecosystem, Name: name, Version: version}, true
	case "rpm":
		if ecosystem == "" {
			return meta.ScanPackage{}, false
		}
		return meta.ScanPackage{Ecosystem: ecosystem, Name: p.Name, Version: p.Version}, true
	}
	eco := osv.LanguageEcosystem(p.Kind)
	if eco == "" || p.Version == "" {
		return meta.ScanPackage{}, false
	}
	return meta.ScanPackage{Ecosystem: eco, Name: osv.NormalizeName(eco, p.Name), Version: p.Version}, true
}

// scanPackages lists a report's packages as matched, under each of their
// ecosystems (packageKeys), without repeats.
func scanPackages(rep *Report) []meta.ScanPackage {
	seen := map[meta.ScanPackage]bool{}
	var out []meta.ScanPackage
	for _, p := range rep.Packages {
		for _, k := range packageKeys(rep, p) {
			if !seen[k] {
				seen[k] = true
				out = append(out, k)
			}
		}
	}
	return out
}

// lookupKeys are the keys under which advisories for pkgs are stored: the
// exact ecosystem and, for a release ("Debian:12"), the bare one.
func lookupKeys(pkgs []meta.ScanPackage) []meta.VulnKey {
	seen := map[meta.VulnKey]bool{}
	var out []meta.VulnKey
	add := func(k meta.VulnKey) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, p := range pkgs {
		add(meta.VulnKey{Ecosystem: p.Ecosystem, Name: p.Name})
		if base, _, ok := strings.Cut(p.Ecosystem, ":"); ok {
			add(meta.VulnKey{Ecosystem: base, Name: p.Name})
		}
	}
	return out
}

// match finds the advisories affecting a report's packages, with the
// CPEs of its content sets as the stored mapping gives them now (set in
// rep.CPEs).
func (s *Service) match(ctx context.Context, rep *Report) ([]Finding, error) {
	if err := s.resolveCPEs(ctx, rep); err != nil {
		return nil, err
	}
	pkgs := scanPackages(rep)
	stored, err := s.stores.Vulns.VulnRecordsFor(ctx, lookupKeys(pkgs))
	if err != nil {
		return nil, err
	}
	recs, err := parseRecords(stored)
	if err != nil {
		return nil, err
	}
	return evaluate(recs, pkgs), nil
}

func parseRecords(stored []meta.StoredVuln) ([]*osv.Record, error) {
	recs := make([]*osv.Record, 0, len(stored))
	for _, sv := range stored {
		r, err := osv.ParseRecord(sv.Data)
		if err != nil {
			return nil, fmt.Errorf("stored advisory %s: %w", sv.ID, err)
		}
		recs = append(recs, r)
	}
	return recs, nil
}

// evaluate matches every record against every package it could name. A
// package named under several ecosystems (an RPM under bare "Red Hat" and
// its CPE ecosystems) is reported once per record, under the ecosystem the
// record names exactly when there is one.
func evaluate(recs []*osv.Record, pkgs []meta.ScanPackage) []Finding {
	byName := map[string][]meta.ScanPackage{}
	for _, p := range pkgs {
		byName[p.Name] = append(byName[p.Name], p)
	}
	var out []Finding
	for _, r := range recs {
		if r.IsWithdrawn() {
			continue
		}
		names := map[string]bool{}
		for _, k := range r.Keys() {
			names[k.Name] = true
		}
		at := map[[2]string]int{} // name, version → index in out
		for name := range names {
			for _, p := range byName[name] {
				m, ok := r.Matches(p.Ecosystem, p.Name, p.Version)
				if !ok {
					continue
				}
				f := Finding{Key: p, Record: r, Match: m, Assessment: r.Assess(m.Affected)}
				nv := [2]string{p.Name, p.Version}
				if i, dup := at[nv]; dup {
					if exact(f) && !exact(out[i]) {
						out[i] = f
					}
					continue
				}
				at[nv] = len(out)
				out = append(out, f)
			}
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if ra, rb := osv.SeverityRank(a.Assessment.Severity), osv.SeverityRank(b.Assessment.Severity); ra != rb {
			return ra > rb
		}
		if a.Record.ID != b.Record.ID {
			return a.Record.ID < b.Record.ID
		}
		return a.Key.Name+"@"+a.Key.Version < b.Key.Name+"@"+b.Key.Version
	})
	return out
}

// exact reports whether a finding's package is in the very ecosystem of
// the affected entry that matched.
func exact(f Finding) bool {
	return f.Match.Affected != nil && f.Match.Affected.Package.Ecosystem == f.Key.Ecosystem
}

// vulnRows are the findings as stored for diffing at the next re-match.
func vulnRows(findings []Finding) []meta.ScanVuln {
	out := make([]meta.ScanVuln, 0, len(findings))
	for _, f := range findings {
		out = append(out, meta.ScanVuln{VulnID: f.Record.ID, Package: f.Key.Name + "@" + f.Key.Version, Severity: f.Assessment.Severity})
	}
	return out
}

// RematchStats says what a re-match did.
type RematchStats struct {
	Records   int // advisories re-evaluated
	Manifests int // manifests considered
	Changed   int // manifests whose matches changed
	Announced int // manifests newly vulnerable (vulnerability_found sent)
}

// Rematch re-evaluates the named advisories against the manifests that
// hold a package they name, or matched them before. It reads only the
// package index, never a layer. A manifest that gains a match is announced
// with vulnerability_found in every repository holding it.
func (s *Service) Rematch(ctx context.Context, ids []string) (RematchStats, error) {
	st := RematchStats{Records: len(ids)}
	if len(ids) == 0 {
		return st, nil
	}
	start := time.Now()
	var read, write time.Duration
	defer func() {
		s.log.Debug("re-match", "records", st.Records, "manifests", st.Manifests, "changed", st.Changed, "announced", st.Announced,
			"read", read, "write", write, "took", time.Since(start))
	}()
	stored, err := s.stores.Vulns.VulnRecordsByID(ctx, ids)
	if err != nil {
		return st, err
	}
	recs, err := parseRecords(stored)
	if err != nil {
		return st, err
	}
	keys, err := s.stores.Vulns.VulnKeysOf(ctx, ids)
	if err != nil {
		return st, err
	}
	hits, err := s.stores.Rematches.ManifestsWithPackages(ctx, keys)
	if err != nil {
		return st, err
	}
	pkgsOf := map[string][]meta.ScanPackage{}
	for _, h := range hits {
		pkgsOf[h.Digest] = append(pkgsOf[h.Digest], h.ScanPackage)
	}
	before, err := s.stores.Rematches.VulnsOfRecords(ctx, ids)
	if err != nil {
		return st, err
	}
	for d := range before {
		if _, ok := pkgsOf[d]; !ok {
			pkgsOf[d] = nil // matched before, names no package now: clear
		}
	}
	digests := make([]string, 0, len(pkgsOf))
	for d := range pkgsOf {
		digests = append(digests, d)
	}
	sort.Strings(digests)
	st.Manifests = len(digests)

	read = time.Since(start)
	const batch = 200
	var changes []meta.VulnChange
	flush := func() error {
		t := time.Now()
		err := s.stores.Rematches.ApplyRematch(ctx, ids, changes)
		write += time.Since(t)
		changes = changes[:0]
		return err
	}
	for _, d := range digests {
		findings := evaluate(recs, pkgsOf[d])
		old := before[d]
		rows := vulnRows(findings)
		added := newFindings(findings, old)
		if len(added) == 0 && sameRows(rows, old) {
			continue
		}
		st.Changed++
		c := meta.VulnChange{Digest: d, HadMatches: len(old) > 0, Vulns: rows}
		if len(added) > 0 {
			holders, err := s.stores.Results.ManifestHolders(ctx, d)
			if err != nil {
				return st, err
			}
			for _, h := range holders {
				c.Events = append(c.Events, meta.Event{Kind: meta.EventVulnerabilityFound, Repository: h.Repository, Actor: Actor,
					Data: mustJSON(vulnEventData(d, h.Tags, added))})
			}
			st.Announced++
		}
		changes = append(changes, c)
		if len(changes) >= batch {
			if err := flush(); err != nil {
				return st, err
			}
		}
	}
	return st, flush()
}

// newFindings are the findings not among the stored rows.
func newFindings(findings []Finding, old []meta.ScanVuln) []Finding {
	had := map[[2]string]bool{}
	for _, v := range old {
		had[[2]string{v.VulnID, v.Package}] = true
	}
	var out []Finding
	for _, f := range findings {
		if !had[[2]string{f.Record.ID, f.Key.Name + "@" + f.Key.Version}] {
			out = append(out, f)
		}
	}
	return out
}

func sameRows(a, b []meta.ScanVuln) bool {
	if len(a) != len(b) {
		return false
	}
	set := map[meta.ScanVuln]bool{}
	for _, v := range a {
		set[v] = true
	}
	for _, v := range b {
		if !set[v] {
			return false
		}
	}
	return true
}
