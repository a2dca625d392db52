package gate

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	dgImage = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dgSig   = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
	dgAtt   = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	dgBase  = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
)

// example is the policy of the issue that asked for CEL policies.
const example = `scan.status == "scanned" && scan.counts.critical == 0 && signatures.exists(s, s.verified) && checks["e2e"] == "pass"`

// fullInput is an Input with every field set.
func fullInput() Input {
	return Input{
		Tag: "prod",
		Manifest: Manifest{
			Digest:       dgImage,
			MediaType:    "application/vnd.oci.image.index.v1+json",
			ArtifactType: "application/vnd.example.thing",
			Annotations:  map[string]string{"org.opencontainers.image.source": "https://git.example/app"},
			Platforms: []Platform{
				{OS: "linux", Architecture: "amd64"},
				{OS: "linux", Architecture: "arm64", Variant: "v8"},
			},
			Labels:  map[string]string{"maintainer": "team@example.com"},
			Created: time.Date(2024, 6, 1, 12, 0, 0, 0, time.UTC),
		},
		Scan: Scan{
			Status:  "scanned",
			Counts:  Severities{Critical: 0, High: 2, Medium: 3, Low: 4, Negligible: 5, Unknown: 6},
			Fixable: Severities{Critical: 0, High: 1, Medium: 2, Low: 3, Negligible: 4, Unknown: 5},
			Vulnerabilities: []Vulnerability{
				{ID: "CVE-2024-0001", Severity: "High", Package: "openssl", Version: "3.0.1", FixedIn: "3.0.2", Fixable: true},
				{ID: "CVE-2024-0002", Severity: "High", Package: "zlib", Version: "1.2.11"},
			},
		},
		Signatures: []Signature{
			{Kind: "cosign", Digest: dgSig, Verified: true, KeyID: "release", Identity: "ci@example.com"},
			{Kind: "referrer", Digest: dgSig, Error: "no trusted key matches"},
		},
		Attestations: []Attestation{
			{PredicateType: "https://slsa.dev/provenance/v1", Digest: dgAtt, Verified: true},
		},
		Checks: map[string]string{"e2e": "pass", "lint": "fail", "sbom": "pending"},
		Base:   Base{Known: true, Reference: "library/node:20", Digest: dgBase, Stale: true},
	}
}

func mustCompile(t *testing.T, expr string) *Policy {
	t.Helper()
	p, err := Compile(expr)
	if err != nil {
		t.Fatalf("Compile(%q): %v", expr, err)
	}
	return p
}

