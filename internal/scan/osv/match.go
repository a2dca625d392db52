package osv

import (
	"slices"
	"strings"

	"github.com/google/osv-scalibr/semantic"
)

// Match describes why an installed package is affected by a record.
type Match struct {
	// Affected is the affected entry that matched.
	Affected *Affected
	// FixedBy is the smallest fixed version greater than the installed
	// version within the matching range(s); "" when none is known.
	FixedBy string
}

// Matches reports whether the installed package (ecosystem as in
// OSEcosystem or LanguageEcosystem, name and version as installed) is
// affected by the record, following the OSV schema's evaluation rules.
// Withdrawn records never match; GIT ranges are ignored; an installed
// version that does not parse never matches a range.
func (r *Record) Matches(ecosystem, name, version string) (m Match, ok bool) {
	if r.IsWithdrawn() {
		return Match{}, false
	}
	name = NormalizeName(ecosystem, name)
	version = strings.TrimSpace(version)
	if BaseEcosystem(ecosystem) == "Go" {
		version = strings.TrimPrefix(version, "v")
		if name == "stdlib" || name == "toolchain" {
			version = strings.TrimPrefix(version, "go")
		}
	}
	for i := range r.Affected {
		a := &r.Affected[i]
		if !ecosystemMatches(a.Package.Ecosystem, ecosystem) || NormalizeName(ecosystem, a.Package.Name) != name {
			continue
		}
		if fixed, hit := a.affects(ecosystem, version); hit {
			return Match{Affected: a, FixedBy: fixed}, true
		}
	}
	return Match{}, false
}

// ecosystemMatches reports whether an affected entry's ecosystem covers the
// installed package's ecosystem: exactly, or as a bare base ecosystem
// ("Debian" covers "Debian:12").
func ecosystemMatches(affected, installed string) bool {
	if affected == "" {
		return false
	}
	if affected == installed {
		return true
	}
	return !strings.Contains(affected, ":") && strings.HasPrefix(installed, affected+":")
}

// affects evaluates the entry for the installed version, returning the
// smallest fixed version above it among the ranges that matched.
func (a *Affected) affects(ecosystem, version string) (fixedBy string, hit bool) {
	var fixed semantic.Version
	for _, rg := range a.Ranges {
		if rg.Type != RangeEcosystem && rg.Type != RangeSemver {
			continue
		}
		installed, err := parseInstalled(rg.Type, ecosystem, version)
		if err != nil {
			continue
		}
		ok, f, fv := rangeAffects(rg, ecosystem, installed)
		if !ok {
			continue
		}
		hit = true
		if fv != nil && (fixed == nil || cmp(fv, fixed) < 0) {
			fixed, fixedBy = fv, f
		}
	}
	if hit {
		return fixedBy, true
	}
	return "", a.listed(ecosystem, version)
}

// listed reports whether version appears in the entry's versions list, by
// string or, when both parse, by version equality.
func (a *Affected) listed(ecosystem, version string) bool {
	if version == "" {
		return false
	}
	if slices.Contains(a.Versions, version) {
		return true
	}
	installed, err := parseInstalled(RangeEcosystem, ecosystem, version)
	if err != nil {
		return false
	}
	for _, v := range a.Versions {
		if c, err := installed.CompareStr(v); err == nil && c == 0 {
			if _, perr := parseEcosystemVersion(ecosystem, v); perr == nil {
				return true
			}
		}
	}
	return false
}

type event struct {
	kind string // introduced, fixed, last_affected, limit
	raw  string
	v    semantic.Version // nil for introduced "0"
}

func cmp(a, b semantic.Version) int {
	c, err := a.Compare(b)
	if err != nil {
		return 0
	}
	return c
}

// rangeAffects walks the range's events in version order as the OSV schema
// specifies. It returns whether installed is affected and, if so, the
// smallest fixed version greater than installed.
func rangeAffects(rg Range, ecosystem string, installed semantic.Version) (bool, string, semantic.Version) {
	var events, limits []event
	for _, e := range rg.Events {
		kind, raw := "introduced", e.Introduced
		switch {
		case e.Introduced != "":
		case e.Fixed != "":
			kind, raw = "fixed", e.Fixed
		case e.LastAffected != "":
			kind, raw = "last_affected", e.LastAffected
		case e.Limit != "":
			kind, raw = "limit", e.Limit
		default:
			continue
		}
		if kind == "limit" && raw == "*" {
			continue
		}
		ev := event{kind: kind, raw: raw}
		if !(kind == "introduced" && raw == "0") {
			v, err := parseRangeVersion(rg.Type, ecosystem, raw)
			if err != nil {
				return false, "", nil // cannot order this range
			}
			ev.v = v
		}
		if kind == "limit" {
			limits = append(limits, ev)
			continue
		}
		events = append(events, ev)
	}
	if len(limits) > 0 && !slices.ContainsFunc(limits, func(l event) bool { return cmp(installed, l.v) < 0 }) {
		return false, "", nil
	}
	slices.SortStableFunc(events, func(a, b event) int {
		switch {
		case a.v == nil && b.v == nil:
			return 0
		case a.v == nil:
			return -1
		case b.v == nil:
			return 1
		}
		return cmp(a.v, b.v)
	})
	affected := false
	for _, e := range events {
		switch e.kind {
		case "introduced":
			if e.v == nil || cmp(installed, e.v) >= 0 {
				affected = true
			}
		case "fixed":
			if cmp(installed, e.v) >= 0 {
				affected = false
			}
		case "last_affected":
			if cmp(installed, e.v) > 0 {
				affected = false
			}
		}
	}
	if !affected {
		return false, "", nil
	}
	var fixed semantic.Version
	var fixedRaw string
	for _, e := range events {
		if e.kind == "fixed" && cmp(e.v, installed) > 0 && (fixed == nil || cmp(e.v, fixed) < 0) {
			fixed, fixedRaw = e.v, e.raw
		}
	}
	return true, fixedRaw, fixed
}
