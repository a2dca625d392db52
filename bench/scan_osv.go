package main

// Content for the scanning benchmark (-scan): the OSV records and the
// scanned-manifest population of the re-match rows, generated from fixed
// seeds (scan_data.go makes the image).

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan/osv"
)

// ---- OSV records ----

var cvssVectors = []string{
	"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H",
	"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:N/I:N/A:H",
	"CVSS:3.1/AV:N/AC:L/PR:N/UI:R/S:C/C:L/I:L/A:N",
	"CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:H/A:H",
	"CVSS:3.1/AV:L/AC:L/PR:L/UI:N/S:U/C:H/I:N/A:N",
	"CVSS:3.1/AV:N/AC:H/PR:N/UI:N/S:U/C:H/I:N/A:N",
	"CVSS:3.1/AV:N/AC:L/PR:L/UI:N/S:U/C:L/I:N/A:N",
	"CVSS:3.1/AV:L/AC:H/PR:L/UI:N/S:U/C:N/I:N/A:H",
}

var debianUrgencies = []string{"unimportant", "unimportant", "low", "low", "low", "medium", "medium", "high", "not yet assigned"}

// recordSet is the generated advisory database.
type recordSet struct {
	json   []byte // one JSON array
	count  int
	perEco map[string]int
	hits   int // records naming a package of the image
}

// ecoPool is one ecosystem's share of the database: the image's packages
// (name → installed version, as advisories name them) and the other names.
type ecoPool struct {
	eco, rangeType string
	share, hitRate float64 // of all records; of this ecosystem's records naming the image
	image          []langPkg
	others         []string
}

const benchModified = "2026-11-01T00:00:00Z"

// affectedEntry makes an affected entry for name at installed version v
// (empty when the package is not in the image): affected in about 60% of
// the cases, through fixed, last_affected, versions[] or an open range.
func affectedEntry(rng *rand.Rand, p ecoPool, eco, name, v string) osv.Affected {
	if v == "" {
		if p.rangeType == "SEMVER" {
			v = semverVersion(rng)
		} else if strings.HasPrefix(eco, "Alpine") {
			v = semverVersion(rng) + "-r" + strconv.Itoa(rng.IntN(4))
		} else {
			v = debianVersion(rng)
		}
	}
	bare := v
	if p.eco == "Go" {
		bare = strings.TrimPrefix(v, "v")
	}
	a := osv.Affected{Package: osv.Package{Ecosystem: eco, Name: name}}
	rangeOf := func(ev ...osv.Event) {
		a.Ranges = append(a.Ranges, osv.Range{Type: p.rangeType, Events: append([]osv.Event{{Introduced: "0"}}, ev...)})
	}
	notAffected := func() {
		if lo, ok := below(eco, bare); ok {
			rangeOf(osv.Event{Fixed: lo})
			return
		}
		hi := above(eco, bare)
		a.Ranges = append(a.Ranges, osv.Range{Type: p.rangeType, Events: []osv.Event{{Introduced: hi}, {Fixed: above(eco, hi)}}})
	}
	r := rng.IntN(100)
	if p.rangeType == "SEMVER" && r >= 70 && r < 90 {
		r -= 40 // no versions[] lists in Go and npm records
	}
	switch {
	case r < 35:
		rangeOf(osv.Event{Fixed: above(eco, bare)})
	case r < 70:
		notAffected()
	case r < 78:
		rangeOf(osv.Event{LastAffected: bare})
	case r < 85:
		a.Versions = []string{bare}
		for range 2 + rng.IntN(6) {
			a.Versions = append(a.Versions, above(eco, bare)+"~"+strconv.Itoa(rng.IntN(9)))
		}
	case r < 90:
		notAffected()
		a.Versions = []string{above(eco, bare)}
	default:
		rangeOf() // no fix yet
	}
	switch p.eco {
	case "Debian":
		a.EcosystemSpecific = map[string]any{"urgency": debianUrgencies[rng.IntN(len(debianUrgencies))]}
		a.Package.Purl = "pkg:deb/debian/" + name + "?arch=source"
	case "Alpine":
		a.DatabaseSpecific = map[string]any{"source": "https://secdb.alpinelinux.org/v3.19/main.json"}
	case "Go":
		a.EcosystemSpecific = map[string]any{"imports": []map[string]any{{"path": name + "/internal/" + synthName(rng), "symbols": []string{"Parse", "Reader.Read"}}}}
	case "npm":
		a.Package.Purl = "pkg:npm/" + name
	case "PyPI":
		a.Package.Purl = "pkg:pypi/" + name
	}
	return a
}

