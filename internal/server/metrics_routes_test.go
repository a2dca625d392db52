package server

import (
	"bytes"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/berth-dev/berth/internal/gc"
)

// TestRouteLabel: every path maps to one of a small fixed set of route
// labels, never to a repository name, tag or digest, hostile paths
// included.
func TestRouteLabel(t *testing.T) {
	d := "sha256:" + strings.Repeat("a", 64)
	cases := map[string]string{
		"/v2":                              "base",
		"/v2/":                             "base",
		"/v2/_catalog":                     "catalog",
		"/v2/auth":                         "token",
		"/v2/a/b/tags/list":                "tags",
		"/v2/a/manifests/latest":           "manifest",
		"/v2/a/b/c/manifests/" + d:         "manifest",
		"/v2/a/blobs/" + d:                 "blob",
		"/v2/a/blobs/uploads/":             "blob_upload",
		"/v2/a/blobs/uploads":              "blob_upload",
		"/v2/a/b/blobs/uploads/0f1e2d":     "blob_upload",
		"/v2/a/referrers/" + d:             "referrers",
		"/v2/tags/list":                    "other", // no name
		"/v2/a/../b/manifests/x":           "manifest",
		"/v2/evil\n}/manifests/x":          "manifest",
		"/v2/" + strings.Repeat("x/", 500): "other",
		"/v2/a/unknown/thing":              "other",
		"/v2x/a/manifests/latest":          "other",
		"/api/v1/repository/a/b":           "api",
		"/api/v1":                          "api",
		"/api/v10/x":                       "other",
		"/healthz":                         "probe",
		"/livez":                           "probe",
		"/readyz":                          "probe",
		"/metrics":                         "metrics",
		"/metrics/x":                       "other",
		"":                                 "other",
		"/":                                "other",
		"/a/b/manifests/latest":            "other",
		"/v2/a/manifests/" + strings.Repeat("é", 100): "manifest",
	}
	allowed := map[string]bool{}
	for _, r := range []string{"base", "catalog", "token", "tags", "manifest", "blob", "blob_upload", "referrers", "api", "probe", "metrics", "other"} {
		allowed[r] = true
	}
	for p, want := range cases {
		got := routeLabel(p)
		if got != want {
			t.Errorf("routeLabel(%q) = %q, want %q", p, got, want)
		}
		if !allowed[got] {
			t.Errorf("routeLabel(%q) = %q, not in the fixed set", p, got)
		}
	}
	for m, want := range map[string]string{"GET": "GET", "PATCH": "PATCH", "BREW": "OTHER", "get": "OTHER", "": "OTHER"} {
		if got := methodLabel(m); got != want {
			t.Errorf("methodLabel(%q) = %q, want %q", m, got, want)
		}
	}
}

// FuzzRouteLabel: no input yields a label outside the fixed set.
func FuzzRouteLabel(f *testing.F) {
	f.Add("/v2/a/manifests/latest")
	f.Add("/v2/a/blobs/uploads/x")
	f.Fuzz(func(t *testing.T, p string) {
		switch routeLabel(p) {
		case "base", "catalog", "token", "tags", "manifest", "blob", "blob_upload", "referrers", "api", "probe", "metrics", "other":
		default:
			t.Fatalf("routeLabel(%q) = %q", p, routeLabel(p))
		}
	})
}

// readFromRecorder is a ResponseWriter with a ReadFrom of its own, like
// net/http's connection writer (which uses sendfile for an *os.File).
type readFromRecorder struct {
	*httptest.ResponseRecorder
	got io.Reader
}

func (r *readFromRecorder) ReadFrom(src io.Reader) (int64, error) {
	r.got = src
	return io.Copy(r.ResponseRecorder, src)
}