// fieldTests are true on fullInput(); together they read every variable and field of the
// environment (TestEveryFieldIsTested holds them to it).
var fieldTests = []string{
	`tag == "prod"`,
	`manifest.digest == "` + dgImage + `"`,
	`manifest.media_type.endsWith("index.v1+json")`,
	`manifest.artifact_type == "application/vnd.example.thing"`,
	`manifest.annotations["org.opencontainers.image.source"].startsWith("https://git.example/")`,
	`manifest.platforms.size() == 2 && manifest.platforms.exists(p, p.os == "linux" && p.architecture == "arm64" && p.variant == "v8")`,
	`manifest.labels.maintainer == "team@example.com"`,
	`manifest.created == timestamp("2024-06-01T12:00:00Z")`,
	`scan.status == "scanned"`,
	`scan.counts.critical == 0 && scan.counts.high == 2 && scan.counts.medium == 3 && scan.counts.low == 4 && scan.counts.negligible == 5 && scan.counts.unknown == 6`,
	`scan.fixable.critical == 0 && scan.fixable.high == 1 && scan.fixable.medium == 2 && scan.fixable.low == 3 && scan.fixable.negligible == 4 && scan.fixable.unknown == 5`,
	`scan.vulnerabilities.exists(v, v.id == "CVE-2024-0001" && v.severity == "High" && v.package == "openssl" && v.version == "3.0.1" && v.fixed_in == "3.0.2" && v.fixable)`,
	`scan.vulnerabilities.filter(v, !v.fixable).map(v, v.package) == ["zlib"]`,
	`signatures.exists(s, s.kind == "cosign" && s.digest == "` + dgSig + `" && s.verified && s.key_id == "release" && s.identity == "ci@example.com" && s.error == "")`,
	`signatures.exists(s, s.kind == "referrer" && !s.verified && s.error.contains("trusted key"))`,
	`attestations.all(a, a.verified) && attestations[0].predicate_type.startsWith("https://slsa.dev/provenance/") && attestations[0].digest == "` + dgAtt + `"`,
	`checks["e2e"] == "pass" && checks.lint == "fail" && "sbom" in checks`,
	`base.known && base.reference == "library/node:20" && base.digest == "` + dgBase + `" && base.stale`,
	// the extensions documented on Input
	`tag.upperAscii() == "PROD" && "PROD".lowerAscii() == tag && "a,b".split(",") == ["a", "b"] && ["a", "b"].join("-") == "a-b"`,
	`" x ".trim() == "x" && "abc".replace("b", "") == "ac" && "abc".indexOf("c") == 2 && "abc".substring(1) == "bc" && "%s:%d".format([tag, 1]) == "prod:1"`,
	`[3, 1, 2].sort() == [1, 2, 3] && [[1], [2]].flatten() == [1, 2] && [1, 2, 3].slice(1, 2) == [2] && [1, 1].distinct() == [1] && lists.range(3) == [0, 1, 2]`,
	`sets.contains(["a", "b"], ["a"]) && sets.intersects(["a"], ["a", "b"]) && sets.equivalent(["a", "a"], ["a"])`,
	`tag.matches("^pr") && tag.startsWith("p") && tag.endsWith("d") && tag.contains("ro") && size(tag) == 4`,
}

func TestEnvironmentFields(t *testing.T) {
	in := fullInput()
	for _, expr := range fieldTests {
		t.Run(expr, func(t *testing.T) {
			res := mustCompile(t, expr).Evaluate(context.Background(), in)
			if !res.Pass || res.Err != nil || len(res.Failed) != 0 {
				t.Errorf("got %+v, want a pass", res)
			}
		})
	}
}

// TestEveryFieldIsTested checks that fieldTests read each variable and each field (by its cel
// tag) of the types the environment exposes.
// TestZeroInput evaluates policies on an Input with nothing set: empty lists and maps, and zero
// values, never an error.
func TestZeroInput(t *testing.T) {
	expr := `tag == "" && manifest.digest == "" && manifest.annotations.size() == 0 && !("x" in manifest.labels) &&
		manifest.platforms.size() == 0 && manifest.created == timestamp(0) && scan.status == "" &&
		scan.counts.critical == 0 && scan.vulnerabilities.all(v, v.fixable) && signatures.size() == 0 &&
		!attestations.exists(a, a.verified) && checks.size() == 0 && !base.known && base.reference == ""`
	res := mustCompile(t, expr).Evaluate(context.Background(), Input{})
	if !res.Pass || res.Err != nil {
		t.Errorf("got %+v, want a pass", res)
	}
}

func TestEveryFieldIsTested(t *testing.T) {
	all := strings.Join(fieldTests, "\n")
	for _, v := range []string{"tag", "manifest", "scan", "signatures", "attestations", "checks", "base"} {
		if !strings.Contains(all, v) {
			t.Errorf("no test reads the variable %s", v)
		}
	}
	for _, typ := range []reflect.Type{
		reflect.TypeFor[Manifest](), reflect.TypeFor[Platform](), reflect.TypeFor[Scan](),
		reflect.TypeFor[Severities](), reflect.TypeFor[Vulnerability](), reflect.TypeFor[Signature](),
		reflect.TypeFor[Attestation](), reflect.TypeFor[Base](),
	} {
		for f := range typ.Fields() {
			if !f.IsExported() {
				continue // not a policy input
			}
			name := f.Tag.Get("cel")
			if name == "" {
				t.Errorf("%s.%s has no cel tag", typ.Name(), f.Name)
				continue
			}
			if !strings.Contains(all, "."+name) {
				t.Errorf("no test reads %s.%s (%s)", typ.Name(), f.Name, name)
			}
		}
	}
}

