package mirror_test

import (
	"testing"

	"github.com/berth-dev/berth/internal/mirror"
)

// TestMatchTagFnmatch: tag globs match as Quay's (Python's fnmatch): [!...]
// negates a class, [^...] is a class holding a literal ^, a [ without its
// ] is literal, a ] first in a class is a member, - at either end of a
// class is literal, a backslash escapes nothing, and a reversed range
// matches nothing.
func TestMatchTagFnmatch(t *testing.T) {
	for _, c := range []struct {
		glob, tag string
		want      bool
	}{
		{"v[!0]*", "v1", true},
		{"v[!0]*", "v0x", false},
		{"v[!0]*", "v", false},
		{"[^a]", "^", true},
		{"[^a]", "a", true},
		{"[^a]", "b", false},
		{"*", "latest", true},
		{"1.*", "1.0", true},
		{"1.*", "2.0", false},
		{"1.?", "1.0", true},
		{"1.?", "1.10", false},
		{"*-alpine", "3.19-alpine", true},
		{"*.*.*", "1.2.3", true},
		{"*.*.*", "1.2", false},
		{"v[0-9]", "v5", true},
		{"v[0-9]", "va", false},
		{"v[!0-9]", "va", true},
		{"v[!0-9]", "v5", false},
		{"v[", "v[", true},
		{"v[", "v", false},
		{"[]]", "]", true},
		{"[!]]", "]", false},
		{"[!]]", "a", true},
		{"[]", "[]", true},
		{"[-a]", "-", true},
		{"[a-]", "-", true},
		{"[a-]", "b", false},
		{"[z-a]", "m", false},
		{"[!z-a]", "m", true},
		{"[a-c-e]", "-", true},
		{"[a-c-e]", "e", true},
		{"[a-c-e]", "d", false},
		{`\*`, `\x`, true},
		{`\*`, "*", false},
		{"[\\]", `\`, true},
		{"  latest ", "latest", true},
		{"1.0", "1.0", true},
		{"1.0", "1x0", false},
		{"**a", "bba", true},
		{"*a*b", "xaxxb", true},
		{"*a*b", "xaxxc", false},
	} {
		if got := mirror.MatchTag([]string{c.glob}, c.tag); got != c.want {
			t.Errorf("MatchTag(%q, %q) = %v, want %v", c.glob, c.tag, got, c.want)
		}
	}
	if !mirror.MatchTag([]string{"1.*", "latest"}, "latest") || mirror.MatchTag([]string{"1.*", "2.*"}, "latest") {
		t.Error("MatchTag: one of the globs should decide")
	}
	// Every glob is well formed, as in Quay: a lone [ is literal.
	for _, g := range []string{"v[", "[^a]", `a\`, "[!]", "*"} {
		if !mirror.ValidGlob(g) {
			t.Errorf("ValidGlob(%q) = false", g)
		}
	}
	if mirror.ValidGlob("  ") || mirror.ValidGlob("") {
		t.Error("ValidGlob accepts a blank glob")
	}
}
