package web

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/scan"
)

// rowCoverage is what the tags table knows of the vulnerability data
// behind a scanned row (scan.DataCoverage): a row without findings is
// "none known" only when Complete; otherwise its findings are "at least"
// and a badge says the data is incomplete or stale (Checked) or was not
// checked.
type rowCoverage struct {
	Checked  bool   // the page read the data coverage of every image of the row
	Complete bool   // every ecosystem of every image had current advisory data
	Stale    bool   // not complete only for data too old (none missing)
	Reason   string // what is missing (or stale), or why it was not checked
}

// coverageChecksPerPage bounds the images whose data coverage the tags
// page reads (each is the summary stored with the image's scan report,
// all in one query): one per row of single images; an index counts its
// platforms. Rows past it say "not checked", never clean; their
// manifest's page says it.
const coverageChecksPerPage = tagsPerPage

// Reasons a row's coverage was not read that the page gives itself.
const (
	reasonCoverageOff        = "scanning is off: whether the vulnerability data is complete is not known"
	reasonCoverageNotChecked = "not checked on this page (it checks the vulnerability data of a few images): the manifest's page says whether it is complete"
)

// rowCoverages reads the data coverage of a page's scanned rows, the
// platforms of an index included (its content read once per distinct
// index), within coverageChecksPerPage images. The slice is aligned with
// rows; nil when scanning is off.
func (u *UI) rowCoverages(ctx context.Context, repo string, rows []meta.TagRow) ([]rowCoverage, error) {
	if u.db.Scanner == nil {
		return nil, nil
	}
	// Plan: the images of each distinct scanned row, in page order, while
	// they fit in the bound.
	planned := map[digest.Digest][]string{}
	inPlan := map[string]bool{}
	var images []string
	for _, r := range rows {
		if !r.Scanned {
			continue
		}
		if _, ok := planned[r.Digest]; ok {
			continue
		}
		imgs := []string{r.Digest.String()}
		if oci.IsIndex(r.MediaType) {
			if len(images) >= coverageChecksPerPage {
				planned[r.Digest] = nil // no room left: not read, not checked
				continue
			}
			var err error
			if imgs, err = u.platformImages(ctx, repo, r.Digest); err != nil {
				return nil, err
			}
		}
		fresh := map[string]bool{}
		for _, d := range imgs {
			if !inPlan[d] {
				fresh[d] = true
			}
		}
		if imgs == nil || len(images)+len(fresh) > coverageChecksPerPage {
			planned[r.Digest] = nil // not checked
			continue
		}
		for _, d := range imgs {
			if fresh[d] && !inPlan[d] {
				inPlan[d] = true
				images = append(images, d)
			}
		}
		planned[r.Digest] = imgs
	}
	covs, err := u.coverages(ctx, images)
	if err != nil {
		return nil, err
	}
	out := make([]rowCoverage, len(rows))
	for i, r := range rows {
		if !r.Scanned {
			continue
		}
		imgs := planned[r.Digest]
		if imgs == nil {
			out[i] = rowCoverage{Reason: reasonCoverageNotChecked}
			continue
		}
		out[i] = coverageOf(imgs, covs, oci.IsIndex(r.MediaType))
	}
	return out, nil
}

// platformImages are the image manifests of an index (attestations left
// out, as the security endpoint and the gate leave them out).
func (u *UI) platformImages(ctx context.Context, repo string, d digest.Digest) ([]string, error) {
	m, err := u.db.Content.GetManifest(ctx, repo, "", d, true)
	if errors.Is(err, meta.ErrNotFound) {
		return nil, nil // deleted since the page listed it: not checked
	} else if err != nil {
		return nil, err
	}
	idx, err := oci.ParseManifest(m.Content, m.MediaType)
	if err != nil {
		return []string{}, nil // nothing to check: coverageOf says so
	}
	out := []string{}
	for _, c := range idx.Manifests {
		if !oci.IsAttestation(c) {
			out = append(out, c.Digest.String())
		}
	}
	return out, nil
}

// coverages reads the data coverage of scanned images, by digest; an
// image without a scanned report is left out, and so is one the scanner
// did not check (scanned before it stored the summaries it reads: it
// reads the whole reports of a few only). One call: one query of the
// images' summaries and one read of the advisory sources, whatever the
// page.
func (u *UI) coverages(ctx context.Context, images []string) (map[string]scan.DataCoverage, error) {
	if len(images) == 0 {
		return map[string]scan.DataCoverage{}, nil
	}
	return u.db.Scanner.Coverages(ctx, images)
}

// coverageOf is a row's coverage from its images': complete when every
// image is scanned with complete data (an index without platforms is
// not); the reasons of the others, each said once. An image the scanner
// left out (no scanned report, or not checked: Scanner.Coverages) makes
// the row "not checked" unless another's data is known incomplete.
func coverageOf(images []string, covs map[string]scan.DataCoverage, index bool) rowCoverage {
	rc := rowCoverage{Checked: true, Complete: len(images) > 0}
	if len(images) == 0 {
		rc.Reason = "the index names no image to scan"
	}
	var reasons []string
	seen := map[string]bool{}
	add := func(s string) {
		if s != "" && !seen[s] {
			seen[s] = true
			reasons = append(reasons, s)
		}
	}
	unchecked, incomplete, missing := false, false, false
	for _, d := range images {
		cov, ok := covs[d]
		switch {
		case !ok && index:
			rc.Complete, unchecked = false, true
			add(fmt.Sprintf("the platform %s was not checked (no scan report, or not read on this page)", shortDigest(d)))
		case !ok:
			rc.Complete, unchecked = false, true
			add(reasonCoverageNotChecked)
		default:
			rc.Complete = rc.Complete && cov.Complete
			incomplete = incomplete || !cov.Complete
			missing = missing || (!cov.Complete && (len(cov.Missing) > 0 || len(cov.Stale) == 0))
			add(cov.Reason())
		}
	}
	if unchecked && !incomplete {
		rc.Checked = false
	}
	rc.Stale = incomplete && !missing && !unchecked
	if len(reasons) > 0 {
		rc.Reason = strings.Join(reasons, "; ")
	}
	return rc
}

// shortDigest is a digest's first 12 hex digits.
func shortDigest(d string) string {
	if _, hex, ok := strings.Cut(d, ":"); ok && len(hex) > 12 {
		return hex[:12]
	}
	return d
}

// covAt is row i's coverage: not checked when the page read none
// (scanning off).
func covAt(c []rowCoverage, i int) rowCoverage {
	if i < len(c) {
		return c[i]
	}
	return rowCoverage{Reason: reasonCoverageOff}
}

// dataComplete says whether a security answer may call an image without
// findings clean: scanned, with complete vulnerability data.
func dataComplete(sec scan.SecurityInfo) bool {
	return sec.Status == meta.ScanScanned && sec.VulnerabilityData != nil && sec.VulnerabilityData.Complete
}
