package index

import (
	"archive/tar"
	"bytes"
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
)

// TestIndexLayerPackageAndWhiteoutBounds: hard links to a package
// database each repeat what it holds, so a few hundred bytes of links
// multiplied its packages without end; a layer's packages (links
// included) and whiteouts are bounded, past which it is unsupported.
func TestIndexLayerPackageAndWhiteoutBounds(t *testing.T) {
	isolateTemp(t)
	var status strings.Builder
	for i := range 2000 {
		fmt.Fprintf(&status, "Package: p%d\nStatus: install ok installed\nVersion: 1.0-%d\nArchitecture: amd64\n\n", i, i)
	}
	entries := []entry{file("etc/os-release", "ID=debian\nVERSION_ID=\"12\"\n"), file("var/lib/dpkg/status.d/base", status.String())}
	for i := range 101 {
		entries = append(entries, entry{name: fmt.Sprintf("var/lib/dpkg/status.d/link%d", i), typ: tar.TypeLink, link: "var/lib/dpkg/status.d/base"})
	}
	blob := gz(t, buildTar(t, entries...))
	res, err := IndexLayer(context.Background(), "sha256:links", bytes.NewReader(blob), mtGzip, int64(len(blob)), Limits{})
	if err != nil || res.Status != StatusUnsupported || !strings.Contains(res.Reason, "packages in one layer") {
		t.Fatalf("2,000 packages linked 101 times: %q (%s), %v", res.Status, res.Reason, err)
	}
	// Within the bound, the links are read.
	blob = gz(t, buildTar(t, entries[:5]...))
	if res := index(t, "sha256:few", blob, mtGzip); len(res.Packages) != 2000*4 {
		t.Fatalf("2,000 packages linked 3 times: %d packages", len(res.Packages))
	}

	pr, pw := io.Pipe()
	go func() {
		tw := tar.NewWriter(pw)
		for i := range maxWhiteouts + 1 {
			tw.WriteHeader(&tar.Header{Name: fmt.Sprintf("d/.wh.f%d", i), Typeflag: tar.TypeReg, Mode: 0o644})
		}
		tw.Close()
		pw.Close()
	}()
	res, err = IndexLayer(context.Background(), "sha256:whiteouts", pr, mtTar, 1<<30, Limits{})
	pr.CloseWithError(io.ErrClosedPipe)
	if err != nil || res.Status != StatusUnsupported || !strings.Contains(res.Reason, "whiteouts") {
		t.Fatalf("%d whiteouts: %q (%s), %v", maxWhiteouts+1, res.Status, res.Reason, err)
	}
}
