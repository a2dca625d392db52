package server_test

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// BenchmarkPushLatency measures, through a real server (scanning on, a
// registry-wide repo_push webhook to a real HTTP receiver), how long after
// a push is acknowledged to go-containerregistry its scan job is claimed
// by a scan worker and its webhook delivery arrives. Each iteration pushes
// latencyPushes images one after the other, waiting for both before the
// next (after a random pause of up to 500 ms), and reports the p50 and max of each latency:
//
//	BERTH_TEST_POSTGRES_DSN=postgres://postgres@127.0.0.1:5432/test?sslmode=disable \
//	  go test ./internal/server -run '^$' -bench PushLatency -benchtime 1x -v
//
// The scan start is seen by polling the jobs table every millisecond, so
// it is late by up to that much.
func BenchmarkPushLatency(b *testing.B) {
	for _, dialect := range metatest.Dialects() {
		b.Run(dialect, func(b *testing.B) {
			var scanLat, hookLat []time.Duration
			for range b.N {
				s, h := pushLatencies(b, dialect)
				scanLat, hookLat = append(scanLat, s...), append(hookLat, h...)
			}
			p50s, maxs := quantiles(scanLat)
			p50h, maxh := quantiles(hookLat)
			b.ReportMetric(float64(p50s.Microseconds())/1000, "scan-p50-ms")
			b.ReportMetric(float64(maxs.Microseconds())/1000, "scan-max-ms")
			b.ReportMetric(float64(p50h.Microseconds())/1000, "hook-p50-ms")
			b.ReportMetric(float64(maxh.Microseconds())/1000, "hook-max-ms")
			b.Logf("%s, %d pushes: push to scan start p50 %s max %s; push to webhook delivery p50 %s max %s",
				dialect, len(scanLat), p50s, maxs, p50h, maxh)
		})
	}
}

const latencyPushes = 50

func quantiles(ds []time.Duration) (p50, maxd time.Duration) {
	if len(ds) == 0 {
		return 0, 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	return s[len(s)/2], s[len(s)-1]
}

// pushLatencies serves a fresh Berth and returns the push-to-scan-start
// and push-to-webhook latencies of latencyPushes pushes.
func pushLatencies(b *testing.B, dialect string) (scanLat, hookLat []time.Duration) {
	b.Helper()
	_, host, cfg := serveServer(b, dialect, func(cfg *config.Config) {
		cfg.Scan.Enabled = true
		cfg.Scan.SBOM = false
		cfg.Scan.VulnDB.UpdateInterval = 0
		cfg.Notifications.AllowedHosts = []string{"loopback"}
	})
	db, err := meta.Open(context.Background(), cfg.DatabaseURL())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { db.Close() })
	hash, _ := auth.HashPassword(pw)
	if _, err := db.Users().CreateUser(context.Background(), meta.User{Username: "root", SecretHash: hash, Superuser: true}); err != nil {
		b.Fatal(err)
	}
	base := "http://" + host

	var mu sync.Mutex
	arrived := map[string]time.Time{} // digest -> first delivery
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		at := time.Now()
		var p struct {
			Digest string `json:"digest"`
		}
		json.NewDecoder(r.Body).Decode(&p)
		mu.Lock()
		if _, ok := arrived[p.Digest]; !ok {
			arrived[p.Digest] = at
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	b.Cleanup(hook.Close)
	req, _ := http.NewRequest("POST", base+"/api/v1/superuser/notification/",
		strings.NewReader(`{"event":"repo_push","method":"webhook","config":{"url":"`+hook.URL+`/hook"}}`))
	req.SetBasicAuth("root", pw)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		b.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		b.Fatalf("create notification: %d", resp.StatusCode)
	}

	opts := []remote.Option{remote.WithAuth(&authn.Basic{Username: "root", Password: pw})}
	for i := range latencyPushes + 1 { // the first push warms up
		// A random pause, so that pushes do not fall in step with the
		// background loops' polls.
		time.Sleep(rand.N(500 * time.Millisecond))
		img, err := random.Image(256, 1)
		if err != nil {
			b.Fatal(err)
		}
		d, _ := img.Digest()
		ref, err := name.ParseReference(fmt.Sprintf("%s/root/lat:v%d", host, i), name.Insecure)
		if err != nil {
			b.Fatal(err)
		}
		if err := remote.Write(ref, img, opts...); err != nil {
			b.Fatal(err)
		}
		acked := time.Now()
		var started time.Time
		deadline := acked.Add(30 * time.Second)
		for started.IsZero() {
			if time.Now().After(deadline) {
				b.Fatalf("push %d: no scan job claimed within 30s", i)
			}
			js, err := db.Jobs().Jobs(context.Background(), meta.ScanQueue, "", 1000)
			if err != nil {
				b.Fatal(err)
			}
			for _, j := range js {
				if j.Attempts > 0 && strings.Contains(string(j.Payload), d.String()) {
					started = time.Now()
				}
			}
			if started.IsZero() {
				time.Sleep(time.Millisecond)
			}
		}
		var delivered time.Time
		for delivered.IsZero() {
			if time.Now().After(deadline) {
				b.Fatalf("push %d: no webhook within 30s", i)
			}
			mu.Lock()
			delivered = arrived[d.String()]
			mu.Unlock()
			time.Sleep(time.Millisecond)
		}
		if i > 0 {
			scanLat = append(scanLat, started.Sub(acked))
			hookLat = append(hookLat, delivered.Sub(acked))
		}
	}
	return scanLat, hookLat
}