// TestMeteredWriterKeepsReadFrom: a blob GET's io.Copy from a file
// reaches the connection's ReadFrom with the file reader itself (the
// path to sendfile), and its bytes are counted.
func TestMeteredWriterKeepsReadFrom(t *testing.T) {
	path := filepath.Join(t.TempDir(), "blob")
	content := bytes.Repeat([]byte("x"), 100_000)
	if err := os.WriteFile(path, content, 0o600); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	under := &readFromRecorder{ResponseRecorder: httptest.NewRecorder()}
	w := &meteredWriter{ResponseWriter: under, status: http.StatusOK}
	src := io.LimitReader(f, int64(len(content)))
	// As internal/registry's blob GET does it.
	if n, err := io.Copy(w, src); err != nil || n != int64(len(content)) {
		t.Fatalf("copy: %d %v", n, err)
	}
	if under.got != src {
		t.Fatalf("the connection's ReadFrom got %T, not the handler's reader", under.got)
	}
	if w.bytes != int64(len(content)) || under.Body.Len() != len(content) {
		t.Fatalf("counted %d, wrote %d, want %d", w.bytes, under.Body.Len(), len(content))
	}
	// A writer without ReadFrom still gets the bytes, counted once.
	plain := httptest.NewRecorder()
	w = &meteredWriter{ResponseWriter: plain, status: http.StatusOK}
	if _, err := w.ReadFrom(strings.NewReader("hello")); err != nil || w.bytes != 5 || plain.Body.String() != "hello" {
		t.Fatalf("fallback: %d %q %v", w.bytes, plain.Body.String(), err)
	}
	// http.ResponseController reaches the connection through Unwrap.
	if err := http.NewResponseController(w).Flush(); err != nil {
		t.Fatalf("flush through the wrapper: %v", err)
	}
}

// BenchmarkInstrument is the metrics middleware alone around a handler
// that writes a small body (what it adds to every request).
func BenchmarkInstrument(b *testing.B) {
	m := newMetrics()
	body := []byte(`{"schemaVersion":2}`)
	next := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusOK)
		w.Write(body)
	})
	for _, c := range []struct {
		name string
		h    http.Handler
	}{{"bare", next}, {"instrumented", m.instrument(next)}} {
		b.Run(c.name, func(b *testing.B) {
			req := httptest.NewRequest("GET", "/v2/library/app/manifests/latest", nil)
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				w := &discardWriter{h: http.Header{}}
				for pb.Next() {
					c.h.ServeHTTP(w, req)
				}
			})
		})
	}
}

type discardWriter struct{ h http.Header }

func (w *discardWriter) Header() http.Header         { return w.h }
func (w *discardWriter) Write(b []byte) (int, error) { return len(b), nil }
func (w *discardWriter) WriteHeader(int)             {}

// TestSubsystemCounters: what notify, scan, mirror and gc report lands in
// the counters with the documented labels.
func TestSubsystemCounters(t *testing.T) {
	m := newMetrics()
	m.Delivery("webhook", "success")
	m.Delivery("webhook", "failure")
	m.Delivery("webhook", "failure")
	m.Scan("scanned")
	m.MirrorSync("FAIL")
	m.GCPass(gc.Report{Collected: gc.Collected{Manifests: 2, Links: 3, Blobs: 1, Bytes: 100}, Uploads: 1, UploadBytes: 10, Leftovers: 1, LeftoverBytes: 5}, nil)
	m.GCPass(gc.Report{}, errors.New("boom"))
	for _, c := range []struct {
		c    prometheus.Collector
		want float64
	}{
		{m.delivered.WithLabelValues("webhook", "failure"), 2},
		{m.delivered.WithLabelValues("webhook", "success"), 1},
		{m.scans.WithLabelValues("scanned"), 1},
		{m.syncs.WithLabelValues("fail"), 1},
		{m.syncs.WithLabelValues("success"), 0},
		{m.gcRuns.WithLabelValues("false"), 1},
		{m.gcRuns.WithLabelValues("true"), 1},
		{m.gcDeletes.WithLabelValues("manifest"), 2},
		{m.gcDeletes.WithLabelValues("blob_link"), 3},
		{m.gcDeletes.WithLabelValues("blob"), 1},
		{m.gcDeletes.WithLabelValues("upload"), 1},
		{m.gcDeletes.WithLabelValues("leftover_upload"), 1},
		{m.gcBytes, 115},
	} {
		if got := testutil.ToFloat64(c.c); got != c.want {
			t.Errorf("%v = %v, want %v", c.c, got, c.want)
		}
	}
}
