package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// bigLayer is the incompressible blob on disk that the stream workloads use.
type bigLayer struct {
	path   string
	digest string
	size   int64
}

// makeBigLayer writes mib MiB of ChaCha8 output (incompressible) to a file,
// hashing it on the way; the data is never held in memory.
func makeBigLayer(path string, mib int) (*bigLayer, error) {
	return writeLayer(path, mib, [32]byte{'b', 'e', 'r', 't', 'h'})
}

// writeLayer writes mib MiB of ChaCha8 output under key to path, hashing
// it on the way.
func writeLayer(path string, mib int, key [32]byte) (*bigLayer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	rng := rand.NewChaCha8(key)
	h := sha256.New()
	w := io.MultiWriter(f, h)
	buf := make([]byte, 1<<20)
	for range mib {
		_, _ = rng.Read(buf)
		if _, err := w.Write(buf); err != nil {
			return nil, err
		}
	}
	if err := f.Sync(); err != nil {
		return nil, err
	}
	return &bigLayer{path: path, digest: "sha256:" + hex.EncodeToString(h.Sum(nil)), size: int64(mib) << 20}, nil
}

// smallImage is one tiny but valid OCI image: gzip'd tar layer, config, manifest.
type smallImage struct {
	config, layer, manifest   []byte
	configDigest, layerDigest string
}

func sha(b []byte) string {
	s := sha256.Sum256(b)
	return "sha256:" + hex.EncodeToString(s[:])
}

// makeSmallImage builds image i of a set; content is unique per (seed, i).
func makeSmallImage(seed uint64, i int, layerBytes int) (*smallImage, error) {
	var key [32]byte
	binary.LittleEndian.PutUint64(key[:], seed)
	binary.LittleEndian.PutUint64(key[8:], uint64(i))
	payload := make([]byte, layerBytes)
	_, _ = rand.NewChaCha8(key).Read(payload)

	var tarBuf bytes.Buffer
	tw := tar.NewWriter(&tarBuf)
	name := fmt.Sprintf("bench/file-%d.bin", i)
	if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o644, Size: int64(len(payload)), ModTime: time.Unix(0, 0), Typeflag: tar.TypeReg}); err != nil {
		return nil, err
	}
	_, _ = tw.Write(payload)
	if err := tw.Close(); err != nil {
		return nil, err
	}
	var gz bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&gz, gzip.BestSpeed)
	_, _ = zw.Write(tarBuf.Bytes())
	if err := zw.Close(); err != nil {
		return nil, err
	}
	img := &smallImage{layer: gz.Bytes()}
	img.layerDigest = sha(img.layer)

	config := map[string]any{
		"architecture": "amd64",
		"os":           "linux",
		"created":      "2024-01-01T00:00:00Z",
		"config":       map[string]any{"Cmd": []string{"/bin/true"}, "Labels": map[string]string{"bench.image": strconv.Itoa(i)}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{sha(tarBuf.Bytes())}},
	}
	var err error
	if img.config, err = json.Marshal(config); err != nil {
		return nil, err
	}
	img.configDigest = sha(img.config)
	manifest := map[string]any{
		"schemaVersion": 2,
		"mediaType":     mtOCIManifest,
		"config":        map[string]any{"mediaType": mtOCIConfig, "digest": img.configDigest, "size": len(img.config)},
		"layers":        []any{map[string]any{"mediaType": mtOCILayer, "digest": img.layerDigest, "size": len(img.layer)}},
	}
	if img.manifest, err = json.Marshal(manifest); err != nil {
		return nil, err
	}
	return img, nil
}

func makeSmallImages(seed uint64, n, layerBytes int) ([]*smallImage, error) {
	imgs := make([]*smallImage, n)
	for i := range imgs {
		img, err := makeSmallImage(seed, i, layerBytes)
		if err != nil {
			return nil, err
		}
		imgs[i] = img
	}
	return imgs, nil
}

// settle flushes dirty pages left by the previous workload, so that one
// registry's writeback does not land in the other's measurement.
func settle() {
	syscall.Sync()
	time.Sleep(300 * time.Millisecond)
}

// runPush streams the big layer into repo; returns MB/s (10^6 bytes).
func runPush(r *registry, repo string, layer *bigLayer, mode string) (float64, error) {
	settle()
	start := time.Now()
	n, err := r.pushBlobFile(repo, layer.digest, layer.path, mode)
	if err != nil {
		return 0, err
	}
	return float64(n) / 1e6 / time.Since(start).Seconds(), nil
}

// sha256Rate is what one core hashes with SHA-256 here, in MB/s: the
// same loop as BenchmarkSHA256 in internal/registry.
func sha256Rate() float64 {
	buf := make([]byte, 1<<20)
	r := testing.Benchmark(func(b *testing.B) {
		h := sha256.New()
		b.SetBytes(int64(len(buf)))
		for b.Loop() {
			h.Write(buf)
		}
	})
	if r.T <= 0 {
		return 0
	}
	return float64(r.Bytes) * float64(r.N) / 1e6 / r.T.Seconds()
}