func TestFieldsAreTypeChecked(t *testing.T) {
	for _, expr := range []string{
		`tag.size == 1`, `manifest.foo == ""`, `manifest.Digest == ""`, `manifest.platforms[0].arch == ""`,
		`scan.countz.critical == 0`, `scan.counts.Critical == 0`, `scan.vulnerabilities[0].fixedIn == ""`,
		`signatures[0].keyID == ""`, `attestations[0].type == ""`, `base.ref == ""`,
	} {
		if _, err := Compile(expr); err == nil {
			t.Errorf("Compile(%q) succeeded, want an unknown field error", expr)
		}
	}
}

func TestCompileErrors(t *testing.T) {
	long := `tag == "a"` + strings.Repeat(" ", MaxSourceLen)
	tests := []struct {
		name, expr string
		line, col  int
		msg        string
	}{
		{"syntax", `scan.status ==`, 1, 15, "Syntax error"},
		{"syntax on line 2", "scan.status == \"scanned\" &&\n  scan.counts.critical == ", 2, 27, "Syntax error"},
		{"undeclared variable", `tag == "a" && scn.status == "scanned"`, 1, 15, "undeclared reference to 'scn'"},
		{"unknown field", `scan.countz.critical == 0`, 1, 5, "undefined field 'countz'"},
		{"unknown field on line 2", "tag == \"x\"\n  && manifest.foo == \"\"", 2, 14, "undefined field 'foo'"},
		{"unknown field in a macro", `signatures.exists(s, s.verifyed)`, 1, 23, "undefined field 'verifyed'"},
		{"type mismatch", `scan.counts.critical == "0"`, 1, 22, "no matching overload"},
		{"not bool", `scan.counts.critical`, 1, 1, "must be a bool expression, this one is of type int"},
		{"not bool after a comment", "// the count\n  scan.counts.critical", 2, 3, "must be a bool"},
		{"dyn is not bool", `dyn(true)`, 1, 1, "must be a bool"},
		{"too long", long, 1, MaxSourceLen + 1, fmt.Sprintf("policy is %d bytes long, more than the %d allowed", len(long), MaxSourceLen)},
		{"too deep", strings.Repeat("(", 40) + "true" + strings.Repeat(")", 40), 1, 1, "recursion limit"},
		{"invalid UTF-8", "tag == \"a\xffb\"", 1, 10, "invalid UTF-8"},
		{"invalid regular expression", `tag == "a" && tag.matches("[")`, 1, 27, "invalid matches argument: error parsing regexp: missing closing ]"},
		{"invalid timestamp", `manifest.created > timestamp("2024")`, 1, 30, `invalid timestamp argument: parsing time "2024"`},
		{"invalid duration", `manifest.created + duration("1x") > timestamp(0)`, 1, 29, `invalid duration argument: time: unknown unit "x"`},
		{"no now", `manifest.created < now()`, 1, 23, "undeclared reference to 'now'"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Compile(tt.expr)
			var ce *CompileError
			if !errors.As(err, &ce) {
				t.Fatalf("Compile = %v, %v; want a *CompileError", p, err)
			}
			is := ce.Issues[0]
			if is.Line != tt.line || is.Column != tt.col || !strings.Contains(is.Message, tt.msg) {
				t.Errorf("first issue %d:%d: %s; want %d:%d: ...%s...", is.Line, is.Column, is.Message, tt.line, tt.col, tt.msg)
			}
			if !strings.HasPrefix(err.Error(), fmt.Sprintf("policy: %d:%d: ", tt.line, tt.col)) {
				t.Errorf("Error() = %q", err)
			}
		})
	}
}

func TestCompileErrorString(t *testing.T) {
	_, err := Compile(`tag == scn`)
	if got, want := fmt.Sprint(err), "policy: 1:8: undeclared reference to 'scn' (did you mean 'scan'?)"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
	ce := &CompileError{Issues: []Issue{{1, 14, "one"}, {3, 2, "two"}}}
	if got, want := ce.Error(), "policy: 1:14: one; 3:2: two"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}

