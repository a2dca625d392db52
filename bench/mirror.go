package main

// The mirroring comparison (-mirror): Berth's repository mirror against
// `skopeo sync` into CNCF Distribution, both pulling the same tags from the
// same upstream Distribution through a proxy that counts the bytes the
// upstream serves.

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"
)

// countingProxy forwards to the upstream and counts response bytes and
// requests.
type countingProxy struct {
	addr            string
	bytes, requests atomic.Int64
	srv             *http.Server
}

type countingWriter struct {
	http.ResponseWriter
	n *atomic.Int64
}

func (w countingWriter) Write(b []byte) (int, error) {
	n, err := w.ResponseWriter.Write(b)
	w.n.Add(int64(n))
	return n, err
}

func startCountingProxy(upstream string) (*countingProxy, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	target, _ := url.Parse("http://" + upstream)
	rp := httputil.NewSingleHostReverseProxy(target)
	p := &countingProxy{addr: addr}
	p.srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.requests.Add(1)
		var n atomic.Int64
		rp.ServeHTTP(countingWriter{w, &n}, r)
		p.bytes.Add(n.Load())
		if os.Getenv("BENCH_PROXY_LOG") != "" {
			fmt.Fprintf(os.Stderr, "proxy %s %s %d %s\n", r.Method, r.URL.Path, n.Load(), r.Header.Get("Range"))
		}
	})}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	go p.srv.Serve(ln)
	return p, nil
}

func (p *countingProxy) reset() { p.bytes.Store(0); p.requests.Store(0) }

// populateUpstream pushes n tags of images that share most of their
// layers: three shared 4 MiB layers and one small layer of their own.
func populateUpstream(up *registry, repo string, tags int) (int64, error) {
	var shared [][]byte
	for i := 0; i < 3; i++ {
		b := make([]byte, 4<<20)
		rand.Read(b)
		shared = append(shared, b)
	}
	var total int64
	for _, b := range shared {
		if err := up.pushBlob(repo, sha(b), bytes.NewReader(b), int64(len(b)), "patch"); err != nil {
			return 0, err
		}
		total += int64(len(b))
	}
	for i := 0; i < tags; i++ {
		own := make([]byte, 64<<10)
		rand.Read(own)
		cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","rootfs":{"type":"layers"},"config":{"Labels":{"n":"%d"}}}`, i))
		for _, b := range [][]byte{own, cfg} {
			if err := up.pushBlob(repo, sha(b), bytes.NewReader(b), int64(len(b)), "patch"); err != nil {
				return 0, err
			}
			total += int64(len(b))
		}
		var layers []string
		for _, b := range append(append([][]byte{}, shared...), own) {
			layers = append(layers, fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":%d}`, mtOCILayer, sha(b), len(b)))
		}
		m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":%d},"layers":[%s]}`,
			mtOCIManifest, mtOCIConfig, sha(cfg), len(cfg), strings.Join(layers, ","))
		if err := up.pushManifest(repo, fmt.Sprintf("v%d", i), mtOCIManifest, []byte(m)); err != nil {
			return 0, err
		}
	}
	return total, nil
}

func apiCall(base, method, path string, body any) (int, map[string]any, error) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var m map[string]any
	json.Unmarshal(raw, &m)
	return resp.StatusCode, m, nil
}

// berthMirrorSync triggers a sync and waits for SUCCESS.
func berthMirrorSync(base, repo string) (time.Duration, error) {
	t0 := time.Now()
	if s, _, err := apiCall(base, "POST", "/api/v1/repository/"+repo+"/mirror/sync-now", nil); err != nil || s != 204 {
		return 0, fmt.Errorf("sync-now: %d %v", s, err)
	}
	deadline := time.Now().Add(10 * time.Minute)
	for time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
		_, m, err := apiCall(base, "GET", "/api/v1/repository/"+repo+"/mirror", nil)
		if err != nil {
			return 0, err
		}
		switch m["sync_status"] {
		case "SUCCESS":
			return time.Since(t0), nil
		case "FAIL":
			return 0, fmt.Errorf("mirror sync failed: %v", m["last_error"])
		}
	}
	return 0, fmt.Errorf("mirror sync did not finish")
}

func ensureSkopeo() (string, error) {
	if p, err := exec.LookPath("skopeo"); err == nil {
		return p, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("skopeo is not installed (apt-get install -y skopeo)")
	}
	logf("installing skopeo with apt-get")
	exec.Command("apt-get", "update", "-q").Run()
	if out, err := exec.Command("apt-get", "install", "-y", "-q", "skopeo").CombinedOutput(); err != nil {
		return "", fmt.Errorf("apt-get install skopeo: %v\n%s", err, tail(string(out), 400))
	}
	return exec.LookPath("skopeo")
}

