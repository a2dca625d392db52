package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func write(t *testing.T, root, name, src string) {
	t.Helper()
	p := filepath.Join(root, name)
	if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestCheck: a big interface (counted through embedding across
// packages), and a consumer naming meta.DB, are found; small interfaces,
// the store itself, the wiring and test files are not.
func TestCheck(t *testing.T) {
	root := t.TempDir()
	write(t, root, "go.mod", "module example.com/m\n\ngo 1.24\n")
	write(t, root, "internal/meta/db.go", "package meta\n\ntype DB struct{}\n\ntype Big interface{ A(); B(); C(); D(); E(); F(); G(); H(); I() }\n")
	write(t, root, "internal/wire/wire.go", "package wire\n\nimport \"example.com/m/internal/meta\"\n\nfunc F(*meta.DB) {}\n")
	write(t, root, "internal/a/a.go", `package a

import (
	"io"

	"example.com/m/internal/meta"
)

type Small interface {
	io.ReadCloser
	A()
}

type Four interface{ A(); B(); C(); D() }

// Nine embeds Four (same package) and five more.
type Nine interface {
	Four
	E(); F(); G(); H(); I()
}

type S struct {
	db *meta.DB
	x  interface{ A(); B() }
}
`)
	write(t, root, "internal/b/b.go", `package b

import m "example.com/m/internal/a"

// Through another package: 9 + 0.
type Again interface{ m.Nine }
`)
	write(t, root, "internal/a/a_test.go", "package a\n\nimport \"example.com/m/internal/meta\"\n\nvar _ *meta.DB\n\ntype T interface{ A(); B(); C(); D(); E(); F(); G(); H(); I() }\n")
	problems, err := check(root, 8)
	if err != nil {
		t.Fatal(err)
	}
	got := strings.Join(problems, "\n")
	for _, want := range []string{"internal/meta/db.go:5:", "interface Big has 9", "internal/a/a.go:", "interface Nine has 9",
		"interface Again has 9", "names the concrete store type"} {
		if !strings.Contains(got, want) {
			t.Errorf("missing %q in:\n%s", want, got)
		}
	}
	if len(problems) != 4 {
		t.Errorf("%d problems, want 4 (Big, Nine, Again, meta.DB in a.go):\n%s", len(problems), got)
	}
	for _, bad := range []string{"Small", "Four", "wire", "a_test.go"} {
		if strings.Contains(got, bad) {
			t.Errorf("%q reported:\n%s", bad, got)
		}
	}
}
