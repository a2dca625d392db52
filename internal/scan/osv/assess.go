package osv

import (
	"math"
	"strings"
)

// CVSS is a scored CVSS vector.
type CVSS struct {
	Version string  // "2.0", "3.0", "3.1" or "4.0"
	Vector  string  // as given in the record
	Score   float64 // computed from the vector
}

// Assessment is the severity of a record for one affected entry.
type Assessment struct {
	// Severity is the final severity, one of the Severity constants.
	Severity string
	// VendorSeverity is the distribution's or advisory database's own
	// severity, normalised; "" when none was given.
	VendorSeverity string
	// Vendor names the source of VendorSeverity ("Debian", "Ubuntu",
	// "GitHub", "Red Hat", ...); "" when VendorSeverity is "".
	Vendor string
	// CVSS is the preferred vector: v3, else v4, else v2.
	CVSS *CVSS
	// CVSSv4 is the v4.0 vector, when the record has one.
	CVSSv4 *CVSS
	// Reclassified is set when Quay's rule replaced the vendor severity by
	// the CVSS bucket; ReclassifiedFrom is the vendor severity and
	// ReclassifiedBy "NVD" (top-level vector) or the vendor name.
	Reclassified     bool
	ReclassifiedFrom string
	ReclassifiedBy   string
}

// idVendors maps record id prefixes to vendor names.
var idVendors = []struct{ prefix, vendor string }{
	{"DSA-", "Debian"}, {"DLA-", "Debian"}, {"DTSA-", "Debian"}, {"DEBIAN-", "Debian"},
	{"USN-", "Ubuntu"}, {"UBUNTU-", "Ubuntu"}, {"LSN-", "Ubuntu"},
	{"GHSA-", "GitHub"},
	{"RHSA-", "Red Hat"}, {"RHBA-", "Red Hat"}, {"RHEA-", "Red Hat"},
	{"RLSA-", "Rocky Linux"}, {"RXSA-", "Rocky Linux"},
	{"ALSA-", "AlmaLinux"}, {"ALBA-", "AlmaLinux"}, {"ALEA-", "AlmaLinux"},
	{"SUSE-", "SUSE"}, {"openSUSE-", "SUSE"},
	{"ELSA-", "Oracle"},
	{"ALPINE-", "Alpine"},
	{"CGA-", "Chainguard"},
	{"GO-", "Go"},
	{"PYSEC-", "PyPI"},
	{"MAL-", "OpenSSF"},
}

// ecosystemVendors maps base ecosystems to vendor names.
var ecosystemVendors = map[string]string{
	"Debian": "Debian", "Ubuntu": "Ubuntu", "Alpine": "Alpine", "Red Hat": "Red Hat",
	"Rocky Linux": "Rocky Linux", "AlmaLinux": "AlmaLinux", "SUSE": "SUSE", "openSUSE": "SUSE",
	"Wolfi": "Wolfi", "Chainguard": "Chainguard", "Go": "Go", "PyPI": "PyPI",
}

// vendor names the record's source from its id prefix, else from the
// affected entry's ecosystem.
func (r *Record) vendor(aff *Affected) string {
	for _, iv := range idVendors {
		if strings.HasPrefix(r.ID, iv.prefix) {
			return iv.vendor
		}
	}
	if aff != nil {
		return ecosystemVendors[BaseEcosystem(aff.Package.Ecosystem)]
	}
	return ""
}

// debianUrgency maps Debian security tracker urgencies to severities,
// shifted one level up as Clair does.
func debianUrgency(u string) string {
	switch strings.ToLower(strings.TrimRight(strings.TrimSpace(u), "*")) {
	case "unimportant":
		return SeverityLow
	case "low":
		return SeverityMedium
	case "medium":
		return SeverityHigh
	case "high":
		return SeverityCritical
	}
	return "" // "not yet assigned", "end-of-life", empty
}

func stringField(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return s
}

