// Package e2e drives a running Berth registry with the real clients people
// use against OCI registries (crane, skopeo, regctl, helm, oras, cosign) and
// checks what they read back: digests, bytes, tag lists and media types.
//
// TestMain builds ./cmd/berth, starts it on a free loopback port and installs
// the tools into a cache directory. With BERTH_E2E_REGISTRY=host:port it uses
// that already-running registry instead and builds and starts nothing.
package e2e

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

var (
	// registryHost is host:port of the registry under test, e.g. 127.0.0.1:5000.
	registryHost string
	// runDir is a temporary directory that lives as long as the test binary.
	runDir string
	// toolHome is the HOME (and config root) handed to every tool.
	toolHome string
)

const defaultCmdTimeout = 5 * time.Minute

func TestMain(m *testing.M) {
	flag.Parse()
	os.Exit(runMain(m))
}

func runMain(m *testing.M) int {
	start := time.Now()
	if testing.Short() {
		fmt.Println("e2e: -short given: every end-to-end test will be skipped")
		return m.Run()
	}
	var err error
	runDir, err = os.MkdirTemp("", "berth-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	defer os.RemoveAll(runDir)
	toolHome = filepath.Join(runDir, "home")
	if err := prepareToolHome(toolHome); err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}

	var srv *server
	if h := os.Getenv("BERTH_E2E_REGISTRY"); h != "" {
		registryHost = h
		fmt.Printf("e2e: using the registry at %s (BERTH_E2E_REGISTRY)\n", h)
		if err := waitReady(context.Background(), nil, 10*time.Second); err != nil {
			fmt.Fprintf(os.Stderr, "e2e: registry %s from BERTH_E2E_REGISTRY is not ready: %v\n", h, err)
			return 1
		}
		installTools(installDeadline(start))
	} else {
		bin, err := buildBerth()
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: FAIL: cannot build ./cmd/berth: %v\n", err)
			return 1
		}
		// Install before starting the server, so its log holds only test traffic.
		installTools(installDeadline(start))
		srv, err = startBerth(bin)
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2e: FAIL: cannot start berth: %v\n", err)
			if srv != nil {
				srv.stop()
				srv.printLog()
			}
			return 1
		}
	}
	printToolSummary()

	code := m.Run()
	if srv != nil {
		srv.stop()
		if srv.raced() {
			fmt.Fprintln(os.Stderr, "e2e: FAIL: the race detector found a data race in berth (see its log)")
			code = 1
		}
		if code != 0 {
			srv.printLog()
		}
	}
	return code
}

// installDeadline keeps first-time tool installs inside what `go test` allows:
// cmd/go kills the test binary at -timeout plus one minute, counted from its
// start and including TestMain. A few minutes are left for the tests.
func installDeadline(start time.Time) time.Time {
	f := flag.Lookup("test.timeout")
	if f == nil {
		return time.Time{}
	}
	d, err := time.ParseDuration(f.Value.String())
	if err != nil || d <= 0 {
		return time.Time{}
	}
	return start.Add(d + time.Minute - 5*time.Minute)
}