// makeRecords generates n OSV records: Debian:12 most, then npm, Go,
// PyPI and Alpine:v3.19; a small share of each names the image's packages.
func makeRecords(n int, img *imageSpec, debPool []string) (*recordSet, error) {
	rng := rand.New(rand.NewPCG(3, 4))
	var deb []langPkg
	seen := map[string]bool{}
	for _, p := range img.dpkg {
		if !seen[p.srcName()] {
			seen[p.srcName()] = true
			deb = append(deb, langPkg{p.srcName(), p.srcVersion()})
		}
	}
	pools := []ecoPool{
		{eco: "Debian", rangeType: "ECOSYSTEM", share: 0.70, hitRate: 0.01, image: deb, others: debPool},
		{eco: "Alpine", rangeType: "ECOSYSTEM", share: 0.05, others: uniquePool(rng, realDebianSources, 1500, debianStyle)},
		{eco: "Go", rangeType: "SEMVER", share: 0.08, hitRate: 0.015, image: img.gomods, others: uniquePool(rng, nil, 3000, goStyle)},
		{eco: "npm", rangeType: "SEMVER", share: 0.10, hitRate: 0.015, image: img.npm, others: uniquePool(rng, realNPM, 5000, npmStyle)},
		{eco: "PyPI", rangeType: "ECOSYSTEM", share: 0.07, hitRate: 0.015, image: img.pypi, others: uniquePool(rng, realPyPI, 2500, pypiStyle)},
	}
	inImage := map[string]map[string]bool{}
	for _, p := range pools {
		inImage[p.eco] = map[string]bool{}
		for _, ip := range p.image {
			inImage[p.eco][ip.name] = true
		}
	}
	rs := &recordSet{count: n, perEco: map[string]int{}}
	var buf bytes.Buffer
	buf.WriteByte('[')
	for i := range n {
		x, pi := rng.Float64(), 0
		for acc := 0.0; pi < len(pools)-1; pi++ {
			if acc += pools[pi].share; x < acc {
				break
			}
		}
		p := pools[pi]
		var name, version string
		if len(p.image) > 0 && rng.Float64() < p.hitRate {
			ip := p.image[rng.IntN(len(p.image))]
			name, version = ip.name, ip.version
			rs.hits++
		} else {
			// Popular names get more advisories; the image's names only
			// through hitRate.
			for name == "" || inImage[p.eco][name] {
				name = p.others[int(float64(len(p.others))*rng.Float64()*rng.Float64())]
			}
		}
		year := 2016 + rng.IntN(11)
		cve := fmt.Sprintf("CVE-%d-%d", year, 1000+i)
		rec := osv.Record{SchemaVersion: "1.6.0", Modified: benchModified, Published: fmt.Sprintf("%d-%02d-%02dT00:00:00Z", year, 1+rng.IntN(12), 1+rng.IntN(28)),
			Details: words(rng, 40+rng.IntN(80))}
		if rng.IntN(100) < 45 {
			rec.Severity = []osv.Severity{{Type: "CVSS_V3", Score: cvssVectors[rng.IntN(len(cvssVectors))]}}
		}
		if rng.IntN(200) == 0 {
			rec.Withdrawn = "2026-10-01T00:00:00Z"
		}
		switch p.eco {
		case "Debian":
			rec.ID, rec.Aliases = "DEBIAN-"+cve, []string{cve}
			rec.Affected = append(rec.Affected, affectedEntry(rng, p, "Debian:12", name, version))
			if rng.IntN(10) < 3 {
				rec.Affected = append(rec.Affected, affectedEntry(rng, p, "Debian:11", name, ""))
			}
			rec.References = []osv.Reference{{Type: "ADVISORY", URL: "https://security-tracker.debian.org/tracker/" + cve}}
		case "Alpine":
			rec.ID, rec.Aliases = "ALPINE-"+cve, []string{cve}
			rec.Affected = append(rec.Affected, affectedEntry(rng, p, "Alpine:v3.19", name, ""))
			rec.References = []osv.Reference{{Type: "ADVISORY", URL: "https://security.alpinelinux.org/vuln/" + cve}}
		default:
			ghsa := fmt.Sprintf("GHSA-%04x-%04x-%04x", rng.IntN(1<<16), rng.IntN(1<<16), i&0xffff)
			rec.ID, rec.Aliases = ghsa, []string{cve}
			if p.eco == "Go" {
				rec.ID, rec.Aliases = fmt.Sprintf("GO-%d-%d", year, 1000+i), []string{cve, ghsa}
			}
			rec.Summary = words(rng, 8)
			rec.Affected = append(rec.Affected, affectedEntry(rng, p, p.eco, name, version))
			rec.DatabaseSpecific = map[string]any{"severity": []string{"LOW", "MODERATE", "HIGH", "CRITICAL"}[rng.IntN(4)],
				"cwe_ids": []string{fmt.Sprintf("CWE-%d", 20+rng.IntN(900))}, "github_reviewed": true}
			rec.References = []osv.Reference{{Type: "ADVISORY", URL: "https://nvd.nist.gov/vuln/detail/" + cve}, {Type: "WEB", URL: "https://github.com/advisories/" + ghsa}}
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return nil, fmt.Errorf("record: %w", err)
		}
		if i > 0 {
			buf.WriteByte(',')
		}
		buf.Write(b)
		rs.perEco[p.eco]++
	}
	buf.WriteByte(']')
	rs.json = buf.Bytes()
	return rs, nil
}