// vendorSeverity returns the normalised vendor severity, "" if none.
func (r *Record) vendorSeverity(aff *Affected, vendor string) string {
	var affEco string
	if aff != nil {
		affEco = BaseEcosystem(aff.Package.Ecosystem)
	}
	if aff != nil && (vendor == "Debian" || affEco == "Debian") {
		if s := debianUrgency(stringField(aff.EcosystemSpecific, "urgency")); s != "" {
			return s
		}
		if s := debianUrgency(stringField(aff.DatabaseSpecific, "urgency")); s != "" {
			return s
		}
	}
	lists := [][]Severity{r.Severity}
	if aff != nil {
		lists = append(lists, aff.Severity)
	}
	for _, l := range lists {
		for _, s := range l {
			if strings.EqualFold(s.Type, "Ubuntu") {
				if v := normalizeVendorWord(s.Score); v != "" {
					return v
				}
			}
		}
	}
	if vendor == "Alpine" {
		return ""
	}
	// GitHub (database_specific.severity LOW/MODERATE/HIGH/CRITICAL) and the
	// Red Hat / SUSE / Oracle style words.
	maps := []map[string]any{r.DatabaseSpecific}
	if aff != nil {
		maps = append(maps, aff.DatabaseSpecific, aff.EcosystemSpecific)
	}
	for _, m := range maps {
		if v := normalizeVendorWord(stringField(m, "severity")); v != "" {
			return v
		}
	}
	return ""
}

// scoredVector is a CVSS vector with where it came from.
type scoredVector struct {
	cvss     *CVSS
	topLevel bool
}

// vectors picks the first valid v3, v4 and v2 vectors, top-level entries
// first, then the affected entry's.
func (r *Record) vectors(aff *Affected) (v3, v4, v2 *scoredVector) {
	type src struct {
		list     []Severity
		topLevel bool
	}
	srcs := []src{{r.Severity, true}}
	if aff != nil {
		srcs = append(srcs, src{aff.Severity, false})
	}
	for _, s := range srcs {
		for _, sev := range s.list {
			var slot **scoredVector
			switch strings.ToUpper(sev.Type) {
			case "CVSS_V3":
				slot = &v3
			case "CVSS_V4":
				slot = &v4
			case "CVSS_V2":
				slot = &v2
			default:
				continue
			}
			if *slot != nil {
				continue
			}
			score, version, err := ScoreVector(sev.Score)
			if err != nil {
				continue
			}
			*slot = &scoredVector{cvss: &CVSS{Version: version, Vector: strings.TrimSpace(sev.Score), Score: score}, topLevel: s.topLevel}
		}
	}
	return v3, v4, v2
}

// Assess determines the severity of the record for the affected entry aff
// (which may be nil): the vendor severity when there is one, else the CVSS
// bucket, else Unknown; a vendor severity is reclassified to the CVSS bucket
// when the CVSS score exceeds the vendor severity's score (Negligible 0,
// Low 3, Medium 6, High 9, Critical 10) by more than 2, as Quay does.
func (r *Record) Assess(aff *Affected) Assessment {
	var a Assessment
	vendor := r.vendor(aff)
	if vs := r.vendorSeverity(aff, vendor); vs != "" {
		a.VendorSeverity = vs
		a.Vendor = vendor
		if a.Vendor == "" && aff != nil {
			a.Vendor = BaseEcosystem(aff.Package.Ecosystem)
		}
		if a.Vendor == "" {
			a.Vendor = "unknown"
		}
	}
	v3, v4, v2 := r.vectors(aff)
	chosen := v3
	if chosen == nil {
		chosen = v4
	}
	if chosen == nil {
		chosen = v2
	}
	if chosen != nil {
		a.CVSS = chosen.cvss
	}
	if v4 != nil {
		a.CVSSv4 = v4.cvss
	}

	switch {
	case a.VendorSeverity != "" && a.VendorSeverity != SeverityUnknown:
		a.Severity = a.VendorSeverity
		if chosen == nil {
			break
		}
		if vsScore, ok := vendorScore(a.VendorSeverity); ok && math.Round(chosen.cvss.Score*10) > (vsScore+2)*10 {
			a.Severity = SeverityForScore(chosen.cvss.Score)
			a.Reclassified = true
			a.ReclassifiedFrom = a.VendorSeverity
			a.ReclassifiedBy = a.Vendor
			if chosen.topLevel {
				a.ReclassifiedBy = "NVD"
			}
		}
	case chosen != nil:
		a.Severity = SeverityForScore(chosen.cvss.Score)
	default:
		a.Severity = SeverityUnknown
	}
	return a
}
