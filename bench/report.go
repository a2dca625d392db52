package main

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// results collects every round's value per metric and server.
type results struct {
	vals map[string]map[string][]float64
	errs map[string]map[string]string
}

func newResults() *results {
	return &results{vals: map[string]map[string][]float64{}, errs: map[string]map[string]string{}}
}

func (r *results) add(metric, server string, v float64) {
	if r.vals[metric] == nil {
		r.vals[metric] = map[string][]float64{}
	}
	r.vals[metric][server] = append(r.vals[metric][server], v)
}

func (r *results) fail(metric, server string, err error) {
	if r.errs[metric] == nil {
		r.errs[metric] = map[string]string{}
	}
	if r.errs[metric][server] == "" {
		r.errs[metric][server] = err.Error()
	}
	exitStatus = 1
}

// metric describes one row of the table.
type metric struct {
	key, label  string
	lowerBetter bool
	prec        int
}

func metrics(c config) []metric {
	return []metric{
		{"push", fmt.Sprintf("Blob push, 1 stream, %d MiB (MB/s)", c.layerMiB), false, 1},
		{"push_chunked", fmt.Sprintf("Blob push, chunked: PATCHes of 5 to 50 MiB, %d MiB (MB/s)", c.layerMiB), false, 1},
		{"push_streams", fmt.Sprintf("Blob push, %d streams at once, %d MiB each (MB/s, total)", c.pushStreams, max(1, c.layerMiB/8)), false, 1},
		{"pull_first", fmt.Sprintf("Blob pull, the first after its push, 1 stream, %d MiB, sha256 checked (MB/s; first round only)", c.layerMiB), false, 1},
		{"pull", fmt.Sprintf("Blob pull, 1 stream, %d MiB, sha256 checked (MB/s)", c.layerMiB), false, 1},
		{"pull_curl", fmt.Sprintf("Blob pull, 1 stream, %d MiB, curl -o /dev/null (MB/s)", c.layerMiB), false, 1},
		{"push_sha", "Blob push ÷ single-core SHA-256 rate (fraction)", false, 2},
		{"push_disk", "Blob push ÷ the disk's flushed write rate (fraction)", false, 2},
		{"small", fmt.Sprintf("Small image push, %d images at concurrency %d (images/s)", c.smallImages, c.concurrency), false, 1},
		{"small_drained", "… until Berth's background scans of them are done (images/s; Distribution does not scan)", false, 1},
		{"load_rps", fmt.Sprintf("Manifest GET by tag, %d workers, %s (req/s)", c.loadWorkers, c.loadDuration), false, 0},
		{"load_p50", "Manifest GET latency p50 (ms, lower is better)", true, 2},
		{"load_p99", "Manifest GET latency p99 (ms, lower is better)", true, 2},
		{"load_auth_rps", fmt.Sprintf("Manifest GET by tag with a Bearer token, %d workers, %s (req/s)", c.loadWorkers, c.loadDuration), false, 0},
		{"load_auth_p50", "Manifest GET with a Bearer token, latency p50 (ms, lower is better)", true, 2},
		{"load_auth_p99", "Manifest GET with a Bearer token, latency p99 (ms, lower is better)", true, 2},
		{"wrk_rps", fmt.Sprintf("Manifest GET by tag, wrk -c%d (req/s)", c.loadWorkers), false, 0},
		{"wrk_p50", "Manifest GET latency p50 under wrk (ms, lower is better)", true, 2},
		{"wrk_p99", "Manifest GET latency p99 under wrk (ms, lower is better)", true, 2},
		{"wrk_auth_rps", fmt.Sprintf("Manifest GET by tag with a Bearer token, wrk -c%d (req/s)", c.loadWorkers), false, 0},
		{"wrk_auth_p50", "Manifest GET with a Bearer token, latency p50 under wrk (ms, lower is better)", true, 2},
		{"wrk_auth_p99", "Manifest GET with a Bearer token, latency p99 under wrk (ms, lower is better)", true, 2},
		{"push_cpu", "Server CPU per GB pushed (s, lower is better)", true, 2},
		{"push_streams_cpu", "Server CPU per GB pushed by the concurrent streams (s, lower is better)", true, 2},
		{"pull_first_cpu", "Server CPU per GB of the first pull after the push (s, lower is better)", true, 2},
		{"pull_cpu", "Server CPU per GB pulled (s, lower is better)", true, 2},
		{"pull_curl_cpu", "Server CPU per GB pulled by curl (s, lower is better)", true, 2},
		{"small_cpu", "Server CPU per small image pushed, Berth's scan of it included (ms, lower is better)", true, 2},
		{"small_client_cpu", "The Go client's own CPU per small image it pushed, on the same cores (ms)", true, 2},
		{"small_tx", "Berth's SQLite write transactions per small image, its scan included (counted)", true, 1},
		{"small_writer_busy", "Berth's SQLite writer busy during the small-image push and its scans (fraction of the time; transactions from start to commit)", false, 2},
		{"small_flushes", "Berth's flushes of SQLite's log per small image (counted; group commit)", true, 2},
		{"small_flush_commits", "Berth's durable commits per flush of SQLite's log during the small-image push", false, 2},
		{"load_rps_cpu", "Server CPU per manifest GET (µs, lower is better)", true, 0},
		{"load_auth_rps_cpu", "Server CPU per manifest GET with a Bearer token (µs, lower is better)", true, 0},
		{"rss", "Peak resident memory, VmHWM (MiB, lower is better)", true, 1},
		{"cpu", "Server CPU time over the whole run (s, lower is better)", true, 1},
		{"disk", "Storage used at the end (MiB, lower is better)", true, 1},
	}
}

