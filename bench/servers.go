package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// server is one registry process under test.
type server struct {
	name    string // "berth" or "distribution"
	addr    string // host:port
	dataDir string
	logPath string
	cmd     *exec.Cmd
	exited  chan struct{} // closed when the process has exited
	waitErr error
}

func (s *server) baseURL() string { return "http://" + s.addr }

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// moduleRoot finds the directory holding the module's go.mod.
func moduleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err == nil {
		if p := strings.TrimSpace(string(out)); p != "" && p != os.DevNull {
			return filepath.Dir(p), nil
		}
	}
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find go.mod: run the bench from inside the berth module")
		}
		dir = parent
	}
}

// buildBerth compiles ./cmd/berth into dir and returns the binary's path.
func buildBerth(dir string) (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "bin", "berth")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/berth")
	cmd.Dir = root
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	logf("building berth: go build -o %s ./cmd/berth (in %s)", bin, root)
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("go build ./cmd/berth failed: %v\n%s", err, out.String())
	}
	logf("built berth in %.1fs", time.Since(start).Seconds())
	return bin, nil
}

// ensureDistribution returns the path of the Distribution binary, installing
// the Debian package docker-registry when it is missing and we are root.
func ensureDistribution(path string) (string, error) {
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	if path != defaultDistributionBin {
		return "", fmt.Errorf("distribution binary %s not found", path)
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%s is missing and this is not root: install it with `sudo apt-get install -y docker-registry` (CNCF Distribution), pass -distribution-bin PATH, or use -only berth", path)
	}
	logf("%s missing: installing Debian package docker-registry", path)
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	for _, args := range [][]string{{"update"}, {"install", "-y", "--no-install-recommends", "docker-registry"}} {
		cmd := exec.Command("apt-get", args...)
		cmd.Env = env
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Run(); err != nil {
			return "", fmt.Errorf("apt-get %s failed: %v\n%s", strings.Join(args, " "), err, tail(out.String(), 2000))
		}
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("docker-registry installed but %s is still missing", path)
	}
	return path, nil
}

const distributionConfig = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  cache:
    blobdescriptor: inmemory
http:
  addr: %s