// runMirrorBench compares an initial mirror of tags and a re-sync with no
// upstream change, and returns the markdown table.
func runMirrorBench(c config, work, berthBin, distBin string) string {
	skopeo, err := ensureSkopeo()
	if err != nil {
		fatalf("%v", err)
	}
	up, err := startDistribution(distBin, filepath.Join(work, "upstream"))
	if up != nil {
		atCleanup(up.stop)
	}
	if err != nil {
		fatalf("upstream: %v", err)
	}
	proxy, err := startCountingProxy(up.addr)
	if err != nil {
		fatalf("%v", err)
	}
	logf("pushing %d tags sharing three 4 MiB layers to the upstream", c.mirrorTags)
	upClient := &registry{base: up.baseURL(), client: newClient(4, 256)}
	content, err := populateUpstream(upClient, "library/app", c.mirrorTags)
	if err != nil {
		fatalf("populate upstream: %v", err)
	}

	berth, err := startBerth(berthBin, filepath.Join(work, "mirror-berth"), append(strings.Fields(c.berthArgs), "--config", writeAllowLoopback(work)))
	if berth != nil {
		atCleanup(berth.stop)
	}
	if err != nil {
		fatalf("berth: %v", err)
	}
	base := berth.baseURL()
	// The repository exists once anything is pushed to it (auth none: no
	// namespace to create it in through the API).
	seed := []byte("seed")
	if err := (&registry{base: base, client: newClient(1, 64)}).pushBlob("mirror/app", sha(seed), bytes.NewReader(seed), int64(len(seed)), "put"); err != nil {
		fatalf("create repository: %v", err)
	}
	if s, m, err := apiCall(base, "POST", "/api/v1/repository/mirror/app/mirror", map[string]any{
		// First sync due tomorrow: only the timed sync-now runs it.
		"sync_start_date":    time.Now().Add(24 * time.Hour).UTC().Format("2006-01-02T15:04:05Z"),
		"external_reference": proxy.addr + "/library/app", "sync_interval": 86400, "is_enabled": true,
		"root_rule":                map[string]any{"rule_kind": "tag_glob_csv", "rule_value": []string{"*"}},
		"external_registry_config": map[string]any{"verify_tls": false}}); err != nil || s != 201 {
		fatalf("create mirror: %d %v %v", s, m, err)
	}
	target, err := startDistribution(distBin, filepath.Join(work, "skopeo-target"))
	if target != nil {
		atCleanup(target.stop)
	}
	if err != nil {
		fatalf("target: %v", err)
	}
	skopeoSync := func() (time.Duration, error) {
		t0 := time.Now()
		cmd := exec.Command(skopeo, "sync", "--all", "--src", "docker", "--dest", "docker", "--src-tls-verify=false", "--dest-tls-verify=false",
			proxy.addr+"/library/app", target.addr+"/mirror")
		cmd.Env = append(os.Environ(), "HOME="+filepath.Join(work, "skopeo-home"))
		if out, err := cmd.CombinedOutput(); err != nil {
			return 0, fmt.Errorf("skopeo sync: %v\n%s", err, tail(string(out), 600))
		}
		return time.Since(t0), nil
	}
	type row struct {
		label       string
		secs, bytes [2]float64
		reqs        [2]float64
	}
	var rows []row
	for _, phase := range []string{"initial sync", "re-sync, nothing changed", "re-sync, one floating tag moved"} {
		r := row{label: phase}
		var moved string
		if strings.Contains(phase, "moved") {
			if moved, err = moveUpstreamTag(upClient, "library/app", "v0"); err != nil {
				fatalf("move upstream tag: %v", err)
			}
		}
		proxy.reset()
		d, err := berthMirrorSync(base, "mirror/app")
		if err != nil {
			fatalf("berth %s: %v", phase, err)
		}
		r.secs[0], r.bytes[0], r.reqs[0] = d.Seconds(), float64(proxy.bytes.Load()), float64(proxy.requests.Load())
		if err := verifyMirror(base, "mirror/app", c.mirrorTags); err != nil {
			fatalf("berth %s: %v", phase, err)
		}
		if moved != "" {
			if got, err := manifestDigest(base, "mirror/app", "v0"); err != nil || got != moved {
				fatalf("berth %s: v0 is %s (%v), upstream moved it to %s", phase, got, err, moved)
			}
		}
		proxy.reset()
		if d, err = skopeoSync(); err != nil {
			fatalf("skopeo %s: %v", phase, err)
		}
		r.secs[1], r.bytes[1], r.reqs[1] = d.Seconds(), float64(proxy.bytes.Load()), float64(proxy.requests.Load())
		logf("%s: berth %.2fs %.1f MB %d requests; skopeo %.2fs %.1f MB %d requests", phase, r.secs[0], r.bytes[0]/1e6, int(r.reqs[0]),
			r.secs[1], r.bytes[1]/1e6, int(r.reqs[1]))
		rows = append(rows, r)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\n## Mirroring: Berth's mirror vs `skopeo sync` into Distribution\n\n")
	fmt.Fprintf(&b, "%d tags of one repository sharing three 4 MiB layers (%.1f MB of distinct content upstream), pulled through a byte-counting proxy. Lower is better; the ratio is skopeo/Berth.\n\n", c.mirrorTags, float64(content)/1e6)
	fmt.Fprintf(&b, "| | Berth | skopeo sync | Berth advantage (×) |\n|---|---:|---:|---:|\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "| %s: time (s) | %.2f | %.2f | %.2f× |\n", r.label, r.secs[0], r.secs[1], r.secs[1]/r.secs[0])
		fmt.Fprintf(&b, "| %s: bytes from upstream (MB) | %.2f | %.2f | %.2f× |\n", r.label, r.bytes[0]/1e6, r.bytes[1]/1e6, r.bytes[1]/max(r.bytes[0], 1))
		fmt.Fprintf(&b, "| %s: upstream requests | %.0f | %.0f | %.2f× |\n", r.label, r.reqs[0], r.reqs[1], r.reqs[1]/max(r.reqs[0], 1))
	}
	return b.String()
}

// writeAllowLoopback writes a config that lets Berth reach the upstream on
// loopback (outbound requests to internal addresses are refused by default).
func writeAllowLoopback(work string) string {
	p := filepath.Join(work, "berth-mirror.yaml")
	os.WriteFile(p, []byte("notifications:\n  allowedHosts: [loopback]\n"), 0o644)
	return p
}

// verifyMirror checks that every tag is there and every blob of every
// manifest is served with the right digest.
func verifyMirror(base, repo string, tags int) error {
	cl := &registry{base: base, client: newClient(2, 256)}
	buf := make([]byte, 1<<20)
	for i := 0; i < tags; i++ {
		req, _ := http.NewRequest("GET", base+"/v2/"+repo+"/manifests/"+fmt.Sprintf("v%d", i), nil)
		req.Header.Set("Accept", manifestAccept)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return err
		}
		var m struct {
			Config struct{ Digest string }
			Layers []struct{ Digest string }
		}
		json.NewDecoder(resp.Body).Decode(&m)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("tag v%d: %d", i, resp.StatusCode)
		}
		for _, d := range append([]string{m.Config.Digest}, func() []string {
			var out []string
			for _, l := range m.Layers {
				out = append(out, l.Digest)
			}
			return out
		}()...) {
			if _, err := cl.pullBlob(repo, d, buf); err != nil {
				return fmt.Errorf("tag v%d blob %s: %w", i, d, err)
			}
		}
	}
	return nil
}

