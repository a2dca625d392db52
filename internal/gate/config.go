package gate

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/oci"
)

// Built-in checks: results Berth computes itself for every candidate,
// seen by the policy in checks like posted ones, and nameable in
// required_checks. Posted checks may not take these names.
const (
	// CheckScan passes when the candidate was scanned with vulnerability
	// data loaded for its distribution and has no vulnerability at or
	// above the gate's scan_severity; it fails when no data is loaded
	// ("no vulnerability data"), never passes silently.
	CheckScan = "berth/scan"
	// CheckSignature passes when a signature verifies with a trusted key.
	CheckSignature = "berth/signature"
	// CheckBase fails when the candidate is built on a base whose tag has
	// moved on (a stale base).
	CheckBase = "berth/base"
)

// Check statuses. Missing is what the policy sees for a check nobody
// posted yet.
const (
	StatusPending = "pending"
	StatusPass    = "pass"
	StatusFail    = "fail"
	StatusMissing = "missing"
)

// MaxKeys is how many trusted keys a gate may list.
const MaxKeys = 32

// DefaultRollbackTag is the rollback tag template when a gate names none.
const DefaultRollbackTag = "{tag}-{n}"

// Config is a gate's configuration: the body of PUT .../gate.
type Config struct {
	// Tags are the guarded tags: exact names or path.Match globs
	// ("15-alpine", "15-*", "*").
	Tags []string `json:"tags"`
	// Policy is a CEL expression over the candidate (see Input); empty
	// is "true": the required checks alone decide.
	Policy string `json:"policy"`
	// RequiredChecks must all pass (posted or built in); the gate waits
	// for each that is missing or pending.
	RequiredChecks []string `json:"required_checks"`
	// Keys are the PEM public keys whose cosign signatures verify.
	Keys []string `json:"keys"`
	// RollbackTag is the template of the unique tag each promotion makes:
	// {tag}, {n} (the tag's promotion count), {date} (UTC, YYYYMMDD) and
	// {digest12}; it must hold {n} or {digest12}.
	RollbackTag string `json:"rollback_tag"`
	// Checkers are the users and robots that may see candidates and post
	// checks (besides repository admins and tokens with "checks").
	Checkers []string `json:"checkers"`
	// ScanSeverity is the lowest severity that fails berth/scan:
	// Critical (the default), High, Medium, Low, Negligible or Unknown.
	ScanSeverity string `json:"scan_severity,omitempty"`
}

// checkName is what a posted check may be called.
var checkName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._/:-]{0,99}$`)

// robotOrUser is a checker's name: a user or "namespace+robot".
var robotOrUser = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,254}(\+[a-z0-9][a-z0-9_]{0,254})?$`)

// severityRank orders Clair's severities, worst last.
var severityRank = map[string]int{"Unknown": 0, "Negligible": 1, "Low": 2, "Medium": 3, "High": 4, "Critical": 5}

// Compiled is a validated configuration, ready to evaluate.
type Compiled struct {
	Config
	Policy *Policy
	Keys   []TrustedKey
}

// Parse reads a stored configuration.
func Parse(raw []byte) (*Compiled, error) {
	var c Config
	if err := json.Unmarshal(raw, &c); err != nil {
		return nil, fmt.Errorf("gate configuration: %w", err)
	}
	return c.Compile()
}

// CheckNew applies the bounds a configuration given now must keep, on top
// of Compile's checks (a configuration stored before them still loads):
// at most MaxKeys keys, none twice, since every signature is tried
// against every key and whoever administers a repository sets its gate.
func (c Config) CheckNew() error {
	var errs []error
	if len(c.Keys) > MaxKeys {
		errs = append(errs, fmt.Errorf("keys: %d keys; at most %d", len(c.Keys), MaxKeys))
	}
	seen := map[string]int{}
	for i, k := range c.Keys {
		tk, err := ParseKey(k)
		if err != nil {
			continue // Compile says why
		}
		if j, dup := seen[tk.ID]; dup {
			errs = append(errs, fmt.Errorf("keys[%d]: the same key as keys[%d]", i, j))
			continue
		}
		seen[tk.ID] = i
	}
	return errors.Join(errs...)
}

