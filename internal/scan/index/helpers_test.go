package index

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"encoding/json"
	"os"
	"reflect"
	"testing"
)

const (
	mtGzip = "application/vnd.oci.image.layer.v1.tar+gzip"
	mtTar  = "application/vnd.oci.image.layer.v1.tar"
	mtZstd = "application/vnd.oci.image.layer.v1.tar+zstd"
)

// entry is one tar entry of a test layer.
type entry struct {
	name string
	body []byte
	mode int64
	typ  byte // tar.TypeReg when zero
	link string
}

func file(name, body string) entry { return entry{name: name, body: []byte(body), mode: 0o644} }

func buildTar(t *testing.T, entries ...entry) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, Typeflag: e.typ, Linkname: e.link, Format: tar.FormatPAX}
		if h.Typeflag == 0 {
			h.Typeflag = tar.TypeReg
		}
		if h.Mode == 0 {
			h.Mode = 0o644
		}
		if h.Typeflag == tar.TypeReg {
			h.Size = int64(len(e.body))
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(e.body); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(t *testing.T, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	if _, err := zw.Write(b); err != nil {
		t.Fatal(err)
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// index runs IndexLayer on blob, failing the test on an error or an
// unsupported layer, and checks the result round-trips through JSON.
func index(t *testing.T, digest string, blob []byte, mediaType string) LayerResult {
	t.Helper()
	res, err := IndexLayer(context.Background(), digest, bytes.NewReader(blob), mediaType, int64(len(blob)), Limits{})
	if err != nil {
		t.Fatalf("IndexLayer: %v", err)
	}
	if res.Status != StatusIndexed {
		t.Fatalf("IndexLayer: status %q (%s), want indexed", res.Status, res.Reason)
	}
	if res.Digest != digest {
		t.Errorf("Digest = %q, want %q", res.Digest, digest)
	}
	roundTrip(t, res)
	return res
}

func roundTrip[T any](t *testing.T, v T) {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	var back T
	if err := json.Unmarshal(b, &back); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(v, back) {
		t.Errorf("JSON round trip changed the value:\n got %+v\nwant %+v", back, v)
	}
}

// byName indexes packages by kind/name.
func byName(ps []Package) map[string]Package {
	m := map[string]Package{}
	for _, p := range ps {
		m[p.Kind+"/"+p.Name] = p
	}
	return m
}

// isolateTemp points TMPDIR at an empty directory and, at the end of the
// test, checks that nothing was left in it.
func isolateTemp(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("TMPDIR", dir)
	t.Cleanup(func() {
		left, err := os.ReadDir(dir)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range left {
			t.Errorf("temporary file left behind: %s", e.Name())
		}
	})
}