// moveUpstreamTag points tag at a new manifest: the same layers, a new
// config. It returns the new manifest's digest.
func moveUpstreamTag(up *registry, repo, tag string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, up.url("/v2/"+repo+"/manifests/"+tag), nil)
	req.Header.Set("Accept", manifestAccept)
	resp, err := up.do(req, true, http.StatusOK)
	if err != nil {
		return "", err
	}
	var m map[string]any
	err = json.NewDecoder(resp.Body).Decode(&m)
	resp.Body.Close()
	if err != nil {
		return "", err
	}
	cfg := []byte(fmt.Sprintf(`{"architecture":"amd64","os":"linux","config":{"Labels":{"moved":"%d"}},"rootfs":{"type":"layers","diff_ids":[]}}`, time.Now().UnixNano()))
	if err := up.pushBlob(repo, sha(cfg), bytes.NewReader(cfg), int64(len(cfg)), "put"); err != nil {
		return "", err
	}
	m["config"] = map[string]any{"mediaType": mtOCIConfig, "digest": sha(cfg), "size": len(cfg)}
	body, _ := json.Marshal(m)
	mt, _ := m["mediaType"].(string)
	if mt == "" {
		mt = mtOCIManifest
	}
	if err := up.pushManifest(repo, tag, mt, body); err != nil {
		return "", err
	}
	return sha(body), nil
}

// manifestDigest is the digest a registry answers for repo:tag.
func manifestDigest(base, repo, tag string) (string, error) {
	req, _ := http.NewRequest(http.MethodHead, base+"/v2/"+repo+"/manifests/"+tag, nil)
	req.Header.Set("Accept", manifestAccept)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("HEAD %s:%s: %s", repo, tag, resp.Status)
	}
	return resp.Header.Get("Docker-Content-Digest"), nil
}