func prepareToolHome(home string) error {
	for _, d := range []string{
		".docker", ".config", ".cache", ".local/share", "run", "tmp",
		"helm/cache", "helm/config", "helm/data", "containers/registries.d",
	} {
		if err := os.MkdirAll(filepath.Join(home, d), 0o700); err != nil {
			return err
		}
	}
	files := map[string]string{
		".docker/config.json": "{}\n",
		// skopeo: accept anything, and no registries.conf of the machine.
		"containers/policy.json":     `{"default":[{"type":"insecureAcceptAnything"}]}` + "\n",
		"containers/registries.conf": "unqualified-search-registries = []\n",
		"containers/auth.json":       "{}\n",
	}
	for name, content := range files {
		if err := os.WriteFile(filepath.Join(home, name), []byte(content), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// toolEnv is the environment for every tool: the machine's, with everything
// that points at a user's configuration moved under toolHome.
func toolEnv(extra ...string) []string {
	set := map[string]string{
		"HOME":                       toolHome,
		"DOCKER_CONFIG":              filepath.Join(toolHome, ".docker"),
		"XDG_CONFIG_HOME":            filepath.Join(toolHome, ".config"),
		"XDG_CACHE_HOME":             filepath.Join(toolHome, ".cache"),
		"XDG_DATA_HOME":              filepath.Join(toolHome, ".local/share"),
		"XDG_RUNTIME_DIR":            filepath.Join(toolHome, "run"),
		"TMPDIR":                     filepath.Join(toolHome, "tmp"),
		"REGISTRY_AUTH_FILE":         filepath.Join(toolHome, "containers/auth.json"),
		"CONTAINERS_REGISTRIES_CONF": filepath.Join(toolHome, "containers/registries.conf"),
		"HELM_CACHE_HOME":            filepath.Join(toolHome, "helm/cache"),
		"HELM_CONFIG_HOME":           filepath.Join(toolHome, "helm/config"),
		"HELM_DATA_HOME":             filepath.Join(toolHome, "helm/data"),
		"HELM_REGISTRY_CONFIG":       filepath.Join(toolHome, "helm/config/registry.json"),
		"COSIGN_PASSWORD":            "berth-e2e",
		"TUF_ROOT":                   filepath.Join(toolHome, ".sigstore/root"),
		"NO_COLOR":                   "1",
	}
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if _, ok := set[k]; ok || strings.HasPrefix(k, "COSIGN_") || strings.HasPrefix(k, "HELM_") ||
			strings.HasPrefix(k, "REGCTL_") || strings.HasPrefix(k, "ORAS_") || strings.HasPrefix(k, "SIGSTORE_") {
			continue
		}
		env = append(env, kv)
	}
	for k, v := range set {
		env = append(env, k+"="+v)
	}
	return append(env, extra...)
}

// moduleRoot finds the repository root from the test's working directory.
func moduleRoot() (string, error) {
	wd, err := os.Getwd()
	if err != nil {
		return "", err
	}
	root := filepath.Clean(filepath.Join(wd, "..", ".."))
	b, err := os.ReadFile(filepath.Join(root, "go.mod"))
	if err != nil {
		return "", fmt.Errorf("module root not found from %s: %w", wd, err)
	}
	if !bytes.Contains(b, []byte("module github.com/berth-dev/berth")) {
		return "", fmt.Errorf("%s/go.mod is not the berth module", root)
	}
	return root, nil
}

func buildBerth() (string, error) {
	root, err := moduleRoot()
	if err != nil {
		return "", err
	}
	bin := filepath.Join(runDir, "berth")
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "./cmd/berth")
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = root
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go %s (in %s): %v\n%s", strings.Join(args, " "), root, err, out)
	}
	return bin, nil
}

type server struct {
	cmd     *exec.Cmd
	logPath string
	exited  chan struct{}
	waitErr error
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func startBerth(bin string) (*server, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	registryHost = fmt.Sprintf("127.0.0.1:%d", port)
	dataDir := filepath.Join(runDir, "data")
	if err := os.MkdirAll(dataDir, 0o700); err != nil {
		return nil, err
	}
	s := &server{logPath: filepath.Join(runDir, "berth.log"), exited: make(chan struct{})}
	logf, err := os.Create(s.logPath)
	if err != nil {
		return nil, err
	}
	s.cmd = exec.Command(bin, "serve", "--addr", registryHost, "--data-dir", dataDir, "--auth", "none", "--log-level", "debug")
	// Webhook receivers of the notification tests listen on loopback.
	s.cmd.Env = append(os.Environ(), `BERTH_NOTIFICATIONS_ALLOWED_HOSTS=["loopback"]`)
	s.cmd.Stdout, s.cmd.Stderr = logf, logf
	s.cmd.Dir = runDir
	fmt.Printf("e2e: starting %s\n", strings.Join(s.cmd.Args, " "))
	if err := s.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() {
		s.waitErr = s.cmd.Wait()
		logf.Close()
		close(s.exited)
	}()
	if err := waitReady(context.Background(), s.exited, 30*time.Second); err != nil {
		return s, err
	}
	return s, nil
}

func (s *server) stop() {
	select {
	case <-s.exited:
		return
	default:
	}
	_ = s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(10 * time.Second):
		_ = s.cmd.Process.Kill()
		<-s.exited
	}
}