// Compile validates the configuration: tag patterns, the policy
// (compiled and type-checked, errors with their positions), keys,
// required checks, checkers and the rollback tag template. Defaults
// are filled in.
func (c Config) Compile() (*Compiled, error) {
	var errs []error
	if len(c.Tags) == 0 {
		errs = append(errs, errors.New("tags: at least one guarded tag or pattern is required"))
	}
	for _, t := range c.Tags {
		if _, err := path.Match(t, ""); err != nil || t == "" || len(t) > 128 || strings.ContainsAny(t, "/\x00") {
			errs = append(errs, fmt.Errorf("tags: %q is not a tag or glob pattern", t))
		}
	}
	if c.RollbackTag == "" {
		c.RollbackTag = DefaultRollbackTag
	}
	if !strings.Contains(c.RollbackTag, "{n}") && !strings.Contains(c.RollbackTag, "{digest12}") {
		errs = append(errs, fmt.Errorf("rollback_tag: %q must hold {n} or {digest12} so that each promotion gets its own tag", c.RollbackTag))
	} else if rest := rollbackVars.ReplaceAllString(c.RollbackTag, ""); strings.ContainsAny(rest, "{}") {
		errs = append(errs, fmt.Errorf("rollback_tag: %q: unknown variable (use {tag}, {n}, {date}, {digest12})", c.RollbackTag))
	} else if err := oci.ValidateTag(RollbackTag(c.RollbackTag, "15-alpine", 12, "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", time.Now())); err != nil {
		errs = append(errs, fmt.Errorf("rollback_tag: %q does not make a valid tag: %w", c.RollbackTag, err))
	}
	if c.ScanSeverity == "" {
		c.ScanSeverity = "Critical"
	}
	if _, ok := severityRank[c.ScanSeverity]; !ok {
		errs = append(errs, fmt.Errorf("scan_severity: %q is not one of Critical, High, Medium, Low, Negligible, Unknown", c.ScanSeverity))
	}
	for _, n := range c.RequiredChecks {
		if !checkName.MatchString(n) {
			errs = append(errs, fmt.Errorf("required_checks: %q is not a check name (letters, digits, . _ / : -, at most 100)", n))
		}
	}
	for _, n := range c.Checkers {
		if !robotOrUser.MatchString(n) {
			errs = append(errs, fmt.Errorf("checkers: %q is not a user or robot name", n))
		}
	}
	out := &Compiled{Config: c}
	seen := map[string]bool{}
	for i, k := range c.Keys {
		tk, err := ParseKey(k)
		if err != nil {
			errs = append(errs, fmt.Errorf("keys[%d]: %w", i, err))
			continue
		}
		if seen[tk.ID] {
			continue // tried once is enough (CheckNew refuses it in a new configuration)
		}
		seen[tk.ID] = true
		out.Keys = append(out.Keys, tk)
	}
	p, err := Compile(c.Policy)
	if err != nil {
		errs = append(errs, err)
	}
	out.Policy = p
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	return out, nil
}

var rollbackVars = regexp.MustCompile(`\{(tag|n|date|digest12)\}`)

// RollbackTag renders a rollback tag template.
func RollbackTag(tmpl, tag string, n int64, digest string, now time.Time) string {
	hex := digest
	if _, h, ok := strings.Cut(digest, ":"); ok {
		hex = h
	}
	if len(hex) > 12 {
		hex = hex[:12]
	}
	return strings.NewReplacer("{tag}", tag, "{n}", strconv.FormatInt(n, 10), "{date}", now.UTC().Format("20060102"), "{digest12}", hex).Replace(tmpl)
}

// required are the checks the gate waits for: the configured ones and
// those the policy reads.
func (c *Compiled) required() []string {
	out := slices.Clone(c.RequiredChecks)
	for _, n := range c.Policy.Checks() {
		if !slices.Contains(out, n) {
			out = append(out, n)
		}
	}
	return out
}

// PostedCheck is a check result a pipeline posts.
type PostedCheck struct {
	Name       string `json:"name"`
	Status     string `json:"status"`
	DetailsURL string `json:"details_url"`
	Summary    string `json:"summary"`
}

// Validate checks a posted check: its name (not a built-in's), status,
// a details URL of http or https, and a summary of at most 1,024 bytes.
func (p PostedCheck) Validate() error {
	if !checkName.MatchString(p.Name) {
		return fmt.Errorf("name: %q is not a check name (letters, digits, . _ / : -, at most 100)", p.Name)
	}
	if strings.HasPrefix(p.Name, "berth/") {
		return fmt.Errorf("name: %q: names starting berth/ are Berth's built-in checks", p.Name)
	}
	switch p.Status {
	case StatusPending, StatusPass, StatusFail:
	default:
		return fmt.Errorf("status: %q is not pending, pass or fail", p.Status)
	}
	if p.DetailsURL != "" {
		u, err := url.Parse(p.DetailsURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || len(p.DetailsURL) > 2048 {
			return fmt.Errorf("details_url: %q is not an http(s) URL of at most 2048 bytes", p.DetailsURL)
		}
	}
	if len(p.Summary) > 1024 {
		return errors.New("summary: over 1024 bytes")
	}
	return nil
}
