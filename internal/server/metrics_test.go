package server_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/server"
)

// serveServer is serveLive returning the server too (its metrics
// listener's address).
func serveServer(t testing.TB, dialect string, edit func(*config.Config)) (*server.Server, string, config.Config) {
	t.Helper()
	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Storage.Filesystem.Fsync = false
	cfg.Log.Level = "error"
	cfg.Scan.Enabled = false
	if dialect == "postgres" {
		cfg.Database.URL = metatest.PostgresDSN(t)
		cfg.SecretKey = testSecretKey // replicas on PostgreSQL share one key
	}
	edit(&cfg)
	ctx, cancel := context.WithCancel(context.Background())
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		srv.Close()
	})
	return srv, ln.Addr().String(), cfg
}

func addUser(t *testing.T, cfg config.Config, username string, superuser bool) {
	t.Helper()
	db, err := meta.Open(context.Background(), cfg.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	hash, _ := auth.HashPassword(pw)
	if _, err := db.Users().CreateUser(context.Background(), meta.User{Username: username, SecretHash: hash, Superuser: superuser}); err != nil {
		t.Fatal(err)
	}
}

// get does a GET with Basic credentials (none when user is empty) and
// returns the status and body.
func get(t *testing.T, url, user string, header ...string) (int, []byte) {
	t.Helper()
	req, _ := http.NewRequest("GET", url, nil)
	if user != "" {
		req.SetBasicAuth(user, pw)
	}
	for i := 0; i+1 < len(header); i += 2 {
		req.Header.Set(header[i], header[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, body
}

type scrape map[string]*dto.MetricFamily

func parseScrape(t *testing.T, body []byte) scrape {
	t.Helper()
	p := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("parse scrape: %v\n%s", err, body)
	}
	return fams
}

// value is the sum of the series of family name whose labels include
// want (a counter's or gauge's value; a histogram's count), and whether
// any matched.
func (s scrape) value(name string, want map[string]string) (float64, bool) {
	f, ok := s[name]
	if !ok {
		return 0, false
	}
	var sum float64
	found := false
next:
	for _, m := range f.Metric {
		have := map[string]string{}
		for _, l := range m.Label {
			have[l.GetName()] = l.GetValue()
		}
		for k, v := range want {
			if have[k] != v {
				continue next
			}
		}
		found = true
		switch {
		case m.Counter != nil:
			sum += m.Counter.GetValue()
		case m.Gauge != nil:
			sum += m.Gauge.GetValue()
		case m.Histogram != nil:
			sum += float64(m.Histogram.GetSampleCount())
		}
	}
	return sum, found
}

// TestMetricsScrape: after a known workload (a push with
// go-containerregistry, a pull of its manifest and blobs, a manifest
// that does not exist), a scrape shows the requests by route and code,
// the bytes in and out, and the database's gauges; /metrics on the main
// listener wants a superuser.
func TestMetricsScrape(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			// With fsync, as out of the box: on SQLite the durable
			// commits wait for the log's flushes, which are counted.
			started := time.Now()
			_, host, cfg := serveServer(t, dialect, func(cfg *config.Config) { cfg.Storage.Filesystem.Fsync = true })
			addUser(t, cfg, "root", true)
			addUser(t, cfg, "alice", false)
			base := "http://" + host

			img, err := random.Image(64<<10, 2)
			if err != nil {
				t.Fatal(err)
			}
			ref, _ := name.ParseReference(host+"/root/app:v1", name.Insecure)
			if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "root", Password: pw})); err != nil {
				t.Fatal(err)
			}
			// The pull: the manifest by tag, then every blob.
			mt, _ := img.MediaType()
			if code, _ := get(t, base+"/v2/root/app/manifests/v1", "root", "Accept", string(mt)); code != 200 {
				t.Fatalf("pull manifest: %d", code)
			}
			var pulled int64
			layers, _ := img.Layers()
			cfgName, _ := img.ConfigName()
			digests := []string{cfgName.String()}
			for _, l := range layers {
				d, _ := l.Digest()
				digests = append(digests, d.String())
			}
			for _, d := range digests {
				code, body := get(t, base+"/v2/root/app/blobs/"+d, "root")
				if code != 200 {
					t.Fatalf("pull blob %s: %d", d, code)
				}
				pulled += int64(len(body))
			}
			if code, _ := get(t, base+"/v2/root/app/manifests/nope", "root"); code != 404 {
				t.Fatalf("missing manifest: %d", code)
			}

			// Refused without credentials, or to a user who is not a
			// superuser.
			if code, _ := get(t, base+"/metrics", ""); code != http.StatusUnauthorized {
				t.Fatalf("anonymous scrape: %d", code)
			}
			if code, _ := get(t, base+"/metrics", "alice"); code != http.StatusForbidden {
				t.Fatalf("scrape by a user: %d", code)
			}
			code, body := get(t, base+"/metrics", "root")
			if code != 200 {
				t.Fatalf("scrape: %d %s", code, body)
			}
			s := parseScrape(t, body)
			for _, c := range []struct {
				method, route, code string
				want                float64
			}{
				{"PUT", "manifest", "201", 1},
				{"GET", "manifest", "200", 1},
				{"GET", "manifest", "404", 1},
				{"GET", "blob", "200", float64(len(digests))},
			} {
				got, _ := s.value("registry_http_requests_total", map[string]string{"method": c.method, "route": c.route, "code": c.code})
				if got != c.want {
					t.Errorf("registry_http_requests_total{method=%s,route=%s,code=%s} = %v, want %v", c.method, c.route, c.code, got, c.want)
				}
			}
			if n, _ := s.value("registry_http_request_duration_seconds", map[string]string{"method": "GET", "route": "manifest"}); n != 2 {
				t.Errorf("manifest GET durations observed: %v, want 2", n)
			}
			if out, _ := s.value("registry_http_response_size_bytes_total", map[string]string{"route": "blob"}); out < float64(pulled) || pulled == 0 {
				t.Errorf("blob bytes out %v, pulled %d", out, pulled)
			}
			var pushed int64
			for _, l := range layers {
				n, _ := l.Size()
				pushed += n
			}
			if in, _ := s.value("registry_http_request_size_bytes_total", map[string]string{"route": "blob_upload"}); in < float64(pushed) {
				t.Errorf("upload bytes in %v, pushed layers of %d", in, pushed)
			}
			if in, _ := s.value("registry_http_request_size_bytes_total", map[string]string{"route": "manifest"}); in <= 0 {
				t.Errorf("manifest bytes in %v", in)
			}
			if n, ok := s.value("registry_http_in_flight_requests", nil); !ok || n != 1 { // the scrape itself
				t.Errorf("in flight: %v %v", n, ok)
			}
			for _, series := range []struct {
				name   string
				labels map[string]string
			}{
				{"registry_jobs_queued", map[string]string{"queue": "notify", "state": "pending"}},
				{"registry_jobs_queued", map[string]string{"queue": "scan", "state": "running"}},
				{"registry_jobs_dead", map[string]string{"queue": "gate"}},
				{"registry_jobs_oldest_ready_seconds", map[string]string{"queue": "graph"}},
				{"registry_outbox_lag_events", map[string]string{"subscriber": "notify"}},
				{"registry_outbox_unsequenced_events", nil},
				{"registry_gate_candidates", map[string]string{"state": "pending"}},
				{"registry_database_pool_waits_total", nil},
				{"registry_gc_deletes_total", map[string]string{"kind": "blob"}},
				{"registry_mirror_syncs_total", map[string]string{"outcome": "success"}},
				{"go_goroutines", nil},
			} {
				if _, ok := s.value(series.name, series.labels); !ok {
					t.Errorf("no series %s%v", series.name, series.labels)
				}
			}
			// The push wrote through SQLite's single writer: its waits are
			// counted (on PostgreSQL there is no single writer).
			n, okN := s.value("registry_database_writer_waits_total", nil)
			_, okS := s.value("registry_database_writer_wait_seconds_total", nil)
			if dialect == "sqlite" && (!okN || !okS || n < float64(len(digests))) {
				t.Errorf("SQLite writer waits after a push of %d blobs: %v (%v, %v)", len(digests), n, okN, okS)
			}
			if dialect == "postgres" && (okN || okS) {
				t.Errorf("writer wait exported on PostgreSQL")
			}
			// And they held the writer for some time, less than the test's.
			held, okH := s.value("registry_database_writer_hold_seconds_total", nil)
			if dialect == "sqlite" && (!okH || held <= 0 || held > time.Since(started).Seconds()) {
				t.Errorf("SQLite writer hold after a push: %vs (%v), the test ran %v", held, okH, time.Since(started))
			}
			if dialect == "postgres" && okH {
				t.Errorf("writer hold exported on PostgreSQL")
			}
			// Each stored blob and the manifest committed durably: each
			// waited for a flush of the log, which may serve several.
			flushes, okF := s.value("registry_database_log_flushes_total", nil)
			commits, okC := s.value("registry_database_log_flush_commits_total", nil)
			if dialect == "sqlite" && (!okF || !okC || flushes < 1 || commits < flushes || commits < float64(len(digests)+1)) {
				t.Errorf("SQLite log flushes after a push of %d blobs and a manifest: %v flushes (%v) for %v commits (%v)", len(digests), flushes, okF, commits, okC)
			}
			if dialect == "postgres" && (okF || okC) {
				t.Errorf("log flushes exported on PostgreSQL")
			}
			// No label value names a repository, a tag or a digest.
			for fam, f := range s {
				for _, m := range f.Metric {
					for _, l := range m.Label {
						if v := l.GetValue(); strings.Contains(v, "root/app") || strings.Contains(v, "sha256:") || v == "v1" || v == "nope" {
							t.Errorf("%s has label %s=%q", fam, l.GetName(), v)
						}
					}
				}
			}
		})
	}
}

