package osv

import (
	"encoding/json"
	"testing"
)

// rec builds a record with the given affected entries.
func rec(t *testing.T, id string, affected ...Affected) *Record {
	t.Helper()
	b, err := json.Marshal(Record{ID: id, Modified: "2024-01-01T00:00:00Z", Affected: affected})
	if err != nil {
		t.Fatal(err)
	}
	return mustRecord(t, string(b))
}

func aff(eco, name string, ranges ...Range) Affected {
	return Affected{Package: Package{Ecosystem: eco, Name: name}, Ranges: ranges}
}

func rng(typ string, events ...Event) Range { return Range{Type: typ, Events: events} }

func intro(v string) Event { return Event{Introduced: v} }
func fixed(v string) Event { return Event{Fixed: v} }
func last(v string) Event  { return Event{LastAffected: v} }
func limit(v string) Event { return Event{Limit: v} }

func TestMatches(t *testing.T) {
	debZlib := aff("Debian:12", "zlib", rng(RangeEcosystem, intro("0"), fixed("1:1.2.13.dfsg-1+deb12u1")))
	multi := aff("npm", "lodash",
		rng(RangeSemver, intro("1.0.0"), fixed("1.5.0")),
		rng(RangeSemver, intro("2.0.0"), fixed("2.3.0"), intro("3.0.0"), fixed("3.1.0")),
		rng(RangeSemver, intro("1.2.0"), fixed("1.4.0")),
	)
	withdrawn := rec(t, "W-1", debZlib)
	withdrawn.Withdrawn = "2024-02-01T00:00:00Z"

	tests := []struct {
		name              string
		r                 *Record
		eco, pkg, version string
		want              bool
		wantFixed         string
	}{
		{"debian epoch before fix", rec(t, "D", debZlib), "Debian:12", "zlib", "1:1.2.13.dfsg-1", true, "1:1.2.13.dfsg-1+deb12u1"},
		{"debian at fix", rec(t, "D", debZlib), "Debian:12", "zlib", "1:1.2.13.dfsg-1+deb12u1", false, ""},
		{"debian without epoch is older", rec(t, "D", debZlib), "Debian:12", "zlib", "1.2.13.dfsg-9", true, "1:1.2.13.dfsg-1+deb12u1"},
		{"debian tilde sorts before", rec(t, "D", aff("Debian:12", "p", rng(RangeEcosystem, intro("0"), fixed("2.0-1")))), "Debian:12", "p", "2.0~rc1-1", true, "2.0-1"},
		{"debian release mismatch", rec(t, "D", aff("Debian:11", "zlib", rng(RangeEcosystem, intro("0"), fixed("1:9")))), "Debian:12", "zlib", "1:1.2.13.dfsg-1", false, ""},
		{"bare debian matches release", rec(t, "D", aff("Debian", "zlib", rng(RangeEcosystem, intro("0"), fixed("1:9")))), "Debian:12", "zlib", "1:1.2.13.dfsg-1", true, "1:9"},
		{"release does not match bare installed", rec(t, "D", debZlib), "Debian", "zlib", "1:1.2.13.dfsg-1", false, ""},
		{"name mismatch", rec(t, "D", debZlib), "Debian:12", "zlib1g", "1:1.2.13.dfsg-1", false, ""},
		{"unparsable installed", rec(t, "D", debZlib), "Debian:12", "zlib", "!!", false, ""},
		{"withdrawn", withdrawn, "Debian:12", "zlib", "1:1.2.13.dfsg-1", false, ""},
		{"last_affected inclusive", rec(t, "L", aff("Alpine:v3.19", "musl", rng(RangeEcosystem, intro("1.2.0-r0"), last("1.2.4-r2")))), "Alpine:v3.19", "musl", "1.2.4-r2", true, ""},
		{"past last_affected", rec(t, "L", aff("Alpine:v3.19", "musl", rng(RangeEcosystem, intro("1.2.0-r0"), last("1.2.4-r2")))), "Alpine:v3.19", "musl", "1.2.4-r3", false, ""},
		{"alpine r suffix before fix", rec(t, "A", aff("Alpine:v3.19", "musl", rng(RangeEcosystem, intro("0"), fixed("1.2.4-r3")))), "Alpine:v3.19", "musl", "1.2.4-r2", true, "1.2.4-r3"},
		{"alpine other branch", rec(t, "A", aff("Alpine:v3.18", "musl", rng(RangeEcosystem, intro("0"), fixed("1.2.4-r3")))), "Alpine:v3.19", "musl", "1.2.4-r2", false, ""},
		{"below introduced", rec(t, "A", aff("Alpine:v3.19", "musl", rng(RangeEcosystem, intro("1.2.3-r0"), fixed("1.2.4-r3")))), "Alpine:v3.19", "musl", "1.2.2-r7", false, ""},
		{"limit caps", rec(t, "M", aff("Maven", "org.x:y", rng(RangeEcosystem, intro("0"), limit("2.0")))), "Maven", "org.x:y", "2.1", false, ""},
		{"under limit", rec(t, "M", aff("Maven", "org.x:y", rng(RangeEcosystem, intro("0"), limit("2.0")))), "Maven", "org.x:y", "1.9", true, ""},
		{"versions only", rec(t, "V", Affected{Package: Package{Ecosystem: "PyPI", Name: "requests"}, Versions: []string{"2.0.0", "2.0.1"}}), "PyPI", "requests", "2.0.1", true, ""},
		{"versions only pep440 equal", rec(t, "V", Affected{Package: Package{Ecosystem: "PyPI", Name: "requests"}, Versions: []string{"2.1"}}), "PyPI", "requests", "2.1.0", true, ""},
		{"versions only miss", rec(t, "V", Affected{Package: Package{Ecosystem: "PyPI", Name: "requests"}, Versions: []string{"2.0.0"}}), "PyPI", "requests", "2.0.2", false, ""},
		{"go v prefix", rec(t, "GO-1", aff("Go", "golang.org/x/net", rng(RangeSemver, intro("0"), fixed("0.23.0")))), "Go", "golang.org/x/net", "v0.22.0", true, "0.23.0"},
		{"go v prefix fixed", rec(t, "GO-1", aff("Go", "golang.org/x/net", rng(RangeSemver, intro("0"), fixed("0.23.0")))), "Go", "golang.org/x/net", "v0.23.0", false, ""},
		{"go stdlib", rec(t, "GO-2", aff("Go", "stdlib", rng(RangeSemver, intro("0"), fixed("1.21.8"), intro("1.22.0-0"), fixed("1.22.1")))), "Go", "stdlib", "go1.22.0", true, "1.22.1"},
		{"go stdlib patched", rec(t, "GO-2", aff("Go", "stdlib", rng(RangeSemver, intro("0"), fixed("1.21.8"), intro("1.22.0-0"), fixed("1.22.1")))), "Go", "stdlib", "1.21.8", false, ""},
		{"go garbage version", rec(t, "GO-2", aff("Go", "stdlib", rng(RangeSemver, intro("0"), fixed("1.21.8")))), "Go", "stdlib", "devel", false, ""},
		{"pypi name normalisation", rec(t, "P", aff("PyPI", "Zope.Interface", rng(RangeEcosystem, intro("0"), fixed("5.0")))), "PyPI", "zope__interface", "4.7.1", true, "5.0"},
		{"npm name is exact", rec(t, "N", aff("npm", "Lodash", rng(RangeSemver, intro("0"), fixed("5.0.0")))), "npm", "lodash", "4.0.0", false, ""},
		{"semver prerelease", rec(t, "S", aff("npm", "x", rng(RangeSemver, intro("0"), fixed("2.0.0")))), "npm", "x", "2.0.0-rc.1", true, "2.0.0"},
		{"git range ignored", rec(t, "G", Affected{Package: Package{Ecosystem: "Debian:12", Name: "zlib"}, Ranges: []Range{{Type: RangeGit, Repo: "https://x", Events: []Event{intro("0")}}}}), "Debian:12", "zlib", "1:1.0-1", false, ""},
		{"fixedby among ranges first", rec(t, "F", multi), "npm", "lodash", "1.3.0", true, "1.4.0"},
		{"fixedby among ranges second", rec(t, "F", multi), "npm", "lodash", "3.0.5", true, "3.1.0"},
		{"fixedby between ranges", rec(t, "F", multi), "npm", "lodash", "2.5.0", false, ""},
		{"ubuntu lts", rec(t, "U", aff("Ubuntu:22.04:LTS", "openssl", rng(RangeEcosystem, intro("0"), fixed("3.0.2-0ubuntu1.15")))), "Ubuntu:22.04:LTS", "openssl", "3.0.2-0ubuntu1.14", true, "3.0.2-0ubuntu1.15"},
		{"unsupported ecosystem", rec(t, "X", aff("NoSuchEco", "p", rng(RangeEcosystem, intro("0")))), "NoSuchEco", "p", "1.0", false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, ok := tt.r.Matches(tt.eco, tt.pkg, tt.version)
			if ok != tt.want {
				t.Fatalf("Matches(%q, %q, %q) = %v, want %v", tt.eco, tt.pkg, tt.version, ok, tt.want)
			}
			if m.FixedBy != tt.wantFixed {
				t.Errorf("FixedBy = %q, want %q", m.FixedBy, tt.wantFixed)
			}
			if ok && m.Affected == nil {
				t.Errorf("Affected not set")
			}
		})
	}
}

func TestMatchesPicksMatchingEntry(t *testing.T) {
	r := rec(t, "D",
		aff("Debian:11", "zlib", rng(RangeEcosystem, intro("0"), fixed("1:1.2.11.dfsg-2+deb11u2"))),
		aff("Debian:12", "zlib", rng(RangeEcosystem, intro("0"), fixed("1:1.2.13.dfsg-1+deb12u1"))),
	)
	m, ok := r.Matches("Debian:12", "zlib", "1:1.2.13.dfsg-1")
	if !ok || m.Affected != &r.Affected[1] {
		t.Fatalf("Matches = %+v, %v; want the Debian:12 entry", m, ok)
	}
}
