package main

// -storage s3: Berth and CNCF Distribution both storing through their S3
// drivers into one versitygw on loopback (a bucket each), same run, same
// data. See bench/README.md, "Through S3".

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/testenv/s3server"
)

const s3PartSize = 10 << 20 // both registries: Berth's partSize, Distribution's chunksize

// s3Bench is the set of processes of an S3 run.
type s3Bench struct {
	gw *s3server.Server
	// servers: berth and distribution (pulls through the registry),
	// berth-redirect and distribution-redirect (pulls sent to S3).
	servers map[string]*server
}

func runS3Bench(ctx context.Context, c config, work string) (string, error) {
	berthBin := c.berthBin
	var err error
	if berthBin == "" {
		if berthBin, err = buildBerth(work); err != nil {
			return "", err
		}
	}
	distBin, err := ensureDistribution(c.distributionBin)
	if err != nil {
		return "", err
	}
	ictx, cancel := context.WithTimeout(ctx, 30*time.Minute)
	defer cancel()
	gwBin, err := s3server.InstallBinary(ictx, logf)
	if err != nil {
		return "", fmt.Errorf("versitygw: %w", err)
	}
	b := &s3Bench{gw: s3server.New(filepath.Join(work, "s3")), servers: map[string]*server{}}
	if err := os.MkdirAll(b.gw.Root, 0o755); err != nil {
		return "", err
	}
	if err := b.gw.Launch(gwBin, ""); err != nil {
		return "", err
	}
	atCleanup(b.gw.Stop)
	logf("versitygw %s (pid %d) at %s over %s", s3server.Version, b.gw.Pid(), b.gw.Endpoint, b.gw.Root)
	for _, bucket := range []string{"berth", "berth-redirect", "distribution"} {
		if err := b.gw.NewBucket(bucket); err != nil {
			return "", err
		}
	}
	start := func(name string, f func() (*server, error)) error {
		s, err := f()
		if s != nil {
			atCleanup(s.stop)
		}
		if err != nil {
			return err
		}
		b.servers[name] = s
		return nil
	}
	for _, n := range []string{"berth", "berth-redirect"} {
		if err := start(n, func() (*server, error) { return b.startBerth(berthBin, work, n, n == "berth-redirect", c.berthArgs) }); err != nil {
			return "", err
		}
	}
	// Two Distribution processes on one bucket (Distribution keeps no
	// state outside storage): redirect.disable on the first.
	for _, n := range []string{"distribution", "distribution-redirect"} {
		if err := start(n, func() (*server, error) { return b.startDistribution(distBin, work, n, n == "distribution-redirect") }); err != nil {
			return "", err
		}
	}

	logf("writing %d MiB and %d MiB random layers", c.layerMiB, smallChunkMiB(c))
	layer, err := makeBigLayer(filepath.Join(work, "layer.bin"), c.layerMiB)
	if err != nil {
		return "", err
	}
	small, err := makeBigLayer(filepath.Join(work, "layer-small-chunks.bin"), smallChunkMiB(c))
	if err != nil {
		return "", err
	}
	res := newResults()
	b.run(c, layer, small, res)
	return b.report(c, berthBin, distBin, res), nil
}

// smallChunkMiB is the blob size of the 1–4 MiB chunk row: Distribution
// copies everything so far at each such chunk, so it is kept small.
func smallChunkMiB(c config) int { return min(c.layerMiB, 64) }

// s3Env is a registry's environment: no BERTH_*, REGISTRY_* or AWS_*
// variables of the caller (Distribution's S3 driver panics on AWS_CA_BUNDLE).
func (b *s3Bench) s3Env() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BERTH_") && !strings.HasPrefix(kv, "AWS_") && !strings.HasPrefix(kv, "REGISTRY_") {
			env = append(env, kv)
		}
	}
	return env
}

