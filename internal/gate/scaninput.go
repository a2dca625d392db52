package gate

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
)

// The bounds of the images an index's scan gathers: indexes nested at most
// maxIndexDepth levels deep (the candidate's own index is the first), and
// at most maxIndexManifests manifests read in all (attestations left out).
// Past them the scan is incomplete: "unsupported", never "scanned".
const (
	maxIndexDepth     = 4
	maxIndexManifests = 256
)

// scanCheck is berth/scan's status.
func scanCheck(sc Scan, threshold string) string {
	switch sc.Status {
	case "pending":
		return StatusPending
	case "scanned":
	default:
		return StatusFail
	}
	counts := map[string]int64{"Critical": sc.Counts.Critical, "High": sc.Counts.High, "Medium": sc.Counts.Medium,
		"Low": sc.Counts.Low, "Negligible": sc.Counts.Negligible, "Unknown": sc.Counts.Unknown}
	for sev, n := range counts {
		if n > 0 && severityRank[sev] >= severityRank[threshold] {
			return StatusFail
		}
	}
	return StatusPass
}

// scanImages lists the images whose scans make the candidate's: the
// candidate itself, or every image an index reaches, through nested
// indexes, whether its entry names a platform or not (a runtime may pick
// an entry without one). Attestation manifests alone are left out.
// incomplete says why the list misses something that may run: an entry
// that is neither an image nor an index, one not stored, or one past the
// bounds; the scan is then not "scanned".
func (s *Service) scanImages(ctx context.Context, repo string, m meta.Manifest, parsed *oci.Manifest) (images []meta.Manifest, incomplete string, err error) {
	if !oci.IsIndex(m.MediaType) {
		return []meta.Manifest{m}, "", nil
	}
	seen := map[digest.Digest]bool{m.Digest: true}
	read := 0
	note := func(format string, args ...any) {
		if incomplete == "" {
			incomplete = fmt.Sprintf(format, args...)
		}
	}
	var walk func(idx *oci.Manifest, level int) error
	walk = func(idx *oci.Manifest, level int) error {
		for _, e := range idx.Manifests {
			if oci.IsAttestation(e) || seen[e.Digest] {
				continue
			}
			seen[e.Digest] = true
			if read == maxIndexManifests {
				note("the index lists more than %d manifests: the scan does not cover them all", maxIndexManifests)
				return nil
			}
			read++
			child, err := s.st.Content.GetManifest(ctx, repo, "", e.Digest, true)
			if errors.Is(err, meta.ErrManifestNotFound) {
				note("index entry %s is not stored", e.Digest)
				continue
			}
			if err != nil {
				return fmt.Errorf("index entry %s: %w", e.Digest, err)
			}
			switch {
			case oci.IsIndex(child.MediaType):
				if level == maxIndexDepth {
					note("index entry %s is an index nested more than %d levels deep: the scan does not cover it", e.Digest, maxIndexDepth)
					continue
				}
				p, err := oci.ParseManifest(child.Content, child.MediaType)
				if err != nil {
					note("index entry %s: %v", e.Digest, err)
					continue
				}
				if err := walk(p, level+1); err != nil {
					return err
				}
			case child.MediaType == oci.MediaTypeImageManifest || child.MediaType == oci.MediaTypeDockerManifest:
				images = append(images, child)
			default:
				note("index entry %s is a %s, not an image Berth can scan", e.Digest, child.MediaType)
			}
		}
		return nil
	}
	if err := walk(parsed, 1); err != nil {
		return nil, "", err
	}
	return images, incomplete, nil
}

// scanInput is the candidate's scan: an image's own, or that of every
// image an index reaches together (the worst status wins; vulnerabilities
// of all). An index whose images cannot all be gathered is "unsupported"
// at best.
func (s *Service) scanInput(ctx context.Context, repo string, m meta.Manifest, parsed *oci.Manifest, threshold string) (Scan, string, error) {
	out := Scan{Vulnerabilities: []Vulnerability{}}
	if s.st.Scanner == nil {
		out.Status = "disabled"
		return out, "scanning is disabled on this registry", nil
	}
	images, incomplete, err := s.scanImages(ctx, repo, m, parsed)
	if err != nil {
		return Scan{}, "", err
	}
	rank := map[string]int{"scanned": 0, "unsupported": 1, "no_data": 2, "failed": 3, "pending": 4}
	status, reason := "", ""
	if incomplete != "" {
		status, reason = "unsupported", incomplete
	}
	seen := map[string]bool{}
	for _, img := range images {
		info, err := s.st.Scanner.Security(ctx, repo, img, true)
		if err != nil {
			return Scan{}, "", err
		}
		st, why := info.Status, info.Reason
		switch {
		case st == meta.ScanQueued:
			st, why = "pending", "the scan has not finished"
		case st == meta.ScanScanned && info.VulnerabilityData != nil && len(info.VulnerabilityData.Missing) == 0 && len(info.VulnerabilityData.Stale) > 0:
			// Data too old to judge by is no data, whatever Complete says.
			st, why = "no_data", "vulnerability data too old to judge it by: "+info.VulnerabilityData.Reason()
		case st == meta.ScanScanned && info.VulnerabilityData != nil && !info.VulnerabilityData.Complete:
			st, why = "no_data", "no vulnerability data to judge it by: "+info.VulnerabilityData.Reason()
		case st == meta.ScanScanned && info.Data == nil:
			// Scanned, but no report to count (an index's answer, which
			// scanImages never passes): nothing says it is clean.
			st, why = "unsupported", fmt.Sprintf("no scan report for %s", img.Digest)
		}
		if _, ok := rank[st]; !ok {
			st = "failed"
		}
		if status == "" || rank[st] > rank[status] {
			status, reason = st, why
		}
		if info.Data == nil {
			continue
		}
		for _, f := range info.Data.Layer.Features {
			for _, v := range f.Vulnerabilities {
				key := v.Name + "\x00" + f.Name + "\x00" + f.Version
				if seen[key] {
					continue
				}
				seen[key] = true
				vul := Vulnerability{ID: v.Name, Severity: v.Severity, Package: f.Name, Version: f.Version, FixedIn: v.FixedBy, Fixable: v.FixedBy != ""}
				out.Vulnerabilities = append(out.Vulnerabilities, vul)
				count(&out.Counts, v.Severity)
				if vul.Fixable {
					count(&out.Fixable, v.Severity)
				}
			}
		}
	}
	if status == "" {
		status, reason = "unsupported", "nothing to scan"
	}
	out.Status = status
	if status == "scanned" && scanCheck(out, threshold) == StatusFail {
		var parts []string
		for _, sv := range []struct {
			name string
			n    int64
		}{{"critical", out.Counts.Critical}, {"high", out.Counts.High}, {"medium", out.Counts.Medium}, {"low", out.Counts.Low},
			{"negligible", out.Counts.Negligible}, {"unknown", out.Counts.Unknown}} {
			if sv.n > 0 {
				parts = append(parts, fmt.Sprintf("%d %s", sv.n, sv.name))
			}
		}
		reason = strings.Join(parts, ", ") + " vulnerabilities (berth/scan fails at " + threshold + " and above)"
	}
	return out, reason, nil
}

func count(s *Severities, sev string) {
	switch sev {
	case "Critical":
		s.Critical++
	case "High":
		s.High++
	case "Medium":
		s.Medium++
	case "Low":
		s.Low++
	case "Negligible":
		s.Negligible++
	default:
		s.Unknown++
	}
}
