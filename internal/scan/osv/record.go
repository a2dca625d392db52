// Package osv parses OSV vulnerability records (https://ossf.github.io/osv-schema/),
// reads osv.dev import sources (all.zip files and folders of loose JSON),
// decides whether an installed package version is affected by a record and
// assesses the severity of a match.
//
// The package is pure logic: it holds no state and touches no database.
package osv

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// MaxRecordSize is the largest OSV record, in bytes, that ParseRecord accepts.
// It also caps every zip entry's decompressed size when reading import sources.
const MaxRecordSize = 4 << 20

// Range types defined by the OSV schema.
const (
	RangeEcosystem = "ECOSYSTEM"
	RangeSemver    = "SEMVER"
	RangeGit       = "GIT"
)

// Record is an OSV record (https://ossf.github.io/osv-schema/).
// Times are kept as the RFC3339 strings given.
type Record struct {
	SchemaVersion    string         `json:"schema_version,omitempty"`
	ID               string         `json:"id"`
	Modified         string         `json:"modified"`
	Published        string         `json:"published,omitempty"`
	Withdrawn        string         `json:"withdrawn,omitempty"`
	Aliases          []string       `json:"aliases,omitempty"`
	Related          []string       `json:"related,omitempty"`
	Upstream         []string       `json:"upstream,omitempty"`
	Summary          string         `json:"summary,omitempty"`
	Details          string         `json:"details,omitempty"`
	Severity         []Severity     `json:"severity,omitempty"`
	Affected         []Affected     `json:"affected,omitempty"`
	References       []Reference    `json:"references,omitempty"`
	DatabaseSpecific map[string]any `json:"database_specific,omitempty"`

	// Raw holds the bytes the record was parsed from.
	Raw json.RawMessage `json:"-"`
}

// Severity is one entry of an OSV severity list: Type is "CVSS_V2",
// "CVSS_V3", "CVSS_V4" or "Ubuntu"; Score is the vector or the word.
type Severity struct {
	Type  string `json:"type"`
	Score string `json:"score"`
}

// Package identifies an affected package.
type Package struct {
	Ecosystem string `json:"ecosystem"`
	Name      string `json:"name"`
	Purl      string `json:"purl,omitempty"`
}

// Event is one range event; exactly one field is expected to be set.
type Event struct {
	Introduced   string `json:"introduced,omitempty"`
	Fixed        string `json:"fixed,omitempty"`
	LastAffected string `json:"last_affected,omitempty"`
	Limit        string `json:"limit,omitempty"`
}

// Range is an OSV affected range.
type Range struct {
	Type             string         `json:"type"`
	Repo             string         `json:"repo,omitempty"`
	Events           []Event        `json:"events"`
	DatabaseSpecific map[string]any `json:"database_specific,omitempty"`
}

// Affected is one entry of a record's affected list.
type Affected struct {
	Package           Package        `json:"package"`
	Severity          []Severity     `json:"severity,omitempty"`
	Ranges            []Range        `json:"ranges,omitempty"`
	Versions          []string       `json:"versions,omitempty"`
	EcosystemSpecific map[string]any `json:"ecosystem_specific,omitempty"`
	DatabaseSpecific  map[string]any `json:"database_specific,omitempty"`
}

// Reference is a link attached to a record.
type Reference struct {
	Type string `json:"type"`
	URL  string `json:"url"`
}

// Key identifies a package as the caller's package index stores it:
// the ecosystem as written in the record and the normalised name.
type Key struct {
	Ecosystem string
	Name      string
}

// ErrTooLarge reports a record or zip entry over MaxRecordSize.
var ErrTooLarge = fmt.Errorf("larger than the %d byte limit", MaxRecordSize)

