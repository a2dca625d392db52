package scan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan/index"
	"github.com/berth-dev/berth/internal/scan/osv"
)

// coverageSummaryVersion is the format of a stored coverage summary: one
// of another version is not read (the report is, within
// maxCoverageFallbacks).
const coverageSummaryVersion = 1

// coverageSummary is what the data coverage of a report depends on, of
// the report alone: its packages counted per ecosystem group. It is a few
// entries per image, stored beside the report (meta.ScanResult.Summary),
// so that the coverage of many images (the tags page) is computed
// without reading their reports, which list every package.
type coverageSummary struct {
	Version int `json:"v"`
	// Ecosystem is the report's (Report.Ecosystem).
	Ecosystem string         `json:"ecosystem,omitempty"`
	Groups    []summaryGroup `json:"groups"`
	// RedHat is what a Red Hat image's coverage also depends on; nil for
	// other images.
	RedHat *redHatSummary `json:"redHat,omitempty"`
}

// summaryGroup is an ecosystem group of the image's packages: the
// distribution's packages, OS packages of a kind it does not use, or a
// language ecosystem's.
type summaryGroup struct {
	Base     string `json:"base"`
	Release  string `json:"release,omitempty"`
	Packages int    `json:"packages"`
	OS       bool   `json:"os,omitempty"`
	Misfit   string `json:"misfit,omitempty"` // OS packages of a kind the distribution does not use: why
	Gap      string `json:"gap,omitempty"`    // the image's OS packages are not all known: why
}

// redHatSummary is what the coverage of a Red Hat image's RPMs depends on
// (redHatDataGap).
type redHatSummary struct {
	RPMs        bool     `json:"rpms,omitempty"`
	ContentSets []string `json:"contentSets,omitempty"`
	CPEs        []string `json:"cpes,omitempty"`
}

// summarize is the coverage summary of a report.
func summarize(rep *Report) *coverageSummary {
	groups := map[string]*summaryGroup{}
	get := func(base, release string, os bool) *summaryGroup {
		g := groups[base]
		if g == nil {
			g = &summaryGroup{Base: base, Release: release, OS: os}
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
				g.Packages++
				g.Misfit = fmt.Sprintf("%s packages in an image whose os-release names %s (%s), whose advisories name %s packages: Berth does not match them",
					p.Kind, id, rep.Ecosystem, kind)
				continue
			}
			get(osBase, osRelease, true).Packages++
		default:
			if eco := osv.LanguageEcosystem(p.Kind); eco != "" && p.Version != "" {
				get(eco, "", false).Packages++
			}
		}
	}
	// An image with an os-release and no package database at all is not a
	// gap: ubi-micro and scratch images that copy an os-release have
	// none, and no setting or rescan could ever complete them. A database
	// a layer had and a later one deleted, or one not read, is (Gaps).
	if len(rep.Gaps) > 0 {
		get(osBase, osRelease, true).Gap = gapsReason(rep.Gaps)
	}
	// An os-release naming a distribution Berth has no ecosystem for
	// (Arch, OpenWrt, Gentoo, Void...) is no such image: its packages are
	// in a database Berth does not read (pacman, opkg, portage, xbps), so
	// none is found and no gap recorded; yet they are there, unknown. Its
	// group is listed, without packages, and unsupported (evaluate).
	if len(rep.OSRelease) > 0 && rep.Ecosystem == "" {
		get(osBase, osRelease, true)
	}
	sum := &coverageSummary{Version: coverageSummaryVersion, Ecosystem: rep.Ecosystem, Groups: make([]summaryGroup, 0, len(groups))}
	for _, g := range groups {
		sum.Groups = append(sum.Groups, *g)
	}
	sort.Slice(sum.Groups, func(i, j int) bool { return sum.Groups[i].Base < sum.Groups[j].Base })
	if osBase == redHat {
		sum.RedHat = &redHatSummary{RPMs: slices.ContainsFunc(rep.Packages, func(p index.Package) bool { return p.Kind == index.KindRPM }),
			ContentSets: rep.ContentSets, CPEs: rep.CPEs}
	}
	return sum
}

// encodeSummary is the stored form of a report's coverage summary.
func encodeSummary(rep *Report) []byte {
	b, _ := json.Marshal(summarize(rep))
	return b
}

// decodeSummary reads a stored coverage summary; false when there is
// none, or of another format.
func decodeSummary(b []byte) (*coverageSummary, bool) {
	if len(b) == 0 {
		return nil, false
	}
	var sum coverageSummary
	if err := json.Unmarshal(b, &sum); err != nil || sum.Version != coverageSummaryVersion {
		return nil, false
	}
	return &sum, true
}

// setReport sets the report of a scan result and the coverage summary
// stored beside it: every write of a report writes both.
func setReport(res *meta.ScanResult, rep *Report) {
	res.Report, _ = json.Marshal(rep)
	res.Summary = encodeSummary(rep)
}