func TestEmptyPolicy(t *testing.T) {
	for _, expr := range []string{"", " \n\t"} {
		p := mustCompile(t, expr)
		if p.Source() != expr || len(p.Checks()) != 0 {
			t.Errorf("Source %q, Checks %q", p.Source(), p.Checks())
		}
		if res := p.Evaluate(context.Background(), Input{}); !res.Pass || res.Err != nil || res.Failed != nil {
			t.Errorf("%q: %+v, want a pass", expr, res)
		}
	}
}

func TestChecks(t *testing.T) {
	tests := []struct {
		expr string
		want []string
	}{
		{`tag == "prod"`, nil},
		{example, []string{"e2e"}},
		{`checks["e2e"] == "pass" && checks.lint != "fail" && "sbom" in checks && has(checks.docs)`, []string{"docs", "e2e", "lint", "sbom"}},
		{`checks["e2e"] == "pass" || checks["e2e"] == "pending" && checks["a-b"] == "pass"`, []string{"a-b", "e2e"}},
		{`scan.status == "scanned" ? checks["deep"] == "pass" : [1].all(x, checks["in-macro"] == "pass")`, []string{"deep", "in-macro"}},
		// computed keys are not constant: the gate cannot know them
		{`checks[tag] == "pass" && checks["e" + "2e"] == "pass"`, nil},
		{`checks.all(k, checks[k] == "pass")`, nil},
		// a comprehension variable named checks is not the variable
		{`[{"x": "pass"}].exists(checks, checks["x"] == "pass") && checks["y"] == "pass"`, []string{"y"}},
		// other maps are not checks
		{`manifest.labels["e2e"] == "pass" && "x" in manifest.annotations`, nil},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			if got := mustCompile(t, tt.expr).Checks(); !slices.Equal(got, tt.want) {
				t.Errorf("Checks() = %q, want %q", got, tt.want)
			}
		})
	}
}

