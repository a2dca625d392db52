package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// The tools are installed once into a cache directory, one binary per tool in
// bin/ and a stamp per tool@version in stamps/, so later runs start at once.
// System tools (skopeo, podman) come from the PATH or from Debian's packages.

type toolSpec struct {
	name    string
	version string        // "" for a Debian package
	module  string        // Go package path for `go install`
	aptPkg  string        // Debian package for a system tool
	est     time.Duration // rough first-install time on 2 cores
	build   func(ctx context.Context, spec toolSpec, cache, out string) error
}

var toolSpecs = []toolSpec{
	{name: "skopeo", aptPkg: "skopeo", est: time.Minute},
	{name: "podman", aptPkg: "podman", est: 2 * time.Minute},
	// buildah builds FROM a base with the base-image annotations.
	{name: "buildah", aptPkg: "buildah", est: time.Minute},
	// CNCF Distribution, the upstream of the import tests.
	{name: "docker-registry", aptPkg: "docker-registry", est: time.Minute},
	// The headless browser of the web UI tests (ui_test.go).
	{name: "chromium", aptPkg: "chromium", est: 3 * time.Minute},
	{name: "crane", version: "v0.22.1", module: "github.com/google/go-containerregistry/cmd/crane", est: 90 * time.Second},
	{name: "regctl", version: "v0.11.7", module: "github.com/regclient/regclient/cmd/regctl", est: 2 * time.Minute},
	{name: "oras", version: "v1.3.3", module: "oras.land/oras", est: 2 * time.Minute, build: buildOras},
	{name: "helm", version: "v3.21.4", module: "helm.sh/helm/v3/cmd/helm", est: 5 * time.Minute},
	{name: "cosign", version: "v2.6.5", module: "github.com/sigstore/cosign/v2/cmd/cosign", est: 7 * time.Minute},
	// The OCI distribution spec's conformance suite (a Go test binary) as
	// of v1.1 (this commit is the one after v1.1.0-rc3 the module proxy
	// serves; the suite was rewritten after v1.1.1).
	{name: "oci-conformance", version: "v0.0.0-20231101194043-f2182352d4cc", module: "github.com/opencontainers/distribution-spec/conformance",
		est: time.Minute, build: buildConformance},
}

type toolState struct {
	path string
	err  error
	took time.Duration
}

var tools = map[string]*toolState{}

const perToolTimeout = 30 * time.Minute

func toolsCacheDir() string {
	if d := os.Getenv("BERTH_E2E_TOOLS"); d != "" {
		return d
	}
	home, err := os.UserHomeDir()
	if err != nil || home == "" {
		return filepath.Join(os.TempDir(), "berth-e2e-tools")
	}
	return filepath.Join(home, ".cache", "berth", "e2e-tools")
}

// requireTool returns the path of an installed tool or skips the test,
// naming the tool and why it is missing.
func requireTool(t *testing.T, name string) string {
	t.Helper()
	st, ok := tools[name]
	if !ok {
		t.Fatalf("unknown tool %q (not in toolSpecs)", name)
	}
	if st.err != nil {
		t.Skipf("SKIP: tool %s is not available: %v", name, st.err)
	}
	return st.path
}

// installTools makes every tool available, sequentially (the machine is
// small). An install still running at deadline is stopped; the tool is then
// reported missing and the tests that need it skip.
func installTools(deadline time.Time) {
	cache := toolsCacheDir()
	for _, dir := range []string{"bin", "stamps", "tmp"} {
		if err := os.MkdirAll(filepath.Join(cache, dir), 0o755); err != nil {
			for _, s := range toolSpecs {
				tools[s.name] = &toolState{err: fmt.Errorf("cache dir %s: %w", cache, err)}
			}
			return
		}
	}
	aptUpdated := false
	for _, spec := range toolSpecs {
		st := &toolState{}
		tools[spec.name] = st
		began := time.Now()
		if spec.version == "" {
			st.path, st.err = systemTool(spec, deadline, &aptUpdated)
		} else {
			st.path, st.err = goTool(spec, cache, deadline)
		}
		st.took = time.Since(began)
	}
}

