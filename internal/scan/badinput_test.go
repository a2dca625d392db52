package scan_test

import (
	"archive/tar"
	"archive/zip"
	"bytes"
	"compress/gzip"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
)

// TestHostileLayers: each bad layer makes its image unsupported with a
// reason; the worker and the other images are unharmed.
func TestHostileLayers(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{MaxUncompressedBytes: 1 << 20})
	e.importJSON(debianRecords[0])

	var traversal bytes.Buffer
	zw := gzip.NewWriter(&traversal)
	tw := tar.NewWriter(zw)
	tw.WriteHeader(&tar.Header{Name: "../../etc/passwd", Mode: 0o644, Size: 4, Typeflag: tar.TypeReg})
	tw.Write([]byte("root"))
	tw.Close()
	zw.Close()

	var bomb bytes.Buffer
	zw = gzip.NewWriter(&bomb)
	tw = tar.NewWriter(zw)
	zeros := make([]byte, 1<<20)
	tw.WriteHeader(&tar.Header{Name: "zeros", Mode: 0o644, Size: 64 << 20, Typeflag: tar.TypeReg})
	for i := 0; i < 64; i++ {
		tw.Write(zeros)
	}
	tw.Close()
	zw.Close()
	if bomb.Len() > 1<<20 {
		t.Fatalf("the bomb is %d bytes compressed; expected a high ratio", bomb.Len())
	}

	cases := []struct {
		name, want string
		layer      []byte
	}{
		{"not-a-tar", "tar", []byte("this is not a tar archive, not even close; " + strings.Repeat("x", 2000))},
		{"traversal", "../../etc/passwd", traversal.Bytes()},
		{"bomb", "1048576", bomb.Bytes()},
	}
	digests := map[string]string{}
	for _, c := range cases {
		d, _ := e.push("bad/"+c.name, "1", rawLayer(c.layer, types.OCILayer))
		digests[c.name] = d
	}
	good, _ := e.push("good/deb", "1", debianLayer(t))
	e.drain()
	for _, c := range cases {
		info := e.security("bad/"+c.name, digests[c.name])
		if info.Status != meta.ScanUnsupported || !strings.Contains(info.Reason, c.want) || info.Data != nil {
			t.Errorf("%s: status %q reason %q, want unsupported mentioning %q", c.name, info.Status, info.Reason, c.want)
		}
	}
	if info := e.security("good/deb", good); info.Status != meta.ScanScanned || len(feature(info, "zlib1g").Vulnerabilities) != 1 {
		t.Fatalf("the good image next to them: %q %q", info.Status, info.Reason)
	}
	// manifest_scanned says unsupported too, with the reason.
	scanned, _ := e.events(0, meta.EventManifestScanned)
	unsupported := 0
	for _, ev := range scanned {
		if ev["status"] == meta.ScanUnsupported && ev["reason"] != "" {
			unsupported++
		}
	}
	if unsupported != len(cases) {
		t.Fatalf("manifest_scanned unsupported events: %d of %v", unsupported, scanned)
	}
}

// TestArtifactAndIndex: an artifact is not scanned (unsupported); an index
// reports per platform, and their union as its data.
func TestArtifactAndIndex(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	amd, _ := e.push("acme/multi", "amd64", debianLayer(t))
	arm, _ := e.push("acme/multi", "arm64", alpineLayer(t))
	idx := e.pushIndex("acme/multi", "latest", amd, arm)
	e.drain()
	info := e.security("acme/multi", idx)
	if info.Status != meta.ScanScanned || len(info.Manifests) != 2 || info.Manifests[0].Digest != amd || info.Manifests[1].Status != meta.ScanScanned ||
		info.Manifests[0].Platform == nil || info.Manifests[0].Platform.Architecture != "amd64" {
		t.Fatalf("index: %+v", info)
	}
	// Its data is both platforms' packages; they share no namespace.
	if l := info.Data.Layer; l.Name != idx || l.NamespaceName != "" || feature(info, "musl") == nil || feature(info, "zlib1g") == nil {
		t.Errorf("index layer %s in %q: %d features", l.Name, l.NamespaceName, len(l.Features))
	}
	// Berth's own SBOM referrer is an artifact: never scanned itself.
	sbom, err := e.db.Manifests().Referrers(context.Background(), "acme/multi", mustDigest(t, amd), "application/spdx+json")
	if err != nil || len(sbom) != 1 {
		t.Fatalf("SBOM referrer: %v %v", sbom, err)
	}
	if _, err := e.db.Scans().ManifestScan(context.Background(), sbom[0].Digest.String()); err == nil {
		t.Fatal("the generated SBOM was queued for a scan")
	}
}