// TestMetricsServedOnTheirOwnAddress: with metrics.addr, /metrics answers
// there without credentials, and not on the main listener.
func TestMetricsServedOnTheirOwnAddress(t *testing.T) {
	srv, host, _ := serveServer(t, "sqlite", func(cfg *config.Config) { cfg.Metrics.Addr = "127.0.0.1:0" })
	// Once the main listener answered, the metrics listener is open.
	if code, _ := get(t, "http://"+host+"/livez", ""); code != 200 {
		t.Fatalf("livez: %d", code)
	}
	if code, _ := get(t, "http://"+host+"/metrics", ""); code != http.StatusNotFound {
		t.Fatalf("main listener /metrics: %d, want 404", code)
	}
	addr := srv.MetricsAddr()
	if addr == "" {
		t.Fatal("no metrics address")
	}
	code, body := get(t, "http://"+addr+"/metrics", "")
	if code != 200 {
		t.Fatalf("metrics listener: %d %s", code, body)
	}
	s := parseScrape(t, body)
	if n, _ := s.value("registry_http_requests_total", map[string]string{"route": "probe", "code": "200"}); n != 1 {
		t.Errorf("probe requests = %v, want 1", n)
	}
	if n, _ := s.value("registry_http_requests_total", map[string]string{"route": "metrics", "code": "404"}); n != 1 {
		t.Errorf("metrics 404s on the main listener = %v, want 1", n)
	}
}

