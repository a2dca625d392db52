package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestAdminGC: `berth admin gc --dry-run` reports upload bytes that no
// session owns and keeps them; `berth admin gc` removes them.
func TestAdminGC(t *testing.T) {
	dir := t.TempDir()
	// The registry's database exists (berth admin gc refuses to create
	// one).
	if out, err := runIn(t, "", "admin", "migrate", "--data-dir", dir); err != nil {
		t.Fatal(err, out)
	}
	left := filepath.Join(dir, "storage", "uploads", "0b", "0b6a7a4e-7d0c-4a53-a1a6-111111111111")
	if err := os.MkdirAll(left, 0o750); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(left, "data"), make([]byte, 1234), 0o640); err != nil {
		t.Fatal(err)
	}
	old := time.Now().Add(-48 * time.Hour)
	for _, p := range []string{filepath.Join(left, "data"), left} {
		if err := os.Chtimes(p, old, old); err != nil {
			t.Fatal(err)
		}
	}
	out, err := runIn(t, "", "admin", "gc", "--dry-run", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "would remove: 0 expired uploads (0 bytes), 1 upload leftovers (1234 bytes)") ||
		!strings.Contains(out, "tag expiry and auto-prune policies: not run in a dry run") {
		t.Fatalf("dry run: %v\n%s", err, out)
	}
	if _, err := os.Stat(left); err != nil {
		t.Fatal("a dry run removed the leftover")
	}
	out, err = runIn(t, "", "admin", "gc", "--data-dir", dir)
	if err != nil || !strings.Contains(out, "removed: 0 expired uploads (0 bytes), 1 upload leftovers (1234 bytes)") ||
		!strings.Contains(out, "removed: 0 expired tags, 0 tags auto-prune policies deleted") {
		t.Fatalf("gc: %v\n%s", err, out)
	}
	if _, err := os.Stat(left); !os.IsNotExist(err) {
		t.Fatalf("the leftover is still there: %v", err)
	}
}