// ---- the scanned-manifest population (re-match) ----

// population is what the re-match row works on: manifests holding Debian
// packages, and the advisories that change.
type population struct {
	manifests []meta.ScanResult
	changed   []changedPkg
}

// changedPkg is a package one changing advisory names, at three versions:
// the advisory is fixed in mid or in new, alternately.
type changedPkg struct {
	name             string
	old, mid, newest string
	rangeChanges     bool // the change moves the fixed version; otherwise only metadata changes
}

// makePopulation draws n manifests of perManifest Debian packages from
// pool; each of the k changed packages is in 5–50% of them.
func makePopulation(n, perManifest, k int, pool []string) *population {
	rng := rand.New(rand.NewPCG(5, 6))
	perm := rng.Perm(len(pool))
	pop := &population{}
	isChanged := map[string]bool{}
	for i := range k {
		name := pool[perm[i]]
		isChanged[name] = true
		base := fmt.Sprintf("%d.%d.%d", 1+rng.IntN(9), rng.IntN(20), rng.IntN(15))
		pop.changed = append(pop.changed, changedPkg{name: name, old: base + "-1", mid: base + "-2", newest: base + "-3",
			rangeChanges: i%10 == 0})
	}
	prevalence := make([]float64, k)
	for i := range prevalence {
		prevalence[i] = 0.05 + 0.45*rng.Float64()
	}
	// Every other package has a few versions across the images.
	versions := map[string][]string{}
	for _, name := range pool {
		for range 1 + rng.IntN(3) {
			versions[name] = append(versions[name], debianVersion(rng))
		}
	}
	report := []byte(`{"ecosystem":"Debian:12","osRelease":{"ID":"debian","VERSION_ID":"12"},"layers":[],"packages":[]}`)
	for m := range n {
		sum := sha256.Sum256([]byte("bench-scan-manifest-" + strconv.Itoa(m)))
		res := meta.ScanResult{Digest: "sha256:" + hex.EncodeToString(sum[:]), Status: meta.ScanScanned, IndexerVersion: 1, Report: report}
		have := map[string]bool{}
		for i, c := range pop.changed {
			if rng.Float64() >= prevalence[i] {
				continue
			}
			v := c.old // 60% old, 25% mid, 15% newest
			if x := rng.IntN(100); x >= 85 {
				v = c.newest
			} else if x >= 60 {
				v = c.mid
			}
			have[c.name] = true
			res.Packages = append(res.Packages, meta.ScanPackage{Ecosystem: "Debian:12", Name: c.name, Version: v})
		}
		for len(res.Packages) < perManifest {
			name := pool[int(float64(len(pool))*rng.Float64()*rng.Float64())] // popular ones more often
			if have[name] || isChanged[name] {
				continue
			}
			have[name] = true
			vs := versions[name]
			res.Packages = append(res.Packages, meta.ScanPackage{Ecosystem: "Debian:12", Name: name, Version: vs[rng.IntN(len(vs))]})
		}
		pop.manifests = append(pop.manifests, res)
	}
	return pop
}

// changedRecords returns the k advisories of the population at revision
// rev (0: as first imported). Range-changing ones are fixed in mid at even
// revisions and in newest at odd ones; the others change only metadata.
func (pop *population) changedRecords(rev int) ([]byte, []string, error) {
	var recs []osv.Record
	var ids []string
	modified := time.Date(2026, 11, 1, 0, 0, 0, 0, time.UTC).Add(time.Duration(rev) * time.Hour).Format(time.RFC3339)
	for i, c := range pop.changed {
		fixed := c.mid
		if c.rangeChanges && rev%2 == 1 {
			fixed = c.newest
		}
		cve := fmt.Sprintf("CVE-2026-%d", 90000+i)
		refs := []osv.Reference{{Type: "ADVISORY", URL: "https://security-tracker.debian.org/tracker/" + cve}}
		for r := range rev {
			refs = append(refs, osv.Reference{Type: "WEB", URL: fmt.Sprintf("https://example.org/%s/%d", cve, r)})
		}
		recs = append(recs, osv.Record{SchemaVersion: "1.6.0", ID: "DEBIAN-" + cve, Modified: modified, Published: "2026-10-01T00:00:00Z",
			Aliases: []string{cve}, Details: "Advisory for " + c.name + " (revision " + strconv.Itoa(rev) + ").",
			Affected: []osv.Affected{{Package: osv.Package{Ecosystem: "Debian:12", Name: c.name},
				Ranges:            []osv.Range{{Type: "ECOSYSTEM", Events: []osv.Event{{Introduced: "0"}, {Fixed: fixed}}}},
				EcosystemSpecific: map[string]any{"urgency": "medium"}}},
			References: refs})
		ids = append(ids, "DEBIAN-"+cve)
	}
	b, err := json.Marshal(recs)
	if err != nil {
		return nil, nil, fmt.Errorf("records: %w", err)
	}
	return b, ids, nil
}