func TestExample(t *testing.T) {
	p := mustCompile(t, example)
	if p.Source() != example {
		t.Errorf("Source() = %q", p.Source())
	}
	tests := []struct {
		name   string
		change func(*Input)
		failed []string
	}{
		{"pass", func(*Input) {}, nil},
		{"not scanned", func(in *Input) { in.Scan.Status = "no_data" }, []string{`scan.status == "scanned"`}},
		{"critical", func(in *Input) { in.Scan.Counts.Critical = 1 }, []string{`scan.counts.critical == 0`}},
		{"unverified", func(in *Input) { in.Signatures[0].Verified = false }, []string{`signatures.exists(s, s.verified)`}},
		{"unsigned", func(in *Input) { in.Signatures = nil }, []string{`signatures.exists(s, s.verified)`}},
		{"e2e failed", func(in *Input) { in.Checks["e2e"] = "fail" }, []string{`checks["e2e"] == "pass"`}},
		{"e2e missing", func(in *Input) { in.Checks = nil }, []string{`checks["e2e"] == "pass"`}},
		{"all", func(in *Input) { *in = Input{} }, []string{
			`scan.status == "scanned"`, `signatures.exists(s, s.verified)`, `checks["e2e"] == "pass"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			in := fullInput()
			tt.change(&in)
			res := p.Evaluate(context.Background(), in)
			if res.Pass != (tt.failed == nil) || res.Err != nil || !slices.Equal(res.Failed, tt.failed) {
				t.Errorf("got %+v, want Failed %q", res, tt.failed)
			}
		})
	}
}

func TestFailed(t *testing.T) {
	tests := []struct {
		name, expr string
		failed     []string
	}{
		{"not a conjunction", `tag == "dev" || base.stale == false`, []string{`tag == "dev" || base.stale == false`}},
		{"not a conjunction, trimmed", "\n  !base.stale  \n", []string{`!base.stale`}},
		{"parenthesized operands keep their parentheses", `(tag == "dev" || tag == "prod") && (!base.stale) && (scan.status == "no_data")`,
			[]string{`(!base.stale)`, `(scan.status == "no_data")`}},
		{"a group of && is flattened", `(tag == "prod" && !base.stale) && ((scan.counts.high == 0 && scan.counts.low == 4))`,
			[]string{`!base.stale`, `scan.counts.high == 0`}},
		{"wrapped whole", `(!base.stale && tag == "dev")`, []string{`!base.stale`, `tag == "dev"`}},
		{"parentheses in strings", `tag != ")(" && tag.startsWith("(") && (tag + ")").endsWith(")")`, []string{`tag.startsWith("(")`}},
		{"several lines", "scan.status == \"scanned\"\n  && scan.vulnerabilities.all(v,\n      v.fixable)\n  && base.known",
			[]string{"scan.vulnerabilities.all(v,\n      v.fixable)"}},
		{"comment", "base.known && // base must be fresh\n!base.stale", []string{"// base must be fresh\n!base.stale"}},
		{"ternary operand", `tag == "prod" && (base.known ? !base.stale : true)`, []string{`(base.known ? !base.stale : true)`}},
		{"many", strings.TrimSuffix(strings.Repeat(`tag == "prod" && base.stale == false && `, 50), " && "),
			slices.Repeat([]string{`base.stale == false`}, 50)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := mustCompile(t, tt.expr).Evaluate(context.Background(), fullInput())
			if res.Pass || res.Err != nil || !slices.Equal(res.Failed, tt.failed) {
				t.Errorf("got %+v, want Failed %q", res, tt.failed)
			}
		})
	}
}

func TestMissingChecks(t *testing.T) {
	in := fullInput()
	in.Checks = map[string]string{"lint": "pass"}
	tests := []struct {
		expr   string
		pass   bool
		errMsg string
	}{
		{`checks["e2e"] == "pass"`, false, ""},
		{`checks.e2e == "missing"`, true, ""},
		{`"e2e" in checks`, true, ""}, // a check the policy names is always there
		{`checks["e2e"] != "pass" && checks.lint == "pass"`, true, ""},
		{`checks.all(k, checks[k] == "pass")`, true, ""}, // the policy names no check: none is added
		{`checks[tag] == "pass"`, false, "no such key"},
		{`checks[tag] == "pass" && checks["e2e"] == "pass"`, false, "no such key"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			res := mustCompile(t, tt.expr).Evaluate(context.Background(), in)
			if res.Pass != tt.pass {
				t.Errorf("got %+v, want Pass %v", res, tt.pass)
			}
			if (res.Err == nil) != (tt.errMsg == "") || res.Err != nil && !strings.Contains(res.Err.Error(), tt.errMsg) {
				t.Errorf("Err = %v, want %q", res.Err, tt.errMsg)
			}
			if res.Err != nil && (len(res.Failed) == 0 || res.Failed[0] != `checks[tag] == "pass"`) {
				t.Errorf("Failed = %q, want the part in error first", res.Failed)
			}
		})
	}
	if len(in.Checks) != 1 {
		t.Errorf("Evaluate changed the caller's checks: %v", in.Checks)
	}
}

func TestRuntimeErrors(t *testing.T) {
	in := fullInput()
	tests := []struct{ expr, errMsg string }{
		{`manifest.annotations["missing"] == ""`, "no such key"},
		{`manifest.platforms[5].os == "linux"`, "index out of bounds"},
		{`scan.counts.high / scan.counts.critical > 0`, "division by zero"},
		{`dyn(tag) == "prod" && dyn(scan.counts.high) > "a"`, "no such overload"},
		{`tag.matches(tag + "[")`, "error parsing regexp"},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			res := mustCompile(t, tt.expr).Evaluate(context.Background(), in)
			if res.Pass || res.Err == nil || !strings.Contains(res.Err.Error(), tt.errMsg) || len(res.Failed) != 1 {
				t.Errorf("got %+v, want an error %q naming one part", res, tt.errMsg)
			}
		})
	}
	// An error does not stop the other conjuncts: every false one is listed.
	res := mustCompile(t, `manifest.annotations["missing"] == "" && tag == "dev" && base.stale`).Evaluate(context.Background(), in)
	if want := []string{`manifest.annotations["missing"] == ""`, `tag == "dev"`}; res.Pass || res.Err == nil || !slices.Equal(res.Failed, want) {
		t.Errorf("got %+v, want Failed %q with an error", res, want)
	}
}

func TestTimestamps(t *testing.T) {
	in := fullInput() // created 2024-06-01T12:00:00Z
	unknown := fullInput()
	unknown.Manifest.Created = time.Time{}
	tests := []struct {
		expr               string
		known, unknownTime bool
	}{
		{`manifest.created > timestamp("2024-01-01T00:00:00Z")`, true, false},
		{`manifest.created < timestamp("2024-01-01T00:00:00Z")`, false, true},
		{`manifest.created == timestamp(0)`, false, true},
		{`manifest.created == timestamp("1970-01-01T00:00:00Z")`, false, true},
		{`manifest.created + duration("720h") > timestamp("2024-06-30T00:00:00Z")`, true, false},
		{`timestamp("2024-07-01T00:00:00Z") - manifest.created < duration("720h")`, true, false},
		{`manifest.created.getFullYear() == 2024 && manifest.created.getMonth() == 5 && manifest.created.getHours() == 12`, true, false},
		{`manifest.created.getHours("Europe/Paris") == 14`, true, false},
		{`string(manifest.created) == "2024-06-01T12:00:00Z"`, true, false},
	}
	for _, tt := range tests {
		t.Run(tt.expr, func(t *testing.T) {
			p := mustCompile(t, tt.expr)
			if res := p.Evaluate(context.Background(), in); res.Pass != tt.known || res.Err != nil {
				t.Errorf("known time: %+v, want Pass %v", res, tt.known)
			}
			if res := p.Evaluate(context.Background(), unknown); res.Pass != tt.unknownTime || res.Err != nil {
				t.Errorf("zero time: %+v, want Pass %v", res, tt.unknownTime)
			}
		})
	}
}

// manyVulnerabilities is a candidate with n vulnerabilities, a third of them critical.
func manyVulnerabilities(n int) Input {
	in := fullInput()
	in.Scan.Vulnerabilities = make([]Vulnerability, n)
	for i := range in.Scan.Vulnerabilities {
		sev := "High"
		if i%3 == 0 {
			sev = "Critical"
		}
		in.Scan.Vulnerabilities[i] = Vulnerability{
			ID: fmt.Sprintf("CVE-2024-%05d", i), Severity: sev, Package: "openssl",
			Version: "3.0.1", FixedIn: "3.0.2", Fixable: i%2 == 0,
		}
	}
	return in
}

func TestCostLimit(t *testing.T) {
	in := manyVulnerabilities(10_000)
	var allow []string
	for i := range 50 {
		allow = append(allow, fmt.Sprintf(`"CVE-2023-%05d"`, i))
	}
	allowList := "[" + strings.Join(allow, ", ") + "]"
	realistic := []struct {
		expr string
		pass bool
	}{
		{`scan.vulnerabilities.exists(v, v.severity == "Critical" && v.fixable)`, true},
		{`!scan.vulnerabilities.exists(v, v.severity == "Low" && v.fixable)`, true},
		{`scan.vulnerabilities.filter(v, v.severity == "Critical" && !(v.id in ` + allowList + `)).size() == 3334`, true},
		{`scan.vulnerabilities.all(v, v.severity != "Critical" || v.id in ` + allowList + ` || v.fixed_in != "")`, true},
		{`scan.vulnerabilities.all(v, v.package.matches("^open") && !v.id.startsWith("GHSA-"))`, true},
		{`scan.vulnerabilities.map(v, v.id).join(",").size() > 0`, true},
		{`scan.vulnerabilities.all(v, v.package == "openssl" && v.version.startsWith("3."))`, true},
	}
	for _, tt := range realistic {
		t.Run(tt.expr, func(t *testing.T) {
			res := mustCompile(t, tt.expr).Evaluate(context.Background(), in)
			if res.Pass != tt.pass || res.Err != nil {
				t.Errorf("got %+v, want Pass %v", res, tt.pass)
			}
		})
	}

	pathological := []struct{ name, expr, failed string }{
		{"nested comprehensions", `tag == "prod" && scan.vulnerabilities.exists(v, scan.vulnerabilities.exists(w, w.id == v.id + "x")) && base.known`,
			`scan.vulnerabilities.exists(v, scan.vulnerabilities.exists(w, w.id == v.id + "x"))`},
		{"a large list built", `lists.range(1000000).map(x, lists.range(1000)).size() > 0`, ""},
	}
	for _, tt := range pathological {
		t.Run(tt.name, func(t *testing.T) {
			res := mustCompile(t, tt.expr).Evaluate(context.Background(), in)
			failed := tt.failed
			if failed == "" {
				failed = tt.expr
			}
			if res.Pass || res.Err == nil || !strings.Contains(res.Err.Error(), "cost over the limit") || !slices.Equal(res.Failed, []string{failed}) {
				t.Errorf("got %+v, want the cost limit exceeded in %q", res, failed)
			}
		})
	}

	// Conjuncts share one budget: each is cheap enough alone, together they are not.
	one := `scan.vulnerabilities.map(v, v.id + v.package + v.version).join(",").size() > %d`
	var parts []string
	for i := range 40 {
		parts = append(parts, fmt.Sprintf(one, i))
	}
	res := mustCompile(t, strings.Join(parts, " && ")).Evaluate(context.Background(), in)
	if res.Pass || !errors.Is(res.Err, errCostLimit) || len(res.Failed) != 1 || res.Failed[0] == parts[0] {
		t.Errorf("got %+v, want the budget exhausted after a few parts", res)
	}
}

func TestEvaluateContext(t *testing.T) {
	in := manyVulnerabilities(10_000)
	p := mustCompile(t, `tag == "prod" && scan.vulnerabilities.exists(v, scan.vulnerabilities.exists(w, w.id == v.id + "x"))`)

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	res := p.Evaluate(ctx, in)
	if res.Pass || !errors.Is(res.Err, context.Canceled) || !slices.Equal(res.Failed, []string{`tag == "prod"`}) {
		t.Errorf("cancelled: got %+v", res)
	}

	// A deadline stops a long comprehension (this one would run to the cost limit).
	ctx, cancel = context.WithTimeout(context.Background(), time.Millisecond)
	defer cancel()
	res = p.Evaluate(ctx, in)
	if res.Pass || !errors.Is(res.Err, context.DeadlineExceeded) || len(res.Failed) != 1 {
		t.Errorf("deadline: got %+v", res)
	}
}

func TestEvaluateConcurrently(t *testing.T) {
	p := mustCompile(t, example+` && manifest.platforms.size() == 2`)
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			in := fullInput()
			if i%2 == 1 {
				in.Checks = nil
			}
			for range 50 {
				res := p.Evaluate(context.Background(), in)
				if res.Pass != (i%2 == 0) {
					t.Errorf("goroutine %d: %+v", i, res)
					return
				}
			}
		})
	}
	wg.Wait()
}

// BenchmarkPolicyEvaluate is the issue's example policy over a candidate
// with 10,000 vulnerabilities, and a cheap one: the per-evaluation cost a
// gate pays (reported in the closing note).
func BenchmarkPolicyEvaluate(b *testing.B) {
	in := fullInput()
	for i := range 10000 {
		in.Scan.Vulnerabilities = append(in.Scan.Vulnerabilities, Vulnerability{ID: fmt.Sprint("CVE-2026-", i), Severity: "Medium", Package: "openssl", Fixable: i%2 == 0})
	}
	for _, tc := range []struct{ name, expr string }{
		{"example", `scan.status == "scanned" && scan.counts.critical == 0 && signatures.exists(s, s.verified) && checks["e2e"] == "pass"`},
		{"scan-10k-vulns", `!scan.vulnerabilities.exists(v, v.severity == "Critical" && v.fixable)`},
	} {
		p, err := Compile(tc.expr)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(tc.name, func(b *testing.B) {
			ctx := context.Background()
			for b.Loop() {
				p.Evaluate(ctx, in)
			}
		})
	}
}
