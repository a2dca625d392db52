package osv

import (
	"errors"
	"fmt"
	"math"
	"strings"

	gocvss20 "github.com/pandatix/go-cvss/20"
	gocvss30 "github.com/pandatix/go-cvss/30"
	gocvss31 "github.com/pandatix/go-cvss/31"
	gocvss40 "github.com/pandatix/go-cvss/40"
)

// Severity levels, as Clair and Quay name them.
const (
	SeverityUnknown    = "Unknown"
	SeverityNegligible = "Negligible"
	SeverityLow        = "Low"
	SeverityMedium     = "Medium"
	SeverityHigh       = "High"
	SeverityCritical   = "Critical"
)

// severities lists the levels in rank order.
var severities = [...]string{SeverityUnknown, SeverityNegligible, SeverityLow, SeverityMedium, SeverityHigh, SeverityCritical}

// SeverityRank orders severities for sorting and thresholds: Unknown 0,
// Negligible 1, Low 2, Medium 3, High 4, Critical 5. Matching is
// case-insensitive; unrecognised names rank 0.
func SeverityRank(s string) int {
	for i, name := range severities {
		if strings.EqualFold(strings.TrimSpace(s), name) {
			return i
		}
	}
	return 0
}

// ParseSeverity normalises a severity name (case-insensitive) or one of
// Quay's level indexes ("0" Critical, "1" High, "2" Medium, "3" Low,
// "4" Negligible, "5" Unknown).
func ParseSeverity(s string) (string, bool) {
	s = strings.TrimSpace(s)
	if len(s) == 1 && s[0] >= '0' && s[0] <= '5' {
		return severities[5-int(s[0]-'0')], true
	}
	for _, name := range severities {
		if strings.EqualFold(s, name) {
			return name, true
		}
	}
	return "", false
}

// ScoreVector computes the base score of a CVSS vector. Vectors prefixed
// "CVSS:3.0/", "CVSS:3.1/" and "CVSS:4.0/" are scored as such (version
// "3.0", "3.1", "4.0"); a vector without prefix is tried as CVSS v2
// (version "2.0"). For v4.0 the score is CVSS-B, or CVSS-BT/BE/BTE when the
// vector carries threat or environmental metrics.
func ScoreVector(vector string) (score float64, version string, err error) {
	vector = strings.TrimSpace(vector)
	switch {
	case strings.HasPrefix(vector, "CVSS:3.0/"):
		c, err := gocvss30.ParseVector(vector)
		if err != nil {
			return 0, "", fmt.Errorf("parse CVSS 3.0 vector %q: %w", vector, err)
		}
		return c.BaseScore(), "3.0", nil
	case strings.HasPrefix(vector, "CVSS:3.1/"):
		c, err := gocvss31.ParseVector(vector)
		if err != nil {
			return 0, "", fmt.Errorf("parse CVSS 3.1 vector %q: %w", vector, err)
		}
		return c.BaseScore(), "3.1", nil
	case strings.HasPrefix(vector, "CVSS:4.0/"):
		c, err := gocvss40.ParseVector(vector)
		if err != nil {
			return 0, "", fmt.Errorf("parse CVSS 4.0 vector %q: %w", vector, err)
		}
		return c.Score(), "4.0", nil
	case strings.HasPrefix(vector, "CVSS:"):
		return 0, "", fmt.Errorf("unsupported CVSS version in %q", vector)
	case vector == "":
		return 0, "", errors.New("empty CVSS vector")
	}
	v2 := strings.TrimSuffix(strings.TrimPrefix(vector, "("), ")")
	c, err := gocvss20.ParseVector(v2)
	if err != nil {
		return 0, "", fmt.Errorf("parse CVSS 2.0 vector %q: %w", vector, err)
	}
	return c.BaseScore(), "2.0", nil
}

// SeverityForScore buckets a CVSS score (rounded to one decimal): 0
// Negligible, 0.1–3.9 Low, 4.0–6.9 Medium, 7.0–8.9 High, 9.0–10.0 Critical.
// Negative or NaN scores are Unknown.
func SeverityForScore(score float64) string {
	if math.IsNaN(score) || score < 0 {
		return SeverityUnknown
	}
	tenths := math.Round(score * 10)
	switch {
	case tenths == 0:
		return SeverityNegligible
	case tenths < 40:
		return SeverityLow
	case tenths < 70:
		return SeverityMedium
	case tenths < 90:
		return SeverityHigh
	default:
		return SeverityCritical
	}
}

// normalizeVendorWord maps the severity words vendors use (Red Hat, SUSE,
// Oracle, GitHub, Ubuntu) to the six levels; "" when unrecognised.
func normalizeVendorWord(s string) string {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "negligible", "none", "unimportant":
		return SeverityNegligible
	case "low":
		return SeverityLow
	case "moderate", "medium":
		return SeverityMedium
	case "important", "high":
		return SeverityHigh
	case "critical":
		return SeverityCritical
	case "unknown", "untriaged":
		return SeverityUnknown
	}
	return ""
}

// vendorScore is the CVSS-equivalent score Quay's reclassification rule
// gives a vendor severity.
func vendorScore(s string) (float64, bool) {
	switch s {
	case SeverityNegligible:
		return 0, true
	case SeverityLow:
		return 3, true
	case SeverityMedium:
		return 6, true
	case SeverityHigh:
		return 9, true
	case SeverityCritical:
		return 10, true
	}
	return 0, false
}
