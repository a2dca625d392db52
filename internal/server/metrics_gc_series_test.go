package server_test

import (
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/server"
)

// metricsAddr waits for srv's metrics listener (metrics.addr) to open.
func metricsAddr(t *testing.T, srv *server.Server) string {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if a := srv.MetricsAddr(); a != "" {
			return a
		}
	}
	t.Fatal("the metrics listener did not open")
	return ""
}

// TestGCDeleteSeriesBeforeAnyPass: every kind docs/metrics.md lists for
// registry_gc_deletes_total has its series, at 0, before any pass (here,
// on a replica that runs none), so that rate() sees the first increment.
func TestGCDeleteSeriesBeforeAnyPass(t *testing.T) {
	srv, _, _ := serveServer(t, "sqlite", func(cfg *config.Config) {
		cfg.Metrics.Addr = "127.0.0.1:0"
		cfg.GC.Enabled = false
	})
	code, body := get(t, "http://"+metricsAddr(t, srv)+"/metrics", "")
	if code != 200 {
		t.Fatalf("scrape: %d %s", code, body)
	}
	s := parseScrape(t, body)
	for _, kind := range []string{"manifest", "blob_link", "blob", "upload", "leftover_upload", "leftover_blob"} {
		if v, ok := s.value("registry_gc_deletes_total", map[string]string{"kind": kind}); !ok || v != 0 {
			t.Errorf("registry_gc_deletes_total{kind=%q} = %v (present %v), want a series at 0", kind, v, ok)
		}
	}
	if v, ok := s.value("registry_gc_storage_deleted_bytes_total", nil); !ok || v != 0 {
		t.Errorf("registry_gc_storage_deleted_bytes_total = %v (present %v), want 0", v, ok)
	}
}
