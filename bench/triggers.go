package main

// The latency of what Berth triggers (-triggers): push to webhook delivery
// at a fixed push rate, and push to scan complete. Berth only: nobody else
// publishes these, and they are the baselines for the trigger and gate
// latency rows to come.

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"
)

// triggerRates are the push rates (pushes/s) and how many pushes each.
var triggerRates = []struct{ rate, pushes int }{{1, 20}, {10, 100}, {100, 500}}

// runTriggerBench starts the built binary with a registry-wide repo_push
// webhook to a local receiver and scanning on, pushes small images at each
// rate (each image's manifest PUT at its slot, from as many goroutines as
// needed), and records, per tag, the time from the manifest PUT's response
// to the webhook's arrival. Then it measures push to scan complete: the
// time from the manifest PUT's response to the security endpoint answering
// "scanned", for images pushed one at a time.
func runTriggerBench(_ context.Context, c config, work string) (string, error) {
	bin := c.berthBin
	if bin == "" {
		var err error
		if bin, err = buildBerth(work); err != nil {
			return "", err
		}
	}
	dir := filepath.Join(work, "triggers")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	cfg := filepath.Join(dir, "berth.yaml")
	if err := os.WriteFile(cfg, []byte("notifications:\n  allowedHosts: [loopback]\n"), 0o644); err != nil {
		return "", err
	}
	s, err := startBerth(bin, dir, []string{"--config", cfg, "--log-level", "warn"})
	if s != nil {
		defer s.stop()
	}
	if err != nil {
		return "", err
	}
	var mu sync.Mutex
	arrived := map[string]time.Time{}
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		var p struct {
			Repository  string   `json:"repository"`
			UpdatedTags []string `json:"updated_tags"`
		}
		b, _ := io.ReadAll(r.Body)
		_ = json.Unmarshal(b, &p)
		mu.Lock()
		for _, t := range p.UpdatedTags {
			if _, ok := arrived[t]; !ok {
				arrived[t] = now
			}
		}
		mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()
	if st, m, err := apiCall(s.baseURL(), "POST", "/api/v1/superuser/notification/", map[string]any{"event": "repo_push",
		"method": "webhook", "title": "bench", "config": map[string]any{"url": receiver.URL}}); err != nil || st != 201 {
		return "", fmt.Errorf("create notification: %d %v %v", st, m, err)
	}
	reg := &registry{base: s.baseURL(), client: newClient(64, 32)}

	var b strings.Builder
	fmt.Fprintf(&b, "## What Berth triggers: latency\n\n%s; %d CPUs; Go %s; commit %s; `berth serve` with scanning on (the default), notifications to loopback allowed, SQLite and filesystem defaults\n\n",
		time.Now().UTC().Format("2006-01-02 15:04 UTC"), nproc(), runtime.Version(), gitRev())
	b.WriteString("| trigger | pushes | p50 | p99 | max |\n|---|---:|---:|---:|---:|\n")
	seed := uint64(time.Now().UnixNano())
	for ri, tr := range triggerRates {
		imgs, err := makeSmallImages(seed+uint64(ri), tr.pushes, c.smallKiB<<10)
		if err != nil {
			return "", err
		}
		done := make([]time.Time, len(imgs))
		errs := make([]error, len(imgs))
		interval := time.Second / time.Duration(tr.rate)
		// Blobs first, unpaced; the paced part is the manifest PUT.
		var wg sync.WaitGroup
		sem := make(chan struct{}, 10)
		repo := fmt.Sprintf("triggers/rate-%d", tr.rate)
		for i, img := range imgs {
			wg.Add(1)
			sem <- struct{}{}
			go func() {
				defer wg.Done()
				defer func() { <-sem }()
				for _, bl := range []struct {
					d    string
					data []byte
				}{{img.configDigest, img.config}, {img.layerDigest, img.layer}} {
					if err := reg.pushBlob(repo, bl.d, strings.NewReader(string(bl.data)), int64(len(bl.data)), "patch"); err != nil {
						errs[i] = err
						return
					}
				}
			}()
		}
		wg.Wait()
		start := time.Now()
		for i, img := range imgs {
			if errs[i] != nil {
				return "", errs[i]
			}
			time.Sleep(time.Until(start.Add(time.Duration(i) * interval)))
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = reg.pushManifest(repo, fmt.Sprintf("r%d-%d", tr.rate, i), mtOCIManifest, img.manifest)
				done[i] = time.Now()
			}()
		}
		wg.Wait()
		for _, err := range errs {
			if err != nil {
				return "", err
			}
		}
		lat, err := waitArrivals(&mu, arrived, tr.rate, done)
		if err != nil {
			return "", err
		}
		achieved := float64(len(done)) / slices.MaxFunc(done, func(a, b time.Time) int { return a.Compare(b) }).Sub(start).Seconds()
		fmt.Fprintf(&b, "| push → repo_push webhook delivered, %d pushes/s (manifest PUTs answered at %.0f/s) | %d | %s | %s | %s |\n", tr.rate, achieved, len(lat),
			fmtDur(percentile(lat, 50)), fmtDur(percentile(lat, 99)), fmtDur(lat[len(lat)-1]))
	}

	// Push to scan complete, one image at a time.
	imgs, err := makeSmallImages(seed+99, 20, c.smallKiB<<10)
	if err != nil {
		return "", err
	}
	var scanLat []time.Duration
	for i, img := range imgs {
		tag := fmt.Sprintf("s%d", i)
		if err := reg.pushImage("triggers/scan", tag, img); err != nil {
			return "", err
		}
		pushed := time.Now()
		md := sha(img.manifest)
		for {
			_, m, err := apiCall(s.baseURL(), "GET", "/api/v1/repository/triggers/scan/manifest/"+md+"/security", nil)
			if err != nil {
				return "", err
			}
			if m["status"] == "scanned" {
				scanLat = append(scanLat, time.Since(pushed))
				break
			}
			if time.Since(pushed) > 2*time.Minute {
				return "", fmt.Errorf("image %s not scanned after 2 minutes: %v", tag, m)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	slices.Sort(scanLat)
	fmt.Fprintf(&b, "| push → scan complete (security endpoint says scanned; polled every 2 ms), one image at a time | %d | %s | %s | %s |\n",
		len(scanLat), fmtDur(percentile(scanLat, 50)), fmtDur(percentile(scanLat, 99)), fmtDur(scanLat[len(scanLat)-1]))
	if d, took, err := vulnFoundLatency(s.baseURL(), reg); err != nil {
		fmt.Fprintf(&b, "| vulnerability database import → vulnerability_found delivered | error: %v | | | |\n", err)
	} else {
		fmt.Fprintf(&b, "| vulnerability database import (one OSV record naming a package of a scanned image; from the import request, whose response took %s) → vulnerability_found delivered | 1 | %s | | |\n", fmtDur(took), fmtDur(d))
	}
	fmt.Fprintf(&b, "\nLatency is from the manifest PUT's response at the client (for the import, from sending its request: the delivery may arrive before the response is read) to the webhook's arrival at a receiver in the bench process (same clock). Command: `go run ./bench -triggers`\n")
	return b.String(), nil
}

// waitArrivals waits for a webhook per tag r<rate>-<i> and returns the
// latencies, sorted.
func waitArrivals(mu *sync.Mutex, arrived map[string]time.Time, rate int, done []time.Time) ([]time.Duration, error) {
	deadline := time.Now().Add(2 * time.Minute)
	for {
		mu.Lock()
		var lat []time.Duration
		for i, d := range done {
			if t, ok := arrived[fmt.Sprintf("r%d-%d", rate, i)]; ok {
				lat = append(lat, t.Sub(d))
			}
		}
		mu.Unlock()
		if len(lat) == len(done) {
			slices.Sort(lat)
			return lat, nil
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("%d of %d webhooks arrived within 2 minutes at %d pushes/s", len(lat), len(done), rate)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func fmtDur(d time.Duration) string {
	switch {
	case d >= time.Second:
		return fmt.Sprintf("%.2f s", d.Seconds())
	default:
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
}

// vulnFoundLatency pushes a Debian 12 image holding one package, waits for
// its scan, then imports an OSV record that names the package and times
// the import's request to the vulnerability_found webhook's arrival (the
// re-match can deliver before the client has read the import's response,
// so that is no starting point), and the import's own response time.
func vulnFoundLatency(base string, reg *registry) (latency, took time.Duration, err error) {
	arrived := make(chan time.Time, 4)
	receiver := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case arrived <- time.Now():
		default:
		}
		io.Copy(io.Discard, r.Body)
		w.WriteHeader(http.StatusNoContent)
	}))
	defer receiver.Close()
	if st, m, err := apiCall(base, "POST", "/api/v1/superuser/notification/", map[string]any{"event": "vulnerability_found",
		"method": "webhook", "title": "bench-vuln", "config": map[string]any{"url": receiver.URL}}); err != nil || st != 201 {
		return 0, 0, fmt.Errorf("create notification: %d %v %v", st, m, err)
	}
	pkg := fmt.Sprintf("benchpkg%d", time.Now().UnixNano()%1e9)
	status := fmt.Sprintf("Package: %s\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.0-1\n\n", pkg)
	layer, err := gzipTar([]tarFile{
		{name: "etc/os-release", mode: 0o644, data: []byte("PRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nNAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nVERSION_CODENAME=bookworm\nID=debian\n")},
		{name: "var/lib/dpkg/status", mode: 0o644, data: []byte(status)},
	}, true)
	if err != nil {
		return 0, 0, err
	}
	cfg := []byte(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}`)
	man := []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[{"mediaType":%q,"digest":%q,"size":%d}]}`,
		mtOCIManifest, mtOCIConfig, sha(cfg), len(cfg), mtOCILayer, sha(layer), len(layer)))
	img := &smallImage{config: cfg, configDigest: sha(cfg), layer: layer, layerDigest: sha(layer), manifest: man}
	if err := reg.pushImage("triggers/debian", "1", img); err != nil {
		return 0, 0, err
	}
	for t0 := time.Now(); ; time.Sleep(10 * time.Millisecond) {
		_, m, err := apiCall(base, "GET", "/api/v1/repository/triggers/debian/manifest/"+sha(man)+"/security", nil)
		if err != nil {
			return 0, 0, err
		}
		if m["status"] == "scanned" {
			break
		}
		if time.Since(t0) > 2*time.Minute {
			return 0, 0, fmt.Errorf("not scanned after 2 minutes: %v", m)
		}
	}
	record := fmt.Sprintf(`{"id":"DEBIAN-CVE-BENCH-%s","modified":%q,"summary":"bench","affected":[{"package":{"ecosystem":"Debian:12","name":%q},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"2.0-1"}]}]}]}`,
		pkg, time.Now().UTC().Format(time.RFC3339), pkg)
	req, _ := http.NewRequest(http.MethodPost, base+"/api/v1/superuser/vulndb", strings.NewReader(record))
	req.Header.Set("Content-Type", "application/json")
	sent := time.Now()
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, 0, err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	took = time.Since(sent)
	if resp.StatusCode != http.StatusOK {
		return 0, 0, fmt.Errorf("import: %s: %s", resp.Status, body)
	}
	select {
	case t := <-arrived:
		return t.Sub(sent), took, nil
	case <-time.After(2 * time.Minute):
		return 0, 0, fmt.Errorf("no vulnerability_found within 2 minutes of the import (%s)", body)
	}
}
