// Package s3server runs a real S3 server for tests: versitygw over a
// temporary directory on a loopback port. The binary is installed once
// with `go install` into the cache the e2e suite uses
// (~/.cache/berth/e2e-tools, or $BERTH_E2E_TOOLS), under a file lock so
// that test packages running at once install it once. $BERTH_VERSITYGW
// names a binary to use instead. Tests use Start; the benchmark (bench/)
// uses New, InstallBinary and Launch, which need no testing.TB.
package s3server

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Module and Version are what is installed.
const (
	Module  = "github.com/versity/versitygw/cmd/versitygw"
	Version = "v1.8.0"
)

// Server is a versitygw over a directory.
type Server struct {
	// Endpoint is the S3 API's URL (path-style buckets).
	Endpoint             string
	AccessKey, SecretKey string
	Region               string
	// Root is the directory the server keeps buckets in (a bucket is a
	// directory).
	Root string

	bin, addr string
	mu        sync.Mutex
	cmd       *exec.Cmd
	exited    chan error
}

// New describes a server over root with fresh credentials; Launch starts
// it. Tests use Start; the benchmark (bench/) uses New, InstallBinary and
// Launch.
func New(root string) *Server {
	return &Server{AccessKey: "berth-test", SecretKey: "berth-test-secret-" + randHex(8), Region: "us-east-1", Root: root}
}

// Start installs versitygw if needed and starts it for the test; it stops
// when the test ends. Under -short, or when installing fails for lack of
// network, the test is skipped with the reason.
func Start(t testing.TB) *Server {
	t.Helper()
	if testing.Short() {
		t.Skip("s3server: a real S3 server (versitygw) is not started under -short")
	}
	bin, err := Install(t)
	if err != nil {
		if offline(err) {
			t.Skipf("s3server: cannot install %s@%s (no network?): %v", Module, Version, err)
		}
		t.Fatalf("s3server: %v", err)
	}
	s := New(t.TempDir())
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if lastErr = s.Launch(bin, ""); lastErr == nil {
			t.Cleanup(s.Stop)
			return s
		}
	}
	t.Fatalf("s3server: start versitygw: %v", lastErr)
	return nil
}

// Launch starts versitygw from bin on addr (host:port; empty for a free
// loopback port) and waits until it answers. After Stop, Launch with an
// empty addr starts it again on the address it had, over the same Root.
func (s *Server) Launch(bin, addr string) error {
	if addr == "" {
		addr = s.addr
	}
	if addr == "" {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		addr = l.Addr().String()
		l.Close()
	}
	var out bytes.Buffer
	cmd := exec.Command(bin, "--access", s.AccessKey, "--secret", s.SecretKey, "--region", s.Region, "--port", addr, "posix", s.Root)
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.Env = cleanEnv()
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	endpoint := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(endpoint + "/")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-exited:
			return fmt.Errorf("versitygw exited (%v):\n%s", err, out.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-exited
			return fmt.Errorf("versitygw did not answer on %s:\n%s", addr, out.String())
		}
	}
	s.mu.Lock()
	s.bin, s.addr, s.Endpoint, s.cmd, s.exited = bin, addr, endpoint, cmd, exited
	s.mu.Unlock()
	return nil
}

// Stop stops the server (SIGTERM, then SIGKILL after 10s); the data in
// Root stays. Stopping a stopped server does nothing.
func (s *Server) Stop() {
	s.mu.Lock()
	cmd, exited := s.cmd, s.exited
	s.cmd, s.exited = nil, nil
	s.mu.Unlock()
	if cmd == nil {
		return
	}
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(10 * time.Second):
		cmd.Process.Kill()
		<-exited
	}
}

// Restart starts a stopped server again on the same address and Root.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	var err error
	for attempt := 0; attempt < 5; attempt++ {
		if err = s.Launch(s.bin, ""); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("s3server: restart versitygw on %s: %v", s.addr, err)
}

// Pid is the server process's id, 0 when stopped.
func (s *Server) Pid() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.cmd == nil {
		return 0
	}
	return s.cmd.Process.Pid
}

// NewBucket creates the bucket name (a directory of Root).
func (s *Server) NewBucket(name string) error {
	// The posix backend serves each directory of Root as a bucket.
	if err := os.Mkdir(filepath.Join(s.Root, name), 0o755); err != nil {
		return fmt.Errorf("s3server: create bucket: %w", err)
	}
	return nil
}