// ParseRecord parses and validates one OSV record. It requires an id and an
// RFC3339 modified time, accepts only ECOSYSTEM, SEMVER and GIT ranges, and
// checks that every ECOSYSTEM/SEMVER event version parses under the
// ecosystem's rules when the ecosystem is supported. Unsupported ecosystems
// are accepted (they are simply never matched by ECOSYSTEM ranges).
func ParseRecord(b []byte) (*Record, error) {
	if len(b) > MaxRecordSize {
		return nil, fmt.Errorf("osv record of %d bytes: %w", len(b), ErrTooLarge)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("decode osv record: %w", err)
	}
	if err := r.validate(); err != nil {
		return nil, err
	}
	r.Raw = json.RawMessage(bytes.Clone(b))
	return &r, nil
}

func (r *Record) validate() error {
	if strings.TrimSpace(r.ID) == "" {
		return errors.New("osv record: missing id")
	}
	if r.Modified == "" {
		return fmt.Errorf("osv record %s: missing modified", r.ID)
	}
	if _, err := time.Parse(time.RFC3339, r.Modified); err != nil {
		return fmt.Errorf("osv record %s: invalid modified %q: %w", r.ID, r.Modified, err)
	}
	for i := range r.Affected {
		a := &r.Affected[i]
		for j, rg := range a.Ranges {
			switch rg.Type {
			case RangeGit:
				continue
			case RangeEcosystem, RangeSemver:
			default:
				return fmt.Errorf("osv record %s: affected[%d] (%s/%s) range %d: unknown range type %q",
					r.ID, i, a.Package.Ecosystem, a.Package.Name, j, rg.Type)
			}
			for _, ev := range rg.Events {
				for _, v := range []string{ev.Introduced, ev.Fixed, ev.LastAffected, ev.Limit} {
					if v == "" || v == "0" || v == "*" {
						continue
					}
					if _, err := parseRangeVersion(rg.Type, a.Package.Ecosystem, v); err != nil && !errors.Is(err, errUnsupported) {
						return fmt.Errorf("osv record %s: affected[%d] package %s/%s: malformed %s version %q: %w",
							r.ID, i, a.Package.Ecosystem, a.Package.Name, rg.Type, v, err)
					}
				}
			}
		}
	}
	return nil
}

// IsWithdrawn reports whether the record has been withdrawn.
func (r *Record) IsWithdrawn() bool { return strings.TrimSpace(r.Withdrawn) != "" }

// Keys lists the distinct (ecosystem, name) pairs the record names, with
// names normalised as Matches does. Ecosystems are as written in the record;
// see LookupKeys for the keys to query for an installed package.
func (r *Record) Keys() []Key {
	var keys []Key
	seen := map[Key]bool{}
	for _, a := range r.Affected {
		if a.Package.Ecosystem == "" || a.Package.Name == "" {
			continue
		}
		k := Key{Ecosystem: a.Package.Ecosystem, Name: NormalizeName(a.Package.Ecosystem, a.Package.Name)}
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	return keys
}

// LookupKeys lists the keys under which records that may affect the installed
// package are stored: the exact ecosystem and, when it carries a release
// suffix ("Debian:12"), the bare base ecosystem ("Debian").
func LookupKeys(ecosystem, name string) []Key {
	n := NormalizeName(ecosystem, name)
	keys := []Key{{Ecosystem: ecosystem, Name: n}}
	if base := BaseEcosystem(ecosystem); base != ecosystem {
		keys = append(keys, Key{Ecosystem: base, Name: n})
	}
	return keys
}

// Link returns the record's first ADVISORY reference, else its first WEB
// reference, else its osv.dev page.
func (r *Record) Link() string {
	for _, typ := range []string{"ADVISORY", "WEB"} {
		for _, ref := range r.References {
			if ref.Type == typ && ref.URL != "" {
				return ref.URL
			}
		}
	}
	return "https://osv.dev/vulnerability/" + r.ID
}

// Description returns the summary, else the first 500 runes of the details.
func (r *Record) Description() string {
	if s := strings.TrimSpace(r.Summary); s != "" {
		return s
	}
	d := strings.TrimSpace(r.Details)
	if rs := []rune(d); len(rs) > 500 {
		return string(rs[:500])
	}
	return d
}
