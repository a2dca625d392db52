package gate

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"
)

// FuzzCompile compiles arbitrary text and evaluates what compiles on a fixed candidate: neither
// may panic, errors must be *CompileError with positions, and a result must be consistent.
func FuzzCompile(f *testing.F) {
	for _, seed := range append([]string{
		example,
		``,
		`tag == scn`,
		`scan.countz == 0`,
		`1 + 2`,
		`(tag == "a" && (base.known)) && !(checks.e2e == "pass" || "lint" in checks)`,
		`scan.vulnerabilities.exists(v, scan.vulnerabilities.exists(w, w.id == v.id))`,
		`manifest.created > timestamp("2024-01-01T00:00:00Z") && manifest.created - timestamp(0) > duration("1h")`,
		`checks[tag] == "pass" && tag.matches(tag + "[")`,
		"tag == \"x\" && // comment\n (base.stale)",
		`[{"x": "pass"}].exists(checks, checks["x"] == "pass") && has(checks.y)`,
		`lists.range(10).map(x, x * 2).sort()[0] == 0 && "a,b".split(",").join("-") == "a-b"`,
	}, fieldTests...) {
		f.Add(seed)
	}
	in := fullInput()
	f.Fuzz(func(t *testing.T, expr string) {
		p, err := Compile(expr)
		if err != nil {
			var ce *CompileError
			if !errors.As(err, &ce) || len(ce.Issues) == 0 {
				t.Fatalf("Compile(%q): %v, not a *CompileError with issues", expr, err)
			}
			for _, is := range ce.Issues {
				if is.Line < 1 || is.Column < 1 {
					t.Fatalf("Compile(%q): issue at %d:%d", expr, is.Line, is.Column)
				}
			}
			return
		}
		if p.Source() != expr || !slices.IsSorted(p.Checks()) {
			t.Fatalf("Compile(%q): Source %q, Checks %q", expr, p.Source(), p.Checks())
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		res := p.Evaluate(ctx, in)
		if res.Pass != (len(res.Failed) == 0) || res.Pass && res.Err != nil {
			t.Fatalf("Evaluate(%q) = %+v: Pass, Failed and Err disagree", expr, res)
		}
		for _, part := range res.Failed {
			if _, err := Compile(part); err != nil {
				t.Fatalf("Evaluate(%q): failed part %q does not compile: %v", expr, part, err)
			}
		}
	})
}
