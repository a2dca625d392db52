package gc

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestBlobSweepRemovesLeftoverTempFiles: the filesystem driver writes a
// small blob (a manifest, a config) to a temporary .tmp-* file beside its
// address and renames it into place; a kill between the two leaves the
// temporary file, which no listing shows. A pass's blob sweep removes
// those older than its cutoff in the directories it sweeps; a fresh one
// (a write under way) and other hidden files stay, and a dry run removes
// nothing.
func TestBlobSweepRemovesLeftoverTempFiles(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "sqlite", Options{UploadExpiry: time.Hour})
	old := time.Now().Add(-3 * time.Hour)
	e.recorded(t, "pushed and recorded", old) // the database is this storage's
	dir := filepath.Join(e.root, "blobs", "sha256", "ab")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		t.Fatal(err)
	}
	plant := func(name string, at time.Time) string {
		t.Helper()
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte("half a manifest"), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, at, at); err != nil {
			t.Fatal(err)
		}
		return p
	}
	leftover := plant(".tmp-1", old)
	fresh := plant(".tmp-2", time.Now())
	other := plant(".keep", old)
	there := func(p string) bool {
		_, err := os.Stat(p)
		return err == nil
	}
	if _, err := e.c.Pass(ctx, true); err != nil {
		t.Fatal(err)
	}
	if !there(leftover) {
		t.Fatal("a dry run removed a leftover temporary file")
	}
	if _, err := e.c.Pass(ctx, false); err != nil {
		t.Fatal(err)
	}
	if there(leftover) {
		t.Error("the leftover temporary file /blobs/sha256/ab/.tmp-1 is still there after a pass")
	}
	if !there(fresh) {
		t.Error("a temporary file written a moment ago (a write under way) was removed")
	}
	if !there(other) {
		t.Error("a hidden file that is not the driver's temporary file was removed")
	}
}