func printToolSummary() {
	names := make([]string, 0, len(tools))
	for n := range tools {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		st := tools[n]
		if st.err != nil {
			fmt.Printf("e2e: tool %-7s MISSING: %v\n", n, st.err)
		} else {
			fmt.Printf("e2e: tool %-7s %s\n", n, st.path)
		}
	}
}

func ctxUntil(deadline time.Time, limit time.Duration) (context.Context, context.CancelFunc) {
	d := time.Now().Add(limit)
	if !deadline.IsZero() && deadline.Before(d) {
		d = deadline
	}
	return context.WithDeadline(context.Background(), d)
}

func errOutOfTime(spec toolSpec) error {
	return fmt.Errorf("install of %s did not finish in the time left under `go test -timeout` "+
		"(first install takes ~%s; run once with `go test -timeout 60m ./test/e2e/`, later runs use the cache)",
		spec.name, spec.est)
}

func systemTool(spec toolSpec, deadline time.Time, aptUpdated *bool) (string, error) {
	if p, err := exec.LookPath(spec.name); err == nil {
		return p, nil
	}
	if os.Geteuid() != 0 {
		return "", fmt.Errorf("%s is not on PATH, and installing the Debian package %s needs root (apt-get install -y %s)",
			spec.name, spec.aptPkg, spec.aptPkg)
	}
	if _, err := exec.LookPath("apt-get"); err != nil {
		return "", fmt.Errorf("%s is not on PATH and there is no apt-get to install it", spec.name)
	}
	if !deadline.IsZero() && time.Now().After(deadline) {
		return "", errOutOfTime(spec)
	}
	fmt.Printf("e2e: installing %s with apt-get ...\n", spec.aptPkg)
	ctx, cancel := ctxUntil(deadline, 15*time.Minute)
	defer cancel()
	env := append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if !*aptUpdated {
		if out, err := runQuiet(ctx, "", env, "apt-get", "update", "-q"); err != nil {
			return "", fmt.Errorf("apt-get update: %v\n%s", err, tail(out))
		}
		*aptUpdated = true
	}
	if out, err := runQuiet(ctx, "", env, "apt-get", "install", "-y", "-q", spec.aptPkg); err != nil {
		if ctx.Err() != nil {
			return "", errOutOfTime(spec)
		}
		return "", fmt.Errorf("apt-get install -y %s: %v\n%s", spec.aptPkg, err, tail(out))
	}
	p, err := exec.LookPath(spec.name)
	if err != nil {
		return "", fmt.Errorf("apt-get installed %s but %s is still not on PATH", spec.aptPkg, spec.name)
	}
	return p, nil
}

func goTool(spec toolSpec, cache string, deadline time.Time) (string, error) {
	bin := filepath.Join(cache, "bin", spec.name)
	stamp := filepath.Join(cache, "stamps", spec.name+"@"+spec.version)
	if _, err := os.Stat(stamp); err == nil {
		if _, err := os.Stat(bin); err == nil {
			return bin, nil
		}
	}
	if _, err := exec.LookPath("go"); err != nil {
		return "", fmt.Errorf("installing %s@%s needs the go command: %v", spec.name, spec.version, err)
	}
	if !deadline.IsZero() && time.Now().After(deadline) {
		return "", errOutOfTime(spec)
	}
	fmt.Printf("e2e: installing %s@%s into %s (first time only, ~%s on 2 cores) ...\n", spec.name, spec.version, cache, spec.est)
	began := time.Now()
	ctx, cancel := ctxUntil(deadline, perToolTimeout)
	defer cancel()
	tmp, err := os.MkdirTemp(filepath.Join(cache, "tmp"), spec.name+"-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	out := filepath.Join(tmp, spec.name)
	build := spec.build
	if build == nil {
		build = goInstall
	}
	if err := build(ctx, spec, cache, out); err != nil {
		if ctx.Err() != nil {
			return "", errOutOfTime(spec)
		}
		return "", err
	}
	// Rename is atomic: a concurrent run sees the old binary or the new one.
	if err := os.Rename(out, bin); err != nil {
		return "", err
	}
	if err := os.WriteFile(stamp, []byte(time.Now().UTC().Format(time.RFC3339)+"\n"), 0o644); err != nil {
		return "", err
	}
	fmt.Printf("e2e: installed %s@%s in %s\n", spec.name, spec.version, time.Since(began).Round(time.Second))
	return bin, nil
}

// goEnv is the environment for go commands that build tools: the user's
// module cache and build cache, but no workspace or module flags of theirs.
func goEnv(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "GOBIN", "GOWORK", "GOFLAGS", "GOOS", "GOARCH", "CGO_ENABLED":
			continue
		}
		env = append(env, kv)
	}
	env = append(env, "GOWORK=off", "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0")
	return append(env, extra...)
}