func TestImportBadInput(t *testing.T) {
	ctx := context.Background()
	e := newEnv(t, "sqlite", index.Limits{})
	dir := t.TempDir()

	// A corrupt zip fails, naming the file; nothing of it is applied.
	corrupt := filepath.Join(dir, "corrupt.zip")
	os.WriteFile(corrupt, []byte("PK\x03\x04 this is not really a zip"), 0o644)
	im := scan.NewImporter(e.db.VulnDB(), nil)
	if err := im.Path(ctx, corrupt); err == nil || !strings.Contains(err.Error(), "corrupt.zip") {
		t.Fatalf("corrupt zip: %v", err)
	}

	// A zip whose records are partly bad: the good ones are applied, the
	// bad ones reported with their entry names.
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	entries := map[string]string{
		"GOOD-1.json":     record("GOOD-1", modifiedBase, `{"package":{"ecosystem":"Debian:12","name":"zlib"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}`),
		"BADRANGE.json":   record("BADRANGE", modifiedBase, `{"package":{"ecosystem":"Debian:12","name":"zlib"},"ranges":[{"type":"CALVER","events":[{"introduced":"0"}]}]}`),
		"BADVER.json":     record("BADVER", modifiedBase, `{"package":{"ecosystem":"Debian:12","name":"zlib"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1:"}]}]}`),
		"NOTJSON.json":    `{"id": "NOTJSON", `,
		"NOMODIFIED.json": `{"id":"NOMODIFIED"}`,
	}
	for n, body := range entries {
		w, _ := zw.Create(n)
		w.Write([]byte(body))
	}
	zw.Close()
	path := filepath.Join(dir, "Debian", "all.zip")
	os.MkdirAll(filepath.Dir(path), 0o755)
	os.WriteFile(path, buf.Bytes(), 0o644)
	// The tree also holds corrupt.zip: reported, and the rest imported.
	im = scan.NewImporter(e.db.VulnDB(), nil)
	if err := im.Path(ctx, dir); err != nil {
		t.Fatal(err)
	}
	st, err := im.Finish(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st.Applied != 1 || st.Rejected != 5 || len(st.Errors) != 5 {
		t.Fatalf("partly bad zip: %+v", st)
	}
	joined := strings.Join(st.Errors, "\n")
	for _, want := range []string{"corrupt.zip", "BADRANGE.json", "CALVER", "BADVER.json", "NOTJSON.json", "NOMODIFIED.json"} {
		if !strings.Contains(joined, want) {
			t.Errorf("errors do not mention %s:\n%s", want, joined)
		}
	}
	srcs, err := e.db.VulnDB().VulnSources(ctx)
	if err != nil || len(srcs) != 1 || srcs[0].Ecosystem != "Debian" || srcs[0].Records != 1 || srcs[0].UpdatedAt.IsZero() {
		t.Fatalf("sources: %+v %v", srcs, err)
	}
}

// TestDeleteRemovesGeneratedSBOM: deleting an image deletes the SBOM Berth
// computed for it, and leaves a referrer a client pushed.
func TestDeleteRemovesGeneratedSBOM(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, index.Limits{})
			dgst, _ := e.push("acme/gone", "1", debianLayer(t))
			e.drain()
			d := mustDigest(t, dgst)
			if refs, err := e.db.Manifests().Referrers(ctx, "acme/gone", d, ""); err != nil || len(refs) != 1 {
				t.Fatalf("before: %v %v", refs, err)
			}
			// A client's own referrer (an oras-style artifact) of the image.
			e.putReferrer("acme/gone", dgst)
			if err := e.db.Manifests().DeleteManifest(ctx, "acme/gone", d, "alice"); err != nil {
				t.Fatal(err)
			}
			refs, err := e.db.Manifests().Referrers(ctx, "acme/gone", d, "")
			if err != nil || len(refs) != 1 || refs[0].ArtifactType != "application/vnd.example.report" {
				t.Fatalf("after delete: %+v %v", refs, err)
			}
		})
	}
}