func median(v []float64) float64 {
	s := slices.Clone(v)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// cell formats a server's values: the median, and min–max when there were
// several rounds.
func (r *results) cell(m metric, server string, ran bool) (string, float64, bool) {
	if !ran {
		return "—", 0, false
	}
	errKey := strings.TrimSuffix(m.key, "_cpu")
	if m.key == "small_drained" {
		errKey = "small"
	}
	if strings.HasPrefix(m.key, "load_p") {
		errKey = "load_rps"
	}
	if strings.HasPrefix(m.key, "load_auth_p") {
		errKey = "load_auth_rps"
	}
	if r.errs[errKey][server] != "" {
		return "error", 0, false
	}
	v := r.vals[m.key][server]
	if len(v) == 0 {
		return "—", 0, false
	}
	med := median(v)
	s := fmt.Sprintf("%.*f", m.prec, med)
	if len(v) > 1 {
		s += fmt.Sprintf(" (%.*f–%.*f)", m.prec, slices.Min(v), m.prec, slices.Max(v))
	}
	return s, med, true
}

func renderReport(c config, facts []string, r *results) string {
	var b strings.Builder
	b.WriteString("## Berth vs CNCF Distribution, side by side\n\n")
	for _, f := range facts {
		b.WriteString("- " + f + "\n")
	}
	b.WriteString("\n| Metric | Berth | Distribution | Berth advantage (×) | ServeContent ceiling | Berth ÷ ceiling |\n|---|---:|---:|---:|---:|---:|\n")
	ranB, ranD := c.only != "distribution", c.only != "berth"
	ratioOf := func(m metric, a, b float64) string {
		x := a / b
		if m.lowerBetter {
			x = b / a
		}
		return fmt.Sprintf("%.2f×", x)
	}
	for _, m := range metrics(c) {
		if len(r.vals[m.key]) == 0 && len(r.errs[strings.TrimSuffix(m.key, "_cpu")]) == 0 && (strings.HasPrefix(m.key, "wrk_") || strings.HasPrefix(m.key, "pull_curl")) {
			continue // wrk or curl not installed
		}
		cb, vb, okB := r.cell(m, "berth", ranB)
		cd, vd, okD := r.cell(m, "distribution", ranD)
		ratio := "—"
		if okB && okD && vb > 0 && vd > 0 {
			ratio = ratioOf(m, vb, vd)
		}
		if m.key == "push_sha" {
			cd = "—"
		}
		cc, vc, okC := r.cell(m, "ceiling", len(r.vals[m.key]["ceiling"]) > 0)
		ceil := "—"
		if okB && okC && vb > 0 && vc > 0 {
			ceil = ratioOf(m, vb, vc)
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", m.label, cb, cd, ratio, cc, ceil)
	}
	if v := r.vals["sha256"]["client"]; len(v) > 0 {
		fmt.Fprintf(&b, "\nSingle-core SHA-256 rate measured in this run (testing.Benchmark over 1 MiB buffers, as BenchmarkSHA256): %.0f MB/s (%.0f–%.0f).\n",
			median(v), slices.Min(v), slices.Max(v))
	}
	if v := r.vals["disk_write"]["client"]; len(v) > 0 {
		fmt.Fprintf(&b, "The disk's flushed write rate measured in this run (the layer written to a new file in 1 MiB writes, then fsync'd): %.0f MB/s (%.0f–%.0f). Berth flushes a blob before acknowledging it (storage.filesystem.fsync, on by default); Distribution does not.\n",
			median(v), slices.Min(v), slices.Max(v))
	}
	b.WriteString("The ServeContent ceiling is a minimal Go server (`http.ServeContent` of the layer file, sendfile) in its own process: what a client reads over loopback from a server that does nothing else. ")
	b.WriteString("For the manifest rows the same process answers every manifest GET with the load test's manifest from memory (no lookup, no negotiation, no token check): what the load client gets from a server that does nothing else.\n")
	b.WriteString("\nCells are the median over rounds, with (min–max) when -rounds > 1. ")
	b.WriteString("\"Berth advantage\" is Berth/Distribution for throughput and Distribution/Berth for latency, memory, CPU and storage, ")
	b.WriteString("so above 1 always means Berth did better. MB = 10^6 bytes. ")
	b.WriteString("Memory, CPU time and storage are read once at the end of the run. ")
	b.WriteString("The load generator runs on the same cores as the servers.\n")

	var errLines []string
	for _, m := range metrics(c) {
		for _, s := range []string{"berth", "distribution"} {
			if e := r.errs[m.key][s]; e != "" {
				errLines = append(errLines, fmt.Sprintf("- %s, %s: %s", s, m.key, strings.ReplaceAll(e, "\n", "\n  ")))
			}
		}
	}
	if len(errLines) > 0 {
		b.WriteString("\nErrors:\n\n" + strings.Join(errLines, "\n") + "\n")
	}
	return b.String()
}

func whichWrk(enabled bool) (string, error) {
	if !enabled {
		return "", errors.New("disabled")
	}
	return exec.LookPath("wrk")
}

func machineFacts(c config, berthBin, distBin string) []string {
	facts := []string{
		"Date: " + time.Now().UTC().Format("2006-01-02 15:04 UTC"),
		fmt.Sprintf("Machine: %d CPUs (nproc), %s, %s RAM, Linux %s", nproc(), cpuModel(), memTotal(), readTrim("/proc/sys/kernel/osrelease")),
		"Go: " + runtime.Version() + " " + runtime.GOOS + "/" + runtime.GOARCH,
	}
	if c.only != "distribution" {
		v := "built from ./cmd/berth"
		if c.berthBin != "" {
			v = c.berthBin
		}
		if rev := gitRev(); rev != "" {
			v += ", commit " + rev
		}
		facts = append(facts, "Berth: "+v+" (`serve --auth none"+strings.TrimRight(" "+c.berthArgs, " ")+"`, default storage: filesystem blobs, SQLite metadata)")
	}
	if c.only != "berth" {
		facts = append(facts, "Distribution: "+distributionVersion(distBin)+" ("+distBin+", filesystem storage, inmemory blob descriptor cache, access log off, log level warn)")
	}
	if p, err := whichWrk(c.wrk); err == nil {
		facts = append(facts, "wrk: "+p)
	}
	facts = append(facts, "Command: `go run ./bench "+strings.Join(os.Args[1:], " ")+"`",
		fmt.Sprintf("Rounds: %d; big layer upload mode %q; small images %d KiB payload each", c.rounds, c.pushMode, c.smallKiB))
	return facts
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

func cpuModel() string {
	for _, line := range strings.Split(readTrim("/proc/cpuinfo"), "\n") {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return runtime.GOARCH
}

func memTotal() string {
	for _, line := range strings.Split(readTrim("/proc/meminfo"), "\n") {
		var kb int64
		if _, err := fmt.Sscanf(line, "MemTotal: %d kB", &kb); err == nil {
			return fmt.Sprintf("%.0f GiB", float64(kb)/(1<<20))
		}
	}
	return "unknown"
}

func gitRev() string {
	root, err := moduleRoot()
	if err != nil {
		return ""
	}
	out, err := exec.Command("git", "-C", root, "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return ""
	}
	rev := strings.TrimSpace(string(out))
	if st, err := exec.Command("git", "-C", root, "status", "--porcelain", "--", filepath.Join(root, "cmd"), filepath.Join(root, "internal")).Output(); err == nil && len(st) > 0 {
		rev += " (with uncommitted changes)"
	}
	return rev
}
