// Package gate holds Berth's gates: which tags a repository guards, the checks and CEL policy a
// candidate must pass, signature verification, and promotion.
package gate

import "time"

// Input is everything a policy sees about one candidate.
//
// A policy reads it through these CEL variables (field names in CEL are snake_case, set by the
// cel tags below):
//
//   - tag (string): the guarded tag the candidate is for, e.g. "prod".
//   - manifest (gate.Manifest): the candidate's manifest; see [Manifest].
//   - scan (gate.Scan): the vulnerability scan of the candidate; see [Scan].
//   - signatures (list of gate.Signature): the signatures found for the candidate; see [Signature].
//   - attestations (list of gate.Attestation): its attestations; see [Attestation].
//   - checks (map(string, string)): check name to state, "pending", "pass" or "fail". A check that
//     the policy names with a constant key (checks["e2e"], checks.e2e, "e2e" in checks) is always
//     present: its state is "missing" when the gate has no such check for the candidate, so
//     checks["e2e"] == "pass" is false rather than an error (and "e2e" in checks is true). Reading
//     a check by a computed key that is absent is an evaluation error.
//   - base (gate.Base): what Berth's base-image graph knows of the image's base; see [Base].
//
// Besides CEL's standard functions (including timestamp and duration arithmetic and comparison,
// matches, startsWith, endsWith, contains, size, exists, all, exists_one, map, filter), policies
// have the string extensions (lowerAscii, upperAscii, split, join, replace, trim, indexOf,
// substring, format, ...), the list extensions (distinct, flatten, sort, slice, lists.range, ...)
// and the set extensions (sets.contains, sets.intersects, sets.equivalent). There is no now():
// a policy's result depends on its input only. A policy is at most MaxSourceLen bytes long and
// one evaluation at most CostLimit in cost.
type Input struct {
	Tag          string // the guarded tag the candidate is for
	Manifest     Manifest
	Scan         Scan
	Signatures   []Signature
	Attestations []Attestation
	Checks       map[string]string // check name -> "pending" | "pass" | "fail" (and "missing", see above)
	Base         Base
}

// Manifest is the candidate's manifest as a policy sees it (the CEL variable manifest):
//
//   - manifest.digest (string): its digest, "sha256:...".
//   - manifest.media_type (string): its media type, e.g. "application/vnd.oci.image.index.v1+json".
//   - manifest.artifact_type (string): its artifact type, empty for an image.
//   - manifest.annotations (map(string, string)): its annotations.
//   - manifest.platforms (list of gate.Platform): an index's platforms; for an image, its own
//     platform from its config (one entry). Each has os, architecture and variant (strings), e.g.
//     manifest.platforms.exists(p, p.os == "linux" && p.architecture == "arm64").
//   - manifest.labels (map(string, string)): the config's labels (for an index, those of its first
//     platform).
//   - manifest.created (timestamp): the config's "created" time. When it is unknown (Created is
//     Go's zero time) a policy sees CEL's zero timestamp, timestamp(0), that is
//     1970-01-01T00:00:00Z, which is earlier than any real build: a test such as
//     manifest.created > timestamp("2024-01-01T00:00:00Z") is false for it. Reproducible builds
//     that record the epoch as their creation time look the same, and rightly so: neither says
//     when the image was built.
type Manifest struct {
	Digest       string            `cel:"digest"`
	MediaType    string            `cel:"media_type"`
	ArtifactType string            `cel:"artifact_type"`
	Annotations  map[string]string `cel:"annotations"`
	Platforms    []Platform        `cel:"platforms"` // an index's platforms; an image's own platform from its config
	Labels       map[string]string `cel:"labels"`    // config labels (of the first platform for an index)
	Created      time.Time         `cel:"created"`   // config "created"; zero if unknown (timestamp(0) in CEL)
}

// Platform is one platform of manifest.platforms: os, architecture and variant (CEL strings;
// variant is empty when the platform has none).
type Platform struct {
	OS           string `cel:"os"`
	Architecture string `cel:"architecture"`
	Variant      string `cel:"variant"`
}

// Scan is the candidate's vulnerability scan (the CEL variable scan):
//
//   - scan.status (string): "scanned" (vulnerability data loaded and the image matched against
//     it), "no_data" (no vulnerability data loaded: the counts are zero but mean nothing, a
//     policy must never read this as clean), "pending" (not scanned yet), "failed",
//     "unsupported" (nothing Berth can scan, e.g. an artifact) or "disabled" (scanning is off).
//     A policy that wants a clean image tests scan.status == "scanned" first. For an index, the
//     worst of every image it reaches (nested indexes included, entries with or without a
//     platform; attestation manifests left out); an entry that is no image, or one past the
//     bounds (maxIndexDepth, maxIndexManifests), makes it "unsupported".
//   - scan.counts (gate.Severities): vulnerabilities by severity: scan.counts.critical, .high,
//     .medium, .low, .negligible, .unknown (ints).
//   - scan.fixable (gate.Severities): those of them with a fixed version, by the same severities.
//   - scan.vulnerabilities (list of gate.Vulnerability): each with id, severity, package,
//     version, fixed_in (strings) and fixable (bool), e.g.
//     scan.vulnerabilities.exists(v, v.severity == "Critical" && v.fixable).
type Scan struct {
	// Status: "scanned" (with vulnerability data loaded), "no_data" (no vulnerability data loaded:
	// a policy must never read this as clean), "pending" (not scanned yet), "failed", "unsupported",
	// "disabled" (scanning is off).
	Status          string          `cel:"status"`
	Counts          Severities      `cel:"counts"`  // vulnerabilities by severity
	Fixable         Severities      `cel:"fixable"` // those with a fixed version
	Vulnerabilities []Vulnerability `cel:"vulnerabilities"`
}