// diskWriteRate is what one process writes to this disk durably, in MB/s:
// the layer copied from the page cache into a new file beside it in 1 MiB
// writes, then fsync'd (as dd conv=fsync does), as a registry that flushes
// a blob before acknowledging it must. It bounds such a registry's push.
func diskWriteRate(layer *bigLayer) (float64, error) {
	settle()
	src, err := os.Open(layer.path)
	if err != nil {
		return 0, err
	}
	defer src.Close()
	dst, err := os.CreateTemp(filepath.Dir(layer.path), "disk-write-")
	if err != nil {
		return 0, err
	}
	defer os.Remove(dst.Name())
	defer dst.Close()
	buf := make([]byte, 1<<20)
	start := time.Now()
	n, err := io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, buf) // plain writes: no copy_file_range
	if err == nil {
		err = dst.Sync()
	}
	if err != nil {
		return 0, fmt.Errorf("disk write: %w", err)
	}
	return float64(n) / 1e6 / time.Since(start).Seconds(), nil
}

// runSmallPushes pushes every image to repo, tagged t<i>, with conc workers;
// returns images/s.
func runSmallPushes(r *registry, repo string, imgs []*smallImage, conc int) (float64, error) {
	settle()
	var next atomic.Int64
	var firstErr error
	var failed atomic.Int64
	var mu sync.Mutex
	var wg sync.WaitGroup
	start := time.Now()
	for range conc {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(imgs) {
					return
				}
				if err := r.pushImage(repo, fmt.Sprintf("t%d", i), imgs[i]); err != nil {
					failed.Add(1)
					mu.Lock()
					if firstErr == nil {
						firstErr = err
					}
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return 0, fmt.Errorf("%d of %d image pushes failed; first: %w", failed.Load(), len(imgs), firstErr)
	}
	return float64(len(imgs)) / elapsed.Seconds(), nil
}

// loadResult is one manifest-GET load run.
type loadResult struct {
	rps, p50ms, p99ms float64
	requests, errors  int64 // measured
	total             int64 // answered, warm-up included (for CPU per request)
}

// runManifestLoad has workers GET repo:tag in a loop for d over keep-alive
// connections, draining bodies, and records every request's latency.
func runManifestLoad(base, repo, tag, token string, workers int, d time.Duration) (loadResult, error) {
	settle()
	r := &registry{base: base, client: newClient(workers, 16)}
	if token != "" {
		r.client = withToken(r.client, token)
	}
	defer r.client.CloseIdleConnections()
	url := r.url("/v2/" + repo + "/manifests/" + tag)
	newReq := func() *http.Request {
		req, _ := http.NewRequest(http.MethodGet, url, nil)
		req.Header.Set("Accept", manifestAccept)
		return req
	}
	if err := r.getManifest(newReq()); err != nil { // also warms one connection
		return loadResult{}, err
	}
	lat := make([][]time.Duration, workers)
	var errs, total atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	// A short warm-up (connections opened, caches filled) is not measured.
	warm := min(time.Second, d/4)
	start := time.Now().Add(warm)
	deadline := start.Add(d)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req := newReq()
			mine := make([]time.Duration, 0, 4096)
			for {
				t0 := time.Now()
				if !t0.Before(deadline) {
					break
				}
				err := r.getManifest(req)
				total.Add(1)
				if t0.Before(start) {
					if err != nil {
						req = newReq()
					}
					continue
				}
				if err != nil {
					errs.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
					req = newReq()
					continue
				}
				mine = append(mine, time.Since(t0))
			}
			lat[w] = mine
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	all := slices.Concat(lat...)
	res := loadResult{requests: int64(len(all)), errors: errs.Load(), total: total.Load()}
	if len(all) == 0 {
		return res, fmt.Errorf("no successful requests (%d errors, first: %v)", res.errors, firstErr.Load())
	}
	if res.errors*100 > res.requests {
		return res, fmt.Errorf("%d errors in %d requests, first: %v", res.errors, res.requests, firstErr.Load())
	}
	slices.Sort(all)
	res.rps = float64(res.requests) / elapsed.Seconds()
	res.p50ms = ms(percentile(all, 50))
	res.p99ms = ms(percentile(all, 99))
	return res, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// percentile of an ascending slice, nearest-rank.
func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted))*p/100+0.999999) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

var (
	wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP   = regexp.MustCompile(`(?m)^\s+(50|99)%\s+([0-9.]+)(us|ms|s)\s*$`)
)