// goInstall runs `go install module@version` with GOBIN set to out's directory.
func goInstall(ctx context.Context, spec toolSpec, cache, out string) error {
	dir := filepath.Dir(out)
	o, err := runQuiet(ctx, dir, goEnv("GOBIN="+dir), "go", "install", spec.module+"@"+spec.version)
	if err != nil {
		return fmt.Errorf("go install %s@%s: %v\n%s", spec.module, spec.version, err, tail(o))
	}
	if _, err := os.Stat(out); err != nil {
		return fmt.Errorf("go install %s@%s made no %s", spec.module, spec.version, out)
	}
	return nil
}

// buildOras builds the oras CLI from its module source: the proxy refuses
// `go install oras.land/oras/cmd/oras@VERSION`, but the module downloads and
// `go build ./cmd/oras` works inside it.
func buildOras(ctx context.Context, spec toolSpec, cache, out string) error {
	dir, err := moduleSource(ctx, spec, filepath.Dir(out))
	if err != nil {
		return err
	}
	o, err := runQuiet(ctx, dir, goEnv(), "go", "build", "-o", out, "./cmd/oras")
	if err != nil {
		return fmt.Errorf("go build ./cmd/oras in %s: %v\n%s", dir, err, tail(o))
	}
	return nil
}

// buildConformance compiles the conformance suite's test binary in its
// module's source (it is a test package, not a command).
func buildConformance(ctx context.Context, spec toolSpec, cache, out string) error {
	dir, err := moduleSource(ctx, spec, filepath.Dir(out))
	if err != nil {
		return err
	}
	o, err := runQuiet(ctx, dir, goEnv(), "go", "test", "-c", "-o", out, ".")
	if err != nil {
		return fmt.Errorf("go test -c in %s: %v\n%s", dir, err, tail(o))
	}
	return nil
}

// moduleSource downloads module@version and returns its directory in the
// module cache.
func moduleSource(ctx context.Context, spec toolSpec, dir string) (string, error) {
	dl := exec.CommandContext(ctx, "go", "mod", "download", "-json", spec.module+"@"+spec.version)
	dl.Dir, dl.Env = dir, goEnv()
	var stderr bytes.Buffer
	dl.Stderr = &stderr
	o, err := dl.Output()
	var info struct{ Dir, Error string }
	if jerr := json.Unmarshal(o, &info); err != nil || jerr != nil || info.Dir == "" {
		return "", fmt.Errorf("go mod download -json %s@%s: %v %s\n%s%s", spec.module, spec.version, err, info.Error, tail(o), tail(stderr.Bytes()))
	}
	return info.Dir, nil
}

func runQuiet(ctx context.Context, dir string, env []string, name string, args ...string) ([]byte, error) {
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = env
	cmd.WaitDelay = 10 * time.Second
	var b bytes.Buffer
	cmd.Stdout, cmd.Stderr = &b, &b
	err := cmd.Run()
	if err == nil && ctx.Err() != nil {
		err = ctx.Err()
	}
	if errors.Is(err, context.DeadlineExceeded) || ctx.Err() != nil {
		err = fmt.Errorf("%v (stopped: time limit)", err)
	}
	return b.Bytes(), err
}

// tail keeps the end of a long command output for an error message.
func tail(b []byte) string {
	const max = 4000
	if len(b) > max {
		return "..." + string(b[len(b)-max:])
	}
	return string(b)
}