// raced reports a data race in the server's log (when built with -race).
func (s *server) raced() bool {
	b, _ := os.ReadFile(s.logPath)
	return bytes.Contains(b, []byte("WARNING: DATA RACE"))
}

func (s *server) printLog() {
	b, err := os.ReadFile(s.logPath)
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: cannot read the berth log:", err)
		return
	}
	const max = 64 << 10
	if len(b) > max {
		// Keep the race reports whole, then the end of the log.
		var races []byte
		for _, part := range strings.Split(string(b), "==================\n") {
			if strings.HasPrefix(part, "WARNING: DATA RACE") && len(races) < max {
				races = append(races, "==================\n"+part+"==================\n"...)
			}
		}
		b = append(append(races, "...(cut)...\n"...), b[len(b)-max:]...)
	}
	fmt.Fprintf(os.Stderr, "e2e: ---- berth log (%s) ----\n%s\ne2e: ---- end of berth log ----\n", s.logPath, b)
}

// waitReady polls GET /v2/ until it answers 200.
func waitReady(ctx context.Context, exited <-chan struct{}, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last string
	for time.Now().Before(deadline) {
		select {
		case <-exited:
			return errors.New("the server exited before it became ready")
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+registryHost+"/v2/", nil)
		resp, err := (&http.Client{Timeout: 2 * time.Second}).Do(req)
		if err == nil {
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = resp.Status
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("GET http://%s/v2/ not 200 after %s (last: %s)", registryHost, timeout, last)
}

// begin is called first by every test.
func begin(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test skipped in -short mode")
	}
}

// uniqueRepo gives each test its own repository names, so that a long-lived
// registry (BERTH_E2E_REGISTRY) can be reused across runs.
func uniqueRepo(t *testing.T, suffix string) string {
	t.Helper()
	base := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	return fmt.Sprintf("e2e/%s-%x/%s", base, time.Now().UnixNano()&0xffffff, suffix)
}

type cmdResult struct {
	Stdout, Stderr string
	Err            error
}

// opts are the optional working directory and extra environment of a command.
type opts struct {
	Dir   string
	Env   []string
	Stdin []byte
}

// runTool runs a tool by name (see requireTool) in a fresh directory and
// fails the test on a non-zero exit. It returns stdout.
func runTool(t *testing.T, tool string, args ...string) string {
	t.Helper()
	return mustRun(t, opts{}, tool, args...)
}

// mustRun is runTool with options.
func mustRun(t *testing.T, o opts, tool string, args ...string) string {
	t.Helper()
	r := tryRun(t, o, tool, args...)
	if r.Err != nil {
		t.Fatalf("%s %s: %v", tool, strings.Join(args, " "), r.Err)
	}
	return r.Stdout
}

// tryRun runs a tool and returns its outcome without judging it. The command
// line is always logged, its output when it fails.
func tryRun(t *testing.T, o opts, tool string, args ...string) cmdResult {
	t.Helper()
	path := requireTool(t, tool)
	ctx, cancel := context.WithTimeout(context.Background(), defaultCmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, path, args...)
	cmd.Env = toolEnv(o.Env...)
	cmd.Dir = o.Dir
	if cmd.Dir == "" {
		cmd.Dir = t.TempDir()
	}
	cmd.WaitDelay = 10 * time.Second
	if o.Stdin != nil {
		cmd.Stdin = bytes.NewReader(o.Stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	err := cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%v (timed out after %s)", err, defaultCmdTimeout)
	}
	prefix := ""
	if len(o.Env) > 0 {
		prefix = strings.Join(o.Env, " ") + " "
	}
	t.Logf("$ %s%s %s  [%s, %s]", prefix, tool, strings.Join(args, " "), exitText(err), time.Since(began).Round(time.Millisecond))
	if err != nil {
		t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	}
	return cmdResult{Stdout: stdout.String(), Stderr: stderr.String(), Err: err}
}

func exitText(err error) string {
	if err == nil {
		return "exit 0"
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return fmt.Sprintf("exit %d", ee.ExitCode())
	}
	return err.Error()
}