`

// startDistribution writes a config and starts CNCF Distribution on loopback.
func startDistribution(bin, work string) (*server, error) {
	return startDistributionIn(bin, filepath.Join(work, "distribution"), "")
}

// startDistributionIn starts Distribution with its data in dir and extra
// appended to its config.
func startDistributionIn(bin, dir, extra string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	cfg := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(cfg, append(fmt.Appendf(nil, distributionConfig, data, addr), extra...), 0o644); err != nil {
		return nil, err
	}
	// Distribution reads REGISTRY_* variables as config overrides, and its S3
	// driver panics on AWS_CA_BUNDLE: keep both out of its environment.
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "REGISTRY_") || strings.HasPrefix(kv, "AWS_CA_BUNDLE=") {
			continue
		}
		env = append(env, kv)
	}
	s := &server{name: "distribution", addr: addr, dataDir: data, logPath: filepath.Join(dir, "server.log")}
	return s, s.start(bin, []string{"serve", cfg}, env)
}

// startBerth starts berth with its own data directory on loopback.
func startBerth(bin, work string, extra []string) (*server, error) {
	addr, err := freeAddr()
	if err != nil {
		return nil, err
	}
	dir := filepath.Join(work, "berth")
	data := filepath.Join(dir, "data")
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	args := append([]string{"serve", "--addr", addr, "--data-dir", data, "--auth", "none"}, extra...)
	// Settings come from flags only: BERTH_* variables (a database URL, say)
	// must not change what is measured.
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "BERTH_") {
			env = append(env, kv)
		}
	}
	s := &server{name: "berth", addr: addr, dataDir: data, logPath: filepath.Join(dir, "server.log")}
	return s, s.start(bin, args, env)
}

// start runs the binary itself (no shell wrapper, so the pid is the server's)
// and waits until GET /v2/ answers 200.
func (s *server) start(bin string, args, env []string) error {
	logFile, err := os.Create(s.logPath)
	if err != nil {
		return err
	}
	s.cmd = exec.Command(bin, args...)
	s.cmd.Env = env
	s.cmd.Stdout, s.cmd.Stderr = logFile, logFile
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := s.cmd.Start(); err != nil {
		logFile.Close()
		return fmt.Errorf("start %s: %w", s.name, err)
	}
	logf("started %s (pid %d): %s %s", s.name, s.cmd.Process.Pid, bin, strings.Join(args, " "))
	s.exited = make(chan struct{})
	go func() {
		s.waitErr = s.cmd.Wait()
		logFile.Close()
		close(s.exited)
	}()
	return s.waitReady(60 * time.Second)
}

func (s *server) waitReady(timeout time.Duration) error {
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(timeout)
	last := "no answer"
	for time.Now().Before(deadline) {
		select {
		case <-s.exited:
			return fmt.Errorf("%s exited before it was ready (%v); log %s:\n%s", s.name, s.waitErr, s.logPath, s.logTail())
		default:
		}
		resp, err := client.Get(s.baseURL() + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK || resp.StatusCode == http.StatusUnauthorized { // 401: up, with auth on
				return nil
			}
			last = "GET /v2/ answered " + resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("%s not ready after %s (%s); log %s:\n%s", s.name, timeout, last, s.logPath, s.logTail())
}

func (s *server) alive() bool {
	if s == nil || s.exited == nil {
		return false
	}
	select {
	case <-s.exited:
		return false
	default:
		return true
	}
}

func (s *server) logTail() string {
	b, _ := os.ReadFile(s.logPath)
	return tail(string(b), 3000)
}

// stop sends SIGTERM, then SIGKILL after a grace period.
func (s *server) stop() {
	if !s.alive() {
		return
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// procStats holds what /proc tells about a running server.
type procStats struct {
	hwmKiB  int64   // VmHWM: peak resident set
	rssKiB  int64   // VmRSS now
	cpuSecs float64 // utime+stime so far, in 10 ms ticks
	// onCPU sums the live threads' on-CPU time from schedstat (nanosecond
	// resolution, for per-workload deltas); 0 when the kernel lacks it.
	onCPU float64
}

// threadsOnCPU sums the first field of /proc/PID/task/*/schedstat, in seconds.
func threadsOnCPU(pid int) float64 {
	paths, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var ns int64
	for _, p := range paths {
		b, err := os.ReadFile(p)
		if err != nil {
			continue // thread gone
		}
		if f := strings.Fields(string(b)); len(f) > 0 {
			v, _ := strconv.ParseInt(f[0], 10, 64)
			ns += v
		}
	}
	return float64(ns) / 1e9
}

// selfCPU is the CPU time, user and system, this process has used (s).
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// cpuDelta is the CPU a server used between two readings.
func cpuDelta(before, after procStats) float64 {
	if before.onCPU > 0 && after.onCPU >= before.onCPU {
		return after.onCPU - before.onCPU
	}
	return after.cpuSecs - before.cpuSecs
}

func (s *server) stats() (procStats, error) {
	var st procStats
	if !s.alive() {
		return st, fmt.Errorf("%s is not running (%v)", s.name, s.waitErr)
	}
	pid := s.cmd.Process.Pid
	status, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return st, err
	}
	for _, line := range strings.Split(string(status), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		v, _ := strconv.ParseInt(f[1], 10, 64)
		switch f[0] {
		case "VmHWM:":
			st.hwmKiB = v
		case "VmRSS:":
			st.rssKiB = v
		}
	}
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return st, err
	}
	// Fields after the ")" that closes comm: state is field 3, utime 14, stime 15.
	rest := string(stat)
	if i := strings.LastIndexByte(rest, ')'); i >= 0 {
		rest = rest[i+1:]
	}
	f := strings.Fields(rest)
	if len(f) > 12 {
		ut, _ := strconv.ParseFloat(f[11], 64)
		stt, _ := strconv.ParseFloat(f[12], 64)
		st.cpuSecs = (ut + stt) / 100 // USER_HZ is 100 on Linux
	}
	st.onCPU = threadsOnCPU(pid)
	if st.hwmKiB == 0 {
		return st, fmt.Errorf("no VmHWM in /proc/%d/status", pid)
	}
	return st, nil
}

// diskUsage sums the allocated size of every file under dir.
func diskUsage(dir string) (int64, error) {
	var total int64
	err := filepath.WalkDir(dir, func(_ string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return nil // raced with a delete
		}
		if sys, ok := info.Sys().(*syscall.Stat_t); ok {
			total += sys.Blocks * 512
		} else {
			total += info.Size()
		}
		return nil
	})
	return total, err
}

func distributionVersion(bin string) string {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, bin, "--version").CombinedOutput()
	if err != nil {
		return "unknown"
	}
	// It prints "PATH MODULE VERSION"; the path is already in the report.
	return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(string(out)), bin))
}

func tail(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return "..." + s[len(s)-n:]
}