func (b *s3Bench) startBerth(bin, work, name string, redirect bool, extra string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(work, name)
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	env := append(b.s3Env(), "BERTH_STORAGE_DRIVER=s3",
		"BERTH_STORAGE_S3_ENDPOINT="+b.gw.Endpoint, "BERTH_STORAGE_S3_REGION="+b.gw.Region, "BERTH_STORAGE_S3_BUCKET="+name,
		"BERTH_STORAGE_S3_PATH_STYLE=true", "BERTH_STORAGE_S3_ACCESS_KEY="+b.gw.AccessKey, "BERTH_STORAGE_S3_SECRET_KEY="+b.gw.SecretKey,
		fmt.Sprintf("BERTH_STORAGE_S3_PART_SIZE=%d", s3PartSize), fmt.Sprintf("BERTH_STORAGE_S3_REDIRECT_ENABLED=%t", redirect))
	args := append([]string{"serve", "--addr", addr, "--data-dir", data, "--auth", "none"}, strings.Fields(extra)...)
	s := &server{name: name, addr: addr, dataDir: data, logPath: filepath.Join(dir, "server.log")}
	return s, s.start(bin, args, env)
}

// Distribution 2.8's s3 driver (aws-sdk-go v1) addresses buckets by path
// whenever regionendpoint is set (forcepathstyle is a 3.x setting).
const distributionS3Config = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  s3:
    region: %s
    bucket: distribution
    regionendpoint: %s
    accesskey: %s
    secretkey: %s
    secure: false
    v4auth: true
    chunksize: %d
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
  redirect:
    disable: %t
http:
  addr: %s
