package oci

import (
	"errors"
	"strings"
	"testing"
)

func TestValidateName(t *testing.T) {
	valid := []string{"a", "app", "org/team/app", "a/b/c/d/e/f", "my-app", "my--app", "my_app", "my__app", "my.app",
		"a0/b1", "library/ubuntu", strings.Repeat("a", 255)}
	for _, n := range valid {
		if err := ValidateName(n); err != nil {
			t.Errorf("ValidateName(%q) = %v, want ok", n, err)
		}
	}
	invalid := []string{"", "A", "app/", "/app", "a//b", "a/../b", "..", ".", "a/./b", "-a", "a-", "a_", "a___b",
		"a..b", "a._b", "a/b:c", "a b", "a/B", strings.Repeat("a", 256), "a\x00b", "é"}
	for _, n := range invalid {
		if err := ValidateName(n); !errors.Is(err, ErrInvalidName) {
			t.Errorf("ValidateName(%q) = %v, want ErrInvalidName", n, err)
		}
	}
}

func TestParseReference(t *testing.T) {
	tests := []struct {
		in      string
		tag     string
		digest  string
		wantErr error
	}{
		{"latest", "latest", "", nil},
		{"v1.2.3-rc_1", "v1.2.3-rc_1", "", nil},
		{"_x", "_x", "", nil},
		{"sha256-" + strings.Repeat("a", 64), "sha256-" + strings.Repeat("a", 64), "", nil}, // referrers tag schema
		{strings.Repeat("t", 128), strings.Repeat("t", 128), "", nil},
		{"sha256:" + strings.Repeat("a", 64), "", "sha256:" + strings.Repeat("a", 64), nil},
		{"sha512:" + strings.Repeat("b", 128), "", "sha512:" + strings.Repeat("b", 128), nil},
		{strings.Repeat("t", 129), "", "", ErrInvalidTag},
		{".x", "", "", ErrInvalidTag},
		{"-x", "", "", ErrInvalidTag},
		{"a/b", "", "", ErrInvalidTag},
		{"sha256:" + strings.Repeat("A", 64), "", "", ErrInvalidDigest},
		{"sha256:abc", "", "", ErrInvalidDigest},
		{"md5:" + strings.Repeat("a", 32), "", "", ErrInvalidDigest},
		{"sha384:" + strings.Repeat("a", 96), "", "", ErrInvalidDigest},
	}
	for _, tc := range tests {
		ref, err := ParseReference(tc.in)
		if tc.wantErr != nil {
			if !errors.Is(err, tc.wantErr) {
				t.Errorf("ParseReference(%q) = %v, want %v", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || ref.Tag != tc.tag || ref.Digest.String() != tc.digest {
			t.Errorf("ParseReference(%q) = %+v, %v", tc.in, ref, err)
		}
	}
}

func FuzzValidateName(f *testing.F) {
	for _, s := range []string{"a", "org/team/app", "a__b", "a..b", "../x", "a/b/", "A"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		if ValidateName(s) != nil {
			return
		}
		// A valid name is always safe as a path: no empty, "." or ".."
		// component, no character outside the grammar.
		for _, c := range strings.Split(s, "/") {
			if c == "" || c == "." || c == ".." {
				t.Fatalf("valid name %q has component %q", s, c)
			}
		}
		if strings.Trim(s, "abcdefghijklmnopqrstuvwxyz0123456789._-/") != "" {
			t.Fatalf("valid name %q has characters outside the grammar", s)
		}
	})
}

func FuzzParseReference(f *testing.F) {
	for _, s := range []string{"latest", "sha256:" + strings.Repeat("a", 64), "a:b", ":", "sha512:x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		ref, err := ParseReference(s)
		if err != nil {
			return
		}
		if (ref.Tag == "") == (ref.Digest == "") {
			t.Fatalf("%q parsed to %+v: exactly one of tag and digest must be set", s, ref)
		}
		if ref.String() != s {
			t.Fatalf("%q round-trips to %q", s, ref.String())
		}
		if ref.Digest != "" {
			if err := ref.Digest.Validate(); err != nil {
				t.Fatalf("%q accepted but invalid: %v", s, err)
			}
		}
	})
}
