package index

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/google/osv-scalibr/extractor/filesystem"
	"github.com/google/osv-scalibr/inventory"
	"github.com/google/osv-scalibr/plugin"
	"github.com/klauspost/compress/zstd"
)

// countReader counts the bytes read from r.
type countReader struct {
	r io.Reader
	n int64
}

func (c *countReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += int64(n)
	return n, err
}

// failReader fails the test when read.
type failReader struct{ t *testing.T }

func (f failReader) Read([]byte) (int, error) {
	f.t.Error("the blob was read")
	return 0, io.ErrUnexpectedEOF
}

// brokenReader returns its data, then err.
type brokenReader struct {
	r   io.Reader
	err error
}

func (b *brokenReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if errors.Is(err, io.EOF) {
		return n, b.err
	}
	return n, err
}

func randomBytes(n int) []byte {
	rng := rand.New(rand.NewPCG(1, 2))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.UintN(256))
	}
	b[0] = 'x' // not a compression magic
	return b
}

func wantUnsupported(t *testing.T, res LayerResult, err error, reasonParts ...string) {
	t.Helper()
	if err != nil {
		t.Fatalf("IndexLayer error %v, want an unsupported result", err)
	}
	if res.Status != StatusUnsupported {
		t.Fatalf("Status = %q, want unsupported (result %+v)", res.Status, res)
	}
	for _, s := range reasonParts {
		if !strings.Contains(res.Reason, s) {
			t.Errorf("Reason %q does not mention %q", res.Reason, s)
		}
	}
	if len(res.Packages) != 0 {
		t.Errorf("unsupported layer has packages %+v", res.Packages)
	}
	roundTrip(t, res)
}

func TestIndexLayerUnsupported(t *testing.T) {
	ctx := context.Background()
	valid := gz(t, buildTar(t, file("var/lib/dpkg/status", dpkgStatus([2]string{"a", "1"}))))

	corrupt := bytes.Clone(valid)
	for i := 20; i < len(corrupt)-8; i += 7 {
		corrupt[i] ^= 0x5a
	}
	escape := buildTar(t, file("etc/os-release", debianOSRelease), file("../../etc/passwd", "root:x:0:0::/root:/bin/sh\n"))
	sneaky := buildTar(t, file("usr/../../../etc/shadow", "x"))

	for _, tc := range []struct {
		name      string
		blob      []byte
		mediaType string
		reason    []string
	}{
		{"random bytes", randomBytes(8192), mtTar, []string{"not a tar archive"}},
		{"random bytes as gzip type", randomBytes(100), mtGzip, []string{"not a tar archive"}},
		{"corrupt gzip data", corrupt, mtGzip, []string{"corrupt gzip stream"}},
		{"corrupt gzip header", append([]byte{0x1f, 0x8b, 0x99}, randomBytes(64)...), mtGzip, []string{"corrupt gzip stream"}},
		{"corrupt zstd", append([]byte{0x28, 0xb5, 0x2f, 0xfd}, randomBytes(64)...), mtZstd, []string{"corrupt zstd stream"}},
		{"truncated gzip", valid[:len(valid)/2], mtGzip, []string{"corrupt gzip stream"}},
		{"path escape", escape, mtTar, []string{`"../../etc/passwd"`, "escapes"}},
		{"path escape after clean", sneaky, mtTar, []string{`"usr/../../../etc/shadow"`}},
		{"bad whiteout", buildTar(t, file("etc/.wh..", "")), mtTar, []string{`"etc/.wh.."`}},
		{"config media type", valid, "application/vnd.oci.image.config.v1+json", []string{`media type "application/vnd.oci.image.config.v1+json" is not a container layer`}},
		{"empty media type", valid, "", []string{`media type "" is not a container layer`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			res, err := IndexLayer(ctx, "sha256:x", bytes.NewReader(tc.blob), tc.mediaType, int64(len(tc.blob)), Limits{})
			wantUnsupported(t, res, err, tc.reason...)
			if res.Digest != "sha256:x" {
				t.Errorf("Digest = %q", res.Digest)
			}
		})
	}
}