// Severities counts vulnerabilities by severity: critical, high, medium, low, negligible and
// unknown (CEL ints).
type Severities struct {
	Critical   int64 `cel:"critical" json:"critical"`
	High       int64 `cel:"high" json:"high"`
	Medium     int64 `cel:"medium" json:"medium"`
	Low        int64 `cel:"low" json:"low"`
	Negligible int64 `cel:"negligible" json:"negligible"`
	Unknown    int64 `cel:"unknown" json:"unknown"`
}

// Vulnerability is one entry of scan.vulnerabilities:
//
//   - id (string): the advisory, e.g. "CVE-2024-1234" or "GHSA-...".
//   - severity (string): one of "Unknown", "Negligible", "Low", "Medium", "High", "Critical"
//     (Clair's names, capitalized).
//   - package, version (strings): the affected package and its installed version.
//   - fixed_in (string): the first version with the fix, empty when there is none.
//   - fixable (bool): a fixed version exists.
type Vulnerability struct {
	ID       string `cel:"id"`
	Severity string `cel:"severity"`
	Package  string `cel:"package"`
	Version  string `cel:"version"`
	FixedIn  string `cel:"fixed_in"`
	Fixable  bool   `cel:"fixable"`
}

// Signature is one signature of the candidate (an entry of the CEL list signatures):
//
//   - kind (string): "cosign" (the sha256-<hex>.sig tag) or "referrer" (an OCI 1.1 referrer).
//   - digest (string): the signature manifest's digest.
//   - verified (bool): it verified against one of the gate's trusted keys.
//   - key_id (string): the id of the trusted key that verified it, empty if none did.
//   - identity (string): the signer identity when known (keyless signing), else empty.
//   - error (string): why it did not verify, empty when verified.
//
// For example signatures.exists(s, s.verified && s.key_id == "sha256:<hex>")
// (the key ids GET .../gate answers in key_ids).
type Signature struct {
	Kind     string `cel:"kind"`     // "cosign" (the sha256-<hex>.sig tag) or "referrer" (OCI 1.1 referrer)
	Digest   string `cel:"digest"`   // the signature manifest's digest
	Verified bool   `cel:"verified"` // verified against one of the gate's trusted keys
	KeyID    string `cel:"key_id"`   // the trusted key that verified it (its id), empty if none
	Identity string `cel:"identity"` // the signer identity when known (keyless), else empty
	Error    string `cel:"error"`    // why it did not verify, empty when verified
}

// Attestation is one attestation of the candidate (an entry of the CEL list attestations):
// predicate_type (string, e.g. "https://slsa.dev/provenance/v1"), digest (string, the
// attestation manifest's digest) and verified (bool, it verified against one of the gate's
// trusted keys). For example
// attestations.exists(a, a.verified && a.predicate_type.startsWith("https://slsa.dev/provenance/")).
type Attestation struct {
	PredicateType string `cel:"predicate_type"`
	Digest        string `cel:"digest"`
	Verified      bool   `cel:"verified"`
}

// Base is what Berth's base-image graph knows of the image's base (the CEL variable base):
//
//   - base.known (bool): the graph knows the image's base. When false the other fields are empty.
//   - base.reference (string): the base as referenced, e.g. "registry.example/library/node:20" or
//     "library/node:20" (a repository of this registry); empty for a base in a private repository
//     of another namespace, whose name the candidate's repository may not learn (a policy, whose
//     errors and results its checkers and notifications read, sees what they see).
//   - base.digest (string): the base digest the image was built on.
//   - base.stale (bool): the base's tag has moved on since: the image is not built on the
//     base's current version.
//
// For example !base.known || !base.stale.
type Base struct {
	Known     bool   `cel:"known"`     // Berth's base-image graph knows the image's base
	Reference string `cel:"reference"` // e.g. "registry.example/library/node:20"; "" for a private base of another namespace
	Digest    string `cel:"digest"`    // the base digest the image was built on
	Stale     bool   `cel:"stale"`     // the base's tag has moved on since
	// waiting is true while the graph has not indexed the candidate yet:
	// the other fields say nothing then (berth/base is pending).
	waiting bool
}
