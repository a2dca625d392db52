package main

import (
	"bytes"
	"net/http/httptest"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestImportProgress: `berth import` with its output captured (not a
// terminal) reports each fetched blob on a line of its own and no
// carriage return.
func TestImportProgress(t *testing.T) {
	upstream := httptest.NewServer(registry.New())
	defer upstream.Close()
	host := strings.TrimPrefix(upstream.URL, "http://")
	img, err := random.Image(1024, 3)
	if err != nil {
		t.Fatal(err)
	}
	ref, err := name.ParseReference(host + "/library/app:1")
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if out, err := runIn(t, "", "admin", "user", "create", "alice", "--data-dir", dir); err != nil {
		t.Fatal(err, out)
	}
	out, err := runIn(t, "", "import", ref.String(), "--repository", "alice/app", "--tag", "1", "--insecure", "--data-dir", dir)
	if err != nil {
		t.Fatalf("import: %v\n%s", err, out)
	}
	if strings.Contains(out, "\r") {
		t.Fatalf("carriage return in the output of an import to a buffer: %q", out)
	}
	// 3 layers and the config: the first fetch is printed at once, the
	// last one at the end whatever the throttle held back.
	if !strings.Contains(out, "fetched 1 blobs, ") || !strings.Contains(out, "fetched 4 blobs, ") ||
		!strings.Contains(out, "imported "+ref.String()+" as alice/app@sha256:") {
		t.Fatalf("import output:\n%s", out)
	}
}

// TestProgressLines: written to a pipe or a file, progress is whole lines,
// no carriage return, at most one per interval, and the last state is
// always printed.
func TestProgressLines(t *testing.T) {
	var out bytes.Buffer
	p := newProgress(&out)
	if p.tty {
		t.Fatal("a bytes.Buffer taken for a terminal")
	}
	clock := time.Unix(0, 0)
	p.now = func() time.Time { return clock }
	for i := 1; i <= 5; i++ {
		p.Update("fetched " + strings.Repeat("x", i))
		clock = clock.Add(400 * time.Millisecond) // updates at 0, 0.4, 0.8, 1.2, 1.6 s
	}
	p.End()
	got := out.String()
	if strings.Contains(got, "\r") {
		t.Fatalf("carriage return in line-based progress: %q", got)
	}
	want := "fetched x\nfetched xxxx\nfetched xxxxx\n"
	if got != want {
		t.Fatalf("progress lines %q, want %q", got, want)
	}

	// A file is not a terminal either.
	f, err := os.Create(t.TempDir() + "/log")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if isTerminal(f) {
		t.Fatal("a regular file taken for a terminal")
	}
}

// TestProgressTerminal: on a terminal the line is redrawn in place and
// ended once.
func TestProgressTerminal(t *testing.T) {
	var out bytes.Buffer
	p := &progress{w: &out, tty: true, interval: time.Second, now: time.Now}
	p.Update("fetched 1 blobs, 10 B")
	p.Update("fetched 2 blobs, 20 B")
	p.End()
	if got, want := out.String(), "\r\x1b[Kfetched 1 blobs, 10 B\r\x1b[Kfetched 2 blobs, 20 B\n"; got != want {
		t.Fatalf("terminal progress %q, want %q", got, want)
	}
}