// Bucket creates a new empty bucket and returns its name.
func (s *Server) Bucket(t testing.TB) string {
	t.Helper()
	name := "berth-" + randHex(6)
	if err := s.NewBucket(name); err != nil {
		t.Fatal(err)
	}
	return name
}

// Install returns the path of the versitygw binary, installing it into the
// tools cache first if needed.
func Install(t testing.TB) (string, error) {
	// Stop before the test binary's own timeout would kill the test and
	// leave the go command running.
	deadline := time.Now().Add(30 * time.Minute)
	if dt, ok := t.(interface{ Deadline() (time.Time, bool) }); ok {
		if d, ok := dt.Deadline(); ok && d.Add(-30*time.Second).Before(deadline) {
			deadline = d.Add(-30 * time.Second)
		}
	}
	ctx, cancel := context.WithDeadline(context.Background(), deadline)
	defer cancel()
	return InstallBinary(ctx, t.Logf)
}

// InstallBinary is Install for programs (the benchmark): it logs with logf
// and gives up when ctx ends.
func InstallBinary(ctx context.Context, logf func(format string, args ...any)) (string, error) {
	if p := os.Getenv("BERTH_VERSITYGW"); p != "" {
		return p, nil
	}
	cache := cacheDir()
	for _, dir := range []string{"bin", "stamps", "tmp", "locks"} {
		if err := os.MkdirAll(filepath.Join(cache, dir), 0o755); err != nil {
			return "", fmt.Errorf("tools cache %s: %w", cache, err)
		}
	}
	bin := filepath.Join(cache, "bin", "versitygw")
	stamp := filepath.Join(cache, "stamps", "versitygw@"+Version)
	installed := func() bool {
		_, err1 := os.Stat(stamp)
		_, err2 := os.Stat(bin)
		return err1 == nil && err2 == nil
	}
	if installed() {
		return bin, nil
	}
	lock, err := os.OpenFile(filepath.Join(cache, "locks", "versitygw.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock the tools cache: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if installed() { // another test package installed it meanwhile
		return bin, nil
	}
	logf("s3server: installing %s@%s into %s (first time only, a few minutes) ...", Module, Version, cache)
	tmp, err := os.MkdirTemp(filepath.Join(cache, "tmp"), "versitygw-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "go", "install", Module+"@"+Version)
	cmd.Dir = tmp
	cmd.Env = append(goEnv(), "GOBIN="+tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		if ctx.Err() != nil {
			return "", fmt.Errorf("go install %s@%s did not finish before the test's deadline (the first install takes several minutes; run once with -timeout 30m, later runs use the cache in %s): %v", Module, Version, cache, err)
		}
		return "", fmt.Errorf("go install %s@%s: %v\n%s", Module, Version, err, lastLines(out))
	}
	if err := os.Rename(filepath.Join(tmp, "versitygw"), bin); err != nil {
		return "", err
	}
	if err := os.WriteFile(stamp, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return "", err
	}
	return bin, nil
}

func cacheDir() string {
	if d := os.Getenv("BERTH_E2E_TOOLS"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return filepath.Join(os.TempDir(), "berth-e2e-tools")
	}
	return filepath.Join(home, ".cache", "berth", "e2e-tools")
}

// goEnv is the environment of `go install`: the user's module and build
// caches, none of the test's workspace or cross-compilation settings.
func goEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOBIN", "GOWORK", "GOFLAGS", "GOOS", "GOARCH", "CGO_ENABLED":
			continue
		}
		env = append(env, kv)
	}
	return append(env, "GOWORK=off", "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0")
}

// cleanEnv is the server's environment, without credentials of the
// developer's own that versitygw would read.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "AWS_") || strings.HasPrefix(k, "ROOT_") || strings.HasPrefix(k, "VGW_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

// offline reports whether an installation failed for lack of network.
func offline(err error) bool {
	s := err.Error()
	for _, m := range []string{"dial tcp", "no such host", "i/o timeout", "connection refused", "network is unreachable", "proxyconnect", "TLS handshake timeout"} {
		if strings.Contains(s, m) {
			return true
		}
	}
	return false
}

func lastLines(b []byte) string {
	const max = 4000
	if len(b) > max {
		return "..." + string(b[len(b)-max:])
	}
	return string(b)
}

func randHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}