func TestIndexLayerSizeLimits(t *testing.T) {
	ctx := context.Background()
	t.Run("declared size over MaxLayerBytes is not read", func(t *testing.T) {
		res, err := IndexLayer(ctx, "sha256:big", failReader{t}, mtGzip, 3<<30, Limits{})
		wantUnsupported(t, res, err, "over the 2147483648-byte limit")
	})
	t.Run("actual size over MaxLayerBytes", func(t *testing.T) {
		blob := buildTar(t, file("a", strings.Repeat("x", 4096)))
		res, err := IndexLayer(ctx, "sha256:big", bytes.NewReader(blob), mtTar, -1, Limits{MaxLayerBytes: 1000})
		wantUnsupported(t, res, err, "over the 1000-byte limit")
	})
	// zstd compresses zeros ~9000:1, gzip ~1000:1: size the bombs so that
	// the compressed blobs are well over the reader's 4 KiB buffer.
	for comp, size := range map[string]int{"gzip": 64 << 20, "zstd": 256 << 20} {
		t.Run("decompression bomb "+comp, func(t *testing.T) {
			blob := zeroBomb(t, comp, size)
			cr := &countReader{r: bytes.NewReader(blob)}
			res, err := IndexLayer(ctx, "sha256:bomb", cr, mtGzip, int64(len(blob)), Limits{MaxUncompressedBytes: 1 << 20})
			wantUnsupported(t, res, err, "uncompressed layer is over the 1048576-byte limit")
			// Reading 1 MiB of output needs a few KiB of input (plus buffers).
			if cr.n > int64(len(blob))/4 {
				t.Errorf("read %d of %d compressed bytes: the stream was not abandoned at the limit", cr.n, len(blob))
			}
			t.Logf("read %d of %d compressed bytes", cr.n, len(blob))
		})
	}
	t.Run("oversized file is skipped", func(t *testing.T) {
		status := dpkgStatus([2]string{"a", "1"}, [2]string{"b", "1"})
		blob := buildTar(t, file("var/lib/dpkg/status", status), file("usr/lib/os-release", debianOSRelease))
		res, err := IndexLayer(ctx, "sha256:f", bytes.NewReader(blob), mtTar, int64(len(blob)), Limits{MaxFileBytes: 100})
		if err != nil || res.Status != StatusIndexed {
			t.Fatalf("IndexLayer = %+v, %v", res, err)
		}
		if len(res.Packages) != 0 || len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "var/lib/dpkg/status") {
			t.Errorf("Packages %+v Warnings %q, want one warning about the status file", res.Packages, res.Warnings)
		}
		if len(res.Files) != 2 || res.OSRelease["ID"] != "debian" {
			t.Errorf("Files %v OSRelease %v", res.Files, res.OSRelease)
		}
	})
}