// wrkResult is what wrk measured: its rate and the percentiles of its
// requests' latencies (wrk --latency; wrk keeps each connection busy, so
// like the Go client's these are closed-loop latencies, not corrected for
// coordinated omission as wrk2's are).
type wrkResult struct{ rps, p50ms, p99ms float64 }

// runWrk runs wrk against the manifest URL, when wrk is installed, with
// token (if any) as a Bearer token. wrk is a C load generator that takes
// far less CPU per request than the Go client of runManifestLoad, so on
// shared cores its latencies leave the server more of them.
func runWrk(base, repo, tag, token string, conns int, d time.Duration) (wrkResult, error) {
	bin, err := exec.LookPath("wrk")
	if err != nil {
		return wrkResult{}, errors.New("wrk not on PATH")
	}
	settle()
	threads := max(1, min(conns, nproc()))
	args := []string{"--latency", "-t", strconv.Itoa(threads), "-c", strconv.Itoa(conns),
		"-d", fmt.Sprintf("%ds", max(1, int(d.Round(time.Second)/time.Second))),
		"-H", "Accept: " + manifestAccept}
	if token != "" {
		args = append(args, "-H", "Authorization: Bearer "+token)
	}
	out, err := exec.Command(bin, append(args, base+"/v2/"+repo+"/manifests/"+tag)...).CombinedOutput()
	if err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %v: %s", err, tail(string(out), 500))
	}
	return parseWrk(out)
}

// parseWrk reads wrk --latency's report.
func parseWrk(out []byte) (wrkResult, error) {
	if bytes.Contains(out, []byte("Non-2xx or 3xx responses")) {
		return wrkResult{}, fmt.Errorf("wrk saw error responses: %s", tail(string(out), 500))
	}
	m := wrkRPS.FindSubmatch(out)
	if m == nil {
		return wrkResult{}, fmt.Errorf("wrk: no Requests/sec in output: %s", tail(string(out), 500))
	}
	var r wrkResult
	var err error
	if r.rps, err = strconv.ParseFloat(string(m[1]), 64); err != nil {
		return wrkResult{}, fmt.Errorf("wrk: %w", err)
	}
	for _, p := range wrkP.FindAllSubmatch(out, -1) {
		v, err := strconv.ParseFloat(string(p[2]), 64)
		if err != nil {
			return wrkResult{}, fmt.Errorf("wrk: %w", err)
		}
		switch string(p[3]) {
		case "us":
			v /= 1e3
		case "s":
			v *= 1e3
		}
		if string(p[1]) == "50" {
			r.p50ms = v
		} else {
			r.p99ms = v
		}
	}
	if r.p50ms == 0 || r.p99ms == 0 {
		return wrkResult{}, fmt.Errorf("wrk: no latency distribution in output: %s", tail(string(out), 500))
	}
	return r, nil
}

// sqliteCounters are Berth's counters of SQLite's writes (docs/metrics.md).
var sqliteCounters = []string{"registry_database_writer_waits_total", "registry_database_writer_hold_seconds_total",
	"registry_database_log_flushes_total", "registry_database_log_flush_commits_total"}

// scrapeCounters reads the named series from Berth's /metrics (their
// values summed over labels); a series the server does not export is
// missing from the map.
func scrapeCounters(base string, names ...string) (map[string]float64, error) {
	body, err := getMetrics(base)
	if err != nil {
		return nil, err
	}
	out := map[string]float64{}
	for _, line := range strings.Split(body, "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		metric, _, _ := strings.Cut(f[0], "{")
		if !slices.Contains(names, metric) {
			continue
		}
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			continue
		}
		out[metric] += v
	}
	return out, nil
}

// getMetrics reads Berth's /metrics (the bench's Berth runs with auth
// off, so it needs no credentials).
func getMetrics(base string) (string, error) {
	resp, err := http.Get(base + "/metrics")
	if err != nil {
		return "", err
	}
	body, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("GET /metrics: %s %v", resp.Status, err)
	}
	return string(body), nil
}

// waitScanQueue polls Berth's /metrics until no scan job is pending or
// running (registry_jobs_queued{queue="scan"}), twice in a row.
func waitScanQueue(base string, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	zero := 0
	for {
		body, err := getMetrics(base)
		if err != nil {
			return err
		}
		queued, seen := 0.0, false
		for _, line := range strings.Split(body, "\n") {
			if strings.HasPrefix(line, "registry_jobs_queued{") && strings.Contains(line, `queue="scan"`) {
				f := strings.Fields(line)
				v, _ := strconv.ParseFloat(f[len(f)-1], 64)
				queued += v
				seen = true
			}
		}
		if !seen && !strings.Contains(body, "registry_jobs_queued") {
			return errors.New("no registry_jobs_queued in /metrics")
		}
		if queued == 0 {
			if zero++; zero == 2 {
				return nil
			}
		} else {
			zero = 0
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%.0f scan jobs still queued after %s", queued, limit)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
