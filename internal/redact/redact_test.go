package redact

import (
	"strings"
	"testing"
)

func TestUserinfo(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"http://mirror.example/osv", "http://mirror.example/osv"},
		{"https://user:s3cret@mirror.example/osv?x=1", "https://mirror.example/osv?x=1"},
		{"http://user@proxy:3128", "http://proxy:3128"},
		// Does not parse (a control character): everything up to the last '@' goes.
		{"http://user:pa\x7fss@host/p", "http://host/p"},
		{"http://u:p@ss@host\x7f/p", "http://host\x7f/p"},
		{"not a url", "not a url"},
		{"", ""},
	} {
		got := Userinfo(tc.in)
		if got != tc.want {
			t.Errorf("Userinfo(%q) = %q, want %q", tc.in, got, tc.want)
		}
		if strings.Contains(got, "s3cret") || strings.Contains(got, "pa\x7fss") {
			t.Errorf("Userinfo(%q) = %q shows the password", tc.in, got)
		}
	}
}