// zeroBomb returns a compressed tar holding one file of size zero bytes,
// built without holding the uncompressed stream in memory.
func zeroBomb(t *testing.T, comp string, size int) []byte {
	t.Helper()
	var buf bytes.Buffer
	var zw io.WriteCloser
	switch comp {
	case "gzip":
		zw = gzip.NewWriter(&buf)
	case "zstd":
		w, err := zstd.NewWriter(&buf)
		if err != nil {
			t.Fatal(err)
		}
		zw = w
	}
	tw := tar.NewWriter(zw)
	if err := tw.WriteHeader(&tar.Header{Name: "zeros", Mode: 0o644, Size: int64(size), Typeflag: tar.TypeReg}); err != nil {
		t.Fatal(err)
	}
	zeros := make([]byte, 1<<20)
	for range size / len(zeros) {
		if _, err := tw.Write(zeros); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestIndexLayerErrors(t *testing.T) {
	blob := gz(t, buildTar(t, file("var/lib/dpkg/status", dpkgStatus([2]string{"a", "1"})), file("b", strings.Repeat("y", 10000))))
	t.Run("storage failure", func(t *testing.T) {
		errStorage := errors.New("storage: connection reset")
		r := &brokenReader{r: bytes.NewReader(blob[:len(blob)/2]), err: errStorage}
		_, err := IndexLayer(context.Background(), "sha256:s", r, mtGzip, int64(len(blob)), Limits{})
		if !errors.Is(err, errStorage) {
			t.Errorf("err = %v, want the storage error", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		_, err := IndexLayer(ctx, "sha256:c", bytes.NewReader(blob), mtGzip, int64(len(blob)), Limits{})
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
	t.Run("cancelled while reading", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		pr, pw := io.Pipe()
		go func() {
			_, _ = pw.Write(blob[:10])
			cancel()
			_, _ = pw.Write(blob[10:])
			_ = pw.Close()
		}()
		_, err := IndexLayer(ctx, "sha256:c", pr, mtGzip, int64(len(blob)), Limits{})
		_ = pr.Close() // unblocks the writer
		if !errors.Is(err, context.Canceled) {
			t.Errorf("err = %v, want context.Canceled", err)
		}
	})
}

func TestIndexLayerGarbageFiles(t *testing.T) {
	isolateTemp(t)
	garbage := string(randomBytes(3000))
	blob := gz(t, buildTar(t,
		file("var/lib/dpkg/status", garbage),
		file("var/lib/dpkg/status.d/foo", garbage),
		file("lib/apk/db/installed", garbage),
		file("var/lib/rpm/Packages", garbage),
		file("var/lib/rpm/rpmdb.sqlite", garbage),
		entry{name: "usr/local/bin/app", body: []byte("\x7fELF\x02\x01\x01\x00truncated"), mode: 0o755},
		entry{name: "usr/local/bin/pe", body: []byte("MZ" + garbage), mode: 0o755},
		file("usr/lib/python3/site-packages/x-1.0.dist-info/METADATA", garbage),
		file("usr/lib/python3/site-packages/y.egg", garbage),
		file("node_modules/x/package.json", garbage),
		file("opt/app.jar", "PK\x03\x04"+garbage),
		file("opt/nested.war", string(jar(t, map[string]string{"WEB-INF/lib/inner.jar": "PK\x05\x06" + garbage}))),
		file("etc/os-release", garbage),
		entry{name: "usr/bin/dangling", typ: tar.TypeLink, link: "nowhere/app", mode: 0o755},
		entry{name: "usr/bin/escape", typ: tar.TypeLink, link: "../../x", mode: 0o755},
		entry{name: "etc/alternatives/x", typ: tar.TypeSymlink, link: "/usr/bin/x"},
		file("/abs/.wh..wh..opq", ""),
		file(".wh..wh..opq", ""),
		file(".wh..wh.plnk", ""),
	))
	res := index(t, "sha256:garbage", blob, mtGzip)
	for _, p := range res.Packages {
		// The war yields a package named after the file at most.
		if p.Kind != KindMaven {
			t.Errorf("package from garbage: %+v", p)
		}
	}
	if len(res.Warnings) == 0 {
		t.Error("no warnings for garbage files")
	}
	t.Logf("warnings: %q", res.Warnings)
	if want := "/,abs/"; strings.Join(res.Whiteouts, ",") != want {
		t.Errorf("Whiteouts = %v, want %s", res.Whiteouts, want)
	}
	if res.OSRelease != nil {
		t.Errorf("OSRelease = %v from garbage", res.OSRelease)
	}
}

func TestIndexLayerEmpty(t *testing.T) {
	// Docker's empty layer: a gzipped tar of just the end-of-archive blocks.
	for _, blob := range [][]byte{gz(t, make([]byte, 1024)), {}} {
		res := index(t, "sha256:empty", blob, mtGzip)
		if len(res.Packages)+len(res.Files)+len(res.Whiteouts)+len(res.Warnings) != 0 {
			t.Errorf("empty layer: %+v", res)
		}
	}
}

func TestCleanPath(t *testing.T) {
	for in, want := range map[string]string{
		"./var/lib/dpkg/status": "var/lib/dpkg/status",
		"/etc/os-release":       "etc/os-release",
		".//./usr//lib/":        "usr/lib",
		"a/b/../c":              "a/c",
		"./":                    "",
		"/":                     "",
		".":                     "",
		"../x":                  "!",
		"a/../../x":             "!",
		"..":                    "!",
		"/..":                   "!",
		"...":                   "...",
	} {
		got, ok := cleanPath(in)
		if !ok {
			got = "!"
		}
		if got != want {
			t.Errorf("cleanPath(%q) = %q, want %q", in, got, want)
		}
	}
}

// panicky is an extractor that panics.
type panicky struct{ inFileRequired bool }

func (panicky) Name() string                       { return "test/panicky" }
func (panicky) Version() int                       { return 0 }
func (panicky) Requirements() *plugin.Capabilities { return &plugin.Capabilities{} }
func (p panicky) FileRequired(api filesystem.FileAPI) bool {
	if p.inFileRequired {
		panic("boom in FileRequired")
	}
	return api.Path() == "boom"
}
func (panicky) Extract(context.Context, *filesystem.ScanInput) (inventory.Inventory, error) {
	panic("boom in Extract")
}

func TestIndexLayerExtractorPanics(t *testing.T) {
	blob := buildTar(t, file("boom", "x"), file("var/lib/dpkg/status", dpkgStatus([2]string{"a", "1"})))
	for _, p := range []panicky{{}, {inFileRequired: true}} {
		ix, err := newIndexer(context.Background(), "sha256:p", Limits{}.withDefaults())
		if err != nil {
			t.Fatal(err)
		}
		ix.ex.list = append([]namedExtractor{{name: p.Name(), Extractor: p}}, ix.ex.list...)
		res, err := ix.run(bytes.NewReader(blob))
		if err != nil || res.Status != StatusIndexed {
			t.Fatalf("run = %+v, %v", res, err)
		}
		if len(res.Packages) != 1 || res.Packages[0].Name != "a" {
			t.Errorf("packages = %+v, want the dpkg one", res.Packages)
		}
		if p.inFileRequired {
			continue // the file is simply not wanted
		}
		if len(res.Warnings) != 1 || !strings.Contains(res.Warnings[0], "test/panicky: boom: extractor panicked: boom in Extract") {
			t.Errorf("Warnings = %q", res.Warnings)
		}
	}
}