// evaluate is the data coverage of an image of coverage summary sum
// against the imported advisories.
func (ds *dataSources) evaluate(ctx context.Context, sum *coverageSummary) (DataCoverage, error) {
	cov := DataCoverage{Complete: true, Missing: []string{}, Stale: []string{}, Ecosystems: []EcosystemData{}}
	for _, g := range sum.Groups {
		base := g.Base
		e := EcosystemData{Ecosystem: base, Release: g.Release, Packages: g.Packages}
		name := base
		if g.Release != "" {
			name = g.Release
		}
		src, imported := ds.sources[base]
		switch {
		case g.Misfit != "":
			e.Status, e.Reason = DataUnsupported, g.Misfit
		case g.OS && sum.Ecosystem == "" && g.Packages == 0:
			e.Status, e.Reason = DataUnsupported, fmt.Sprintf("Berth does not know this distribution (os-release ID %q): it reads none of its packages, "+
				"so the report cannot be complete", base)
		case g.OS && sum.Ecosystem == "":
			e.Status, e.Reason = DataUnsupported, fmt.Sprintf("Berth cannot match the packages of this distribution (os-release ID %q)", base)
		case !imported || src.Records == 0:
			e.Status, e.Reason = DataMissing, fmt.Sprintf("no advisories imported for %s", base)
		default:
			if err := ds.current(ctx, sum, g, src, &e); err != nil {
				return DataCoverage{}, err
			}
		}
		if g.Gap != "" {
			reason := g.Gap
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
			// Data too old to judge by is no data: a report without
			// findings on it is not clean.
			cov.Complete = false
			cov.Stale = append(cov.Stale, name)
		}
		cov.Ecosystems = append(cov.Ecosystems, e)
	}
	return cov, nil
}

// current fills in e, of group g whose ecosystem has imported advisories
// src: current, unless none names the image's release (or Red Hat
// stream), or they are stale.
func (ds *dataSources) current(ctx context.Context, sum *coverageSummary, g summaryGroup, src meta.VulnSource, e *EcosystemData) error {
	base := g.Base
	e.Records = src.Records
	at := src.UpdatedAt
	e.UpdatedAt = &at
	e.Status = DataCurrent
	if g.OS && base != redHat {
		// The packages are matched under the report's ecosystem exactly
		// (and the bare base for a release): data for other releases says
		// nothing about this one.
		ok, err := ds.hasRelease(ctx, sum.Ecosystem)
		if err == nil && !ok && g.Release != "" {
			ok, err = ds.hasRelease(ctx, base)
		}
		if err != nil {
			return err
		}
		switch {
		case ok:
		case g.Release != "":
			e.Status, e.Reason = DataMissing, fmt.Sprintf("the %d advisories imported for %s name no package of %s", src.Records, base, g.Release)
		default:
			e.Status, e.Reason = DataMissing, fmt.Sprintf("the image's os-release names no release of %s (no VERSION_ID), and none of the %d advisories imported for %s is for bare %q: "+
				"they name releases", base, src.Records, base, base)
		}
	}
	if g.OS && base == redHat {
		gap, err := ds.redHatGap(ctx, sum)
		if err != nil {
			return err
		}
		if gap != "" {
			e.Status, e.Reason = DataMissing, gap
		}
	}
	if age := ds.now.Sub(src.UpdatedAt); e.Status == DataCurrent && ds.stale > 0 && age > ds.stale {
		e.Status, e.Reason = DataStale, fmt.Sprintf("advisories last updated %s ago (%s), more than %s", roundAge(age),
			src.UpdatedAt.Format(time.RFC3339), roundAge(ds.stale))
	}
	return nil
}

// maxCoverageFallbacks bounds the images of one Coverages call whose
// coverage is computed from their whole report, for want of a stored
// summary (scanned before summaries were stored): each such read may be
// tens of MB. The others are left out (not checked).
const maxCoverageFallbacks = 2

// Coverages is the data coverage of scanned image manifests, by digest,
// read from the summaries stored with their reports in one query, and
// the advisory sources read once: it reads no report, but for at most
// maxCoverageFallbacks images scanned before summaries were stored (whose
// summary it then stores). A digest without a scanned report is left
// out, and so is one past that bound: its caller says "not checked".
func (s *Service) Coverages(ctx context.Context, digests []string) (map[string]DataCoverage, error) {
	out := make(map[string]DataCoverage, len(digests))
	if len(digests) == 0 {
		return out, nil
	}
	sums, err := s.stores.Summaries.ScanSummaries(ctx, digests)
	if err != nil {
		return nil, err
	}
	ds, err := s.dataSources(ctx)
	if err != nil {
		return nil, err
	}
	fallbacks := 0
	for _, d := range digests {
		st, ok := sums[d]
		if _, done := out[d]; done || !ok || st.Status != meta.ScanScanned {
			continue
		}
		sum, ok := decodeSummary(st.Summary)
		if !ok {
			if fallbacks == maxCoverageFallbacks {
				continue
			}
			fallbacks++
			if sum, err = s.summaryOfReport(ctx, d); err != nil {
				return nil, err
			}
			if sum == nil {
				continue // not scanned since
			}
		}
		cov, err := ds.evaluate(ctx, sum)
		if err != nil {
			return nil, err
		}
		out[d] = cov
	}
	return out, nil
}

// summaryOfReport reads a scanned manifest's whole report and stores its
// summary, for a report stored without one; nil if it is not scanned.
func (s *Service) summaryOfReport(ctx context.Context, digest string) (*coverageSummary, error) {
	st, err := s.stores.Results.ManifestScan(ctx, digest)
	if errors.Is(err, meta.ErrNotFound) || (err == nil && st.Status != meta.ScanScanned) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	rep, err := decodeReport(st.Report)
	if err != nil {
		return nil, err
	}
	sum := summarize(rep)
	b, _ := json.Marshal(sum)
	// A summary stored now is one report less to read on the next page;
	// failing to store it fails nothing.
	if _, err := s.stores.Summaries.FillScanSummary(ctx, digest, st.UpdatedAt, b); err != nil && ctx.Err() == nil {
		s.log.Warn("store the coverage summary of a scan report", "digest", digest, "err", err)
	}
	return sum, nil
}