// TestPprofOnTheMetricsListener: metrics.pprof serves Go's profiles on
// the metrics listener only; without it they are not served anywhere.
func TestPprofOnTheMetricsListener(t *testing.T) {
	for _, on := range []bool{true, false} {
		srv, host, _ := serveServer(t, "sqlite", func(cfg *config.Config) {
			cfg.Metrics.Addr = "127.0.0.1:0"
			cfg.Metrics.Pprof = on
		})
		if code, _ := get(t, "http://"+host+"/livez", ""); code != 200 {
			t.Fatalf("livez: %d", code)
		}
		want := http.StatusNotFound
		if on {
			want = http.StatusOK
		}
		code, body := get(t, "http://"+srv.MetricsAddr()+"/debug/pprof/cmdline", "")
		if code != want || on && !strings.Contains(string(body), "berth") && !strings.Contains(string(body), "test") {
			t.Errorf("pprof %v: metrics listener /debug/pprof/cmdline = %d %q, want %d", on, code, body, want)
		}
		if code, _ := get(t, "http://"+srv.MetricsAddr()+"/debug/pprof/goroutine?debug=1", ""); code != want {
			t.Errorf("pprof %v: goroutine profile = %d, want %d", on, code, want)
		}
		if code, _ := get(t, "http://"+host+"/debug/pprof/", ""); code == http.StatusOK {
			t.Errorf("pprof %v: the main listener serves /debug/pprof/", on)
		}
	}
}