`

func (b *s3Bench) startDistribution(bin, work, name string, redirect bool) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.yml")
	body := fmt.Appendf(nil, distributionS3Config, b.gw.Region, b.gw.Endpoint, b.gw.AccessKey, b.gw.SecretKey, s3PartSize, !redirect, addr)
	if err := os.WriteFile(cfg, body, 0o644); err != nil {
		return nil, err
	}
	// No AWS_CA_BUNDLE: Distribution's S3 driver panics at start with it.
	s := &server{name: name, addr: addr, dataDir: dir, logPath: filepath.Join(dir, "server.log")}
	return s, s.start(bin, []string{"serve", cfg}, b.s3Env())
}

// pushChunkedBy uploads the file at path in PATCHes of the sizes next
// returns (Content-Range set, as docker and containerd do for chunked
// pushes), then PUT ?digest=.
func (r *registry) pushChunkedBy(repo string, l *bigLayer, next func() int64) error {
	data, err := os.Open(l.path)
	if err != nil {
		return err
	}
	defer data.Close()
	req, _ := http.NewRequest(http.MethodPost, r.url("/v2/"+repo+"/blobs/uploads/"), nil)
	resp, err := r.do(req, false, http.StatusAccepted)
	if err != nil {
		return err
	}
	loc, err := location(resp)
	if err != nil {
		return err
	}
	for off := int64(0); off < l.size; {
		n := min(next(), l.size-off)
		req, _ := http.NewRequest(http.MethodPatch, loc.String(), io.NewSectionReader(data, off, n))
		req.ContentLength = n
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", off, off+n-1))
		resp, err := r.do(req, false, http.StatusAccepted, http.StatusNoContent)
		if err != nil {
			return fmt.Errorf("chunk at %d (%d bytes): %w", off, n, err)
		}
		if loc, err = location(resp); err != nil {
			return err
		}
		off += n
	}
	q := loc.Query()
	q.Set("digest", l.digest)
	loc.RawQuery = q.Encode()
	req, _ = http.NewRequest(http.MethodPut, loc.String(), http.NoBody)
	_, err = r.do(req, false, http.StatusCreated)
	return err
}

// cycleChunks cycles deterministically through sizes from lo to hi MiB.
func cycleChunks(lo, hi int64) func() int64 {
	i := int64(0)
	return func() int64 {
		i++
		return (lo + (i*7)%(hi-lo+1)) << 20
	}
}

func (b *s3Bench) run(c config, layer, small *bigLayer, res *results) {
	client := func(n string, conns, buf int, timeout time.Duration) *registry {
		r := &registry{base: b.servers[n].baseURL(), client: newClient(conns, buf)}
		r.client.Timeout = timeout
		return r
	}
	gwCPU := func() float64 { return threadsOnCPU(b.gw.Pid()) }
	names := []string{"berth", "distribution"}
	step := func(metric, n string, srv []string, f func() (float64, error), gb float64) {
		before := make([]procStats, len(srv))
		for i, s := range srv {
			before[i], _ = b.servers[s].stats()
		}
		g0 := gwCPU()
		v, err := f()
		if err != nil {
			logf("  %-22s %-14s error: %v", n, metric, err)
			res.fail(metric, n, err)
			return
		}
		logf("  %-22s %-14s %.1f", n, metric, v)
		res.add(metric, n, v)
		cpu := 0.0
		for i, s := range srv {
			after, err := b.servers[s].stats()
			if err != nil {
				return
			}
			cpu += cpuDelta(before[i], after)
		}
		res.add(metric+"_cpu", n, cpu/gb)
		res.add(metric+"_gw", n, (gwCPU()-g0)/gb)
	}
	for round := range c.rounds {
		order := slices.Clone(names)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		logf("round %d/%d (order: %s)", round+1, c.rounds, strings.Join(order, ", "))
		gb, sgb := float64(layer.size)/1e9, float64(small.size)/1e9
		imgs, err := makeSmallImages(uint64(round+1), c.smallImages, c.smallKiB<<10)
		if err != nil {
			fatalf("%v", err)
		}
		for _, n := range order {
			r := client(n, 2, 256, 15*time.Minute)
			repo := fmt.Sprintf("bench/big-r%d", round)
			step("push", n, []string{n}, func() (float64, error) { return runPush(r, repo, layer, c.pushMode) }, gb)
			step("chunked", n, []string{n}, func() (float64, error) {
				return timed(layer.size, func() error {
					return r.pushChunkedBy(fmt.Sprintf("bench/chunked-r%d", round), layer, cycleChunks(5, 50))
				})
			}, gb)
			step("smallchunks", n, []string{n}, func() (float64, error) {
				return timed(small.size, func() error {
					return r.pushChunkedBy(fmt.Sprintf("bench/smallchunks-r%d", round), small, cycleChunks(1, 4))
				})
			}, sgb)
		}
		// The redirecting Berth has its own database and bucket: give it
		// the layer too (not measured).
		rr := client("berth-redirect", 2, 256, 15*time.Minute)
		if _, err := rr.pushBlobFile(fmt.Sprintf("bench/big-r%d", round), layer.digest, layer.path, c.pushMode); err != nil {
			res.fail("pull_redirect", "berth", err)
		}
		for _, n := range order {
			repo := fmt.Sprintf("bench/big-r%d", round)
			step("pull", n, []string{n}, func() (float64, error) {
				return runPullURL(client(n, 2, 256, 15*time.Minute), b.servers[n].baseURL()+"/v2/"+repo+"/blobs/"+layer.digest, layer)
			}, gb)
			// The registry answers 307 and the client reads from versitygw.
			step("pull_redirect", n, []string{n + "-redirect"}, func() (float64, error) {
				return runPullURL(client(n+"-redirect", 2, 256, 15*time.Minute), b.servers[n+"-redirect"].baseURL()+"/v2/"+repo+"/blobs/"+layer.digest, layer)
			}, gb)
		}
		for _, n := range order {
			r := client(n, c.concurrency, 32, 2*time.Minute)
			step("small", n, []string{n}, func() (float64, error) {
				return runSmallPushes(r, fmt.Sprintf("bench/small-r%d", round), imgs, c.concurrency)
			}, float64(len(imgs))/1e3)
		}
	}
}

// timed runs f and returns MB/s for size bytes.
func timed(size int64, f func() error) (float64, error) {
	settle()
	start := time.Now()
	if err := f(); err != nil {
		return 0, err
	}
	return float64(size) / 1e6 / time.Since(start).Seconds(), nil
}

func (b *s3Bench) report(c config, berthBin, distBin string, r *results) string {
	var sb strings.Builder
	sb.WriteString("## Berth vs CNCF Distribution, both through S3 (versitygw)\n\n")
	for _, f := range machineFacts(c, berthBin, distBin) {
		f = strings.NewReplacer("default storage: filesystem blobs", "S3 storage", "filesystem storage", "S3 storage").Replace(f)
		sb.WriteString("- " + f + "\n")
	}
	fmt.Fprintf(&sb, "- S3 server: versitygw %s (posix backend) on loopback, one bucket per registry; part size / chunksize %d MiB on both\n", s3server.Version, s3PartSize>>20)
	sb.WriteString("\n| Metric | Berth | Distribution | Berth advantage (×) |\n|---|---:|---:|---:|\n")
	sm := smallChunkMiB(c)
	rows := []metric{
		{"push", fmt.Sprintf("Blob push, 1 stream (one PATCH), %d MiB (MB/s)", c.layerMiB), false, 1},
		{"chunked", fmt.Sprintf("Blob push, %d MiB in 5–50 MiB PATCHes (MB/s)", c.layerMiB), false, 1},
		{"smallchunks", fmt.Sprintf("Blob push, %d MiB in 1–4 MiB PATCHes (MB/s)", sm), false, 1},
		{"pull", fmt.Sprintf("Blob pull through the registry, %d MiB, sha256 checked (MB/s)", c.layerMiB), false, 1},
		{"pull_redirect", "Blob pull with redirect: the client reads from versitygw (MB/s)", false, 1},
		{"small", fmt.Sprintf("Small image push, %d images at concurrency %d (images/s)", c.smallImages, c.concurrency), false, 1},
		{"push_cpu", "Registry CPU per GB, 1-stream push (s, lower is better)", true, 2},
		{"chunked_cpu", "Registry CPU per GB, 5–50 MiB chunks (s, lower is better)", true, 2},
		{"smallchunks_cpu", "Registry CPU per GB, 1–4 MiB chunks (s, lower is better)", true, 2},
		{"pull_cpu", "Registry CPU per GB pulled through it (s, lower is better)", true, 2},
		{"small_cpu", "Registry CPU per 1000 small images (s, lower is better)", true, 2},
		{"chunked_gw", "versitygw CPU per GB, 5–50 MiB chunks (s, lower is better)", true, 2},
		{"smallchunks_gw", "versitygw CPU per GB, 1–4 MiB chunks (s, lower is better)", true, 2},
	}
	for _, m := range rows {
		cb, vb, okB := r.cell(m, "berth", true)
		cd, vd, okD := r.cell(m, "distribution", true)
		ratio := "—"
		if okB && okD && vb > 0 && vd > 0 {
			x := vb / vd
			if m.lowerBetter {
				x = vd / vb
			}
			ratio = fmt.Sprintf("%.2f×", x)
		}
		fmt.Fprintf(&sb, "| %s | %s | %s | %s |\n", m.label, cb, cd, ratio)
	}
	sb.WriteString("\nCells are the median over rounds, with (min–max) when -rounds > 1; MB = 10^6 bytes. ")
	sb.WriteString("Pulls with redirect go to a second process of each registry with redirects on (Berth `redirect.enabled: true`, its own bucket; ")
	sb.WriteString("Distribution's default, on the same bucket), and the bytes flow from versitygw to the client. ")
	sb.WriteString("versitygw, the registries and the load generator share the machine's cores.\n")
	var errLines []string
	for _, m := range rows {
		for _, s := range []string{"berth", "distribution"} {
			if e := r.errs[m.key][s]; e != "" {
				errLines = append(errLines, fmt.Sprintf("- %s, %s: %s", s, m.key, strings.ReplaceAll(e, "\n", "\n  ")))
			}
		}
	}
	if len(errLines) > 0 {
		sb.WriteString("\nErrors:\n\n" + strings.Join(errLines, "\n") + "\n")
	}
	return sb.String()
}