// TestMetricsPublicAndOff: metrics.public opens /metrics on the main
// listener; metrics.enabled false removes it.
func TestMetricsPublicAndOff(t *testing.T) {
	hs := serveConfig(t, func(cfg *config.Config) { cfg.Metrics.Public = true })
	if code, body := get(t, hs.URL+"/metrics", ""); code != 200 || !strings.Contains(string(body), "registry_http_in_flight_requests 1") {
		t.Fatalf("public scrape: %d", code)
	}
	hs = serveConfig(t, func(cfg *config.Config) { cfg.Metrics.Enabled = false })
	if code, _ := get(t, hs.URL+"/metrics", ""); code != http.StatusNotFound {
		t.Fatalf("metrics off: %d", code)
	}
	if code, _ := get(t, hs.URL+"/readyz", ""); code != 200 {
		t.Fatalf("readyz with metrics off: %d", code)
	}
}

// TestProbes: /livez answers while the process serves; /readyz answers
// 503 with the reason when the storage root is gone or the database is
// closed; /healthz is unchanged.
func TestProbes(t *testing.T) {
	cfgRoot := t.TempDir() + "/storage"
	srv, hs, _ := startServer(t, func(cfg *config.Config) {
		cfg.Scan.Enabled = false
		cfg.Storage.Filesystem.RootDirectory = cfgRoot
	})
	for _, p := range []string{"/livez", "/readyz", "/healthz"} {
		if code, body := get(t, hs.URL+p, ""); code != 200 || string(body) != "ok\n" {
			t.Fatalf("%s: %d %q", p, code, body)
		}
	}
	if err := os.Rename(cfgRoot, cfgRoot+".away"); err != nil {
		t.Fatal(err)
	}
	if code, body := get(t, hs.URL+"/readyz", ""); code != 503 || !strings.Contains(string(body), "storage") {
		t.Fatalf("readyz without storage: %d %q", code, body)
	}
	if code, _ := get(t, hs.URL+"/livez", ""); code != 200 {
		t.Fatalf("livez without storage: %d", code)
	}
	if err := os.Rename(cfgRoot+".away", cfgRoot); err != nil {
		t.Fatal(err)
	}
	if code, _ := get(t, hs.URL+"/readyz", ""); code != 200 {
		t.Fatalf("readyz with storage back: %d", code)
	}
	srv.Close()
	start := time.Now()
	if code, body := get(t, hs.URL+"/readyz", ""); code != 503 || !strings.Contains(string(body), "metadata store") {
		t.Fatalf("readyz with the database closed: %d %q", code, body)
	}
	if time.Since(start) > 10*time.Second {
		t.Errorf("readyz took %s", time.Since(start))
	}
	if code, _ := get(t, hs.URL+"/livez", ""); code != 200 {
		t.Fatalf("livez with the database closed: %d", code)
	}
}
