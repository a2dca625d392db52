package e2e

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/remote"
)

// TestNewcomer follows the README's quick start literally, as a newcomer
// would: the sh blocks of README.md's "Quick start" that are marked
// <!-- newcomer: TOOL --> are read from the README itself (so the two
// cannot drift) and run in order, each in bash with -e -o pipefail, in one
// fresh directory that is "the same directory" of the README's two
// terminals. The only substitutions are the built binary for
// `go run ./cmd/berth` and a free port for localhost:5000 (set for the
// server with BERTH_ADDR, which the README documents). The server is the
// serve block's command, in token mode with no other setting, on a fresh
// data directory; the user the README creates is an ordinary one (the
// test fails if a block makes a superuser).
//
// Each block runs in its own bash, as a reader pasting it into one
// terminal would see it: PASSWORD, which the first block reads from the
// terminal (here: standard input), is passed on to the later blocks.
// A block whose tool is not installed is skipped, naming the tool (podman
// and docker are optional; docker needs a running daemon); every other
// failing command fails the test with its output. Afterwards the test
// checks, as alice and anonymously, that the registry holds what the
// README says it pushed.
func TestNewcomer(t *testing.T) {
	begin(t)
	if os.Getenv("BERTH_E2E_REGISTRY") != "" {
		t.Skip("the newcomer test starts its own berth in token mode; skipped with BERTH_E2E_REGISTRY")
	}
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile(filepath.Join(root, "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	blocks := quickStartBlocks(t, string(readme))
	var markers []string
	for _, b := range blocks {
		markers = append(markers, b.tool)
		if strings.Contains(b.script, "--superuser") {
			t.Fatalf("the quick start's %s block makes a superuser; it must work for an ordinary user:\n%s", b.tool, b.script)
		}
	}
	// The quick start must keep showing these, in this order.
	if want := []string{"serve", "berth", "crane", "skopeo", "podman"}; !isSubsequence(want, markers) {
		t.Fatalf("README quick start marks %v; want at least %v in this order", markers, want)
	}
	if blocks[0].tool != "serve" || strings.TrimSpace(blocks[0].script) != "go run ./cmd/berth serve" {
		t.Fatalf("the first newcomer block is %s %q; want the serve block `go run ./cmd/berth serve`", blocks[0].tool, blocks[0].script)
	}

	bin := filepath.Join(runDir, "berth")
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("berth binary: %v", err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	work := t.TempDir()
	nc := &newcomer{bin: bin, work: work, port: fmt.Sprint(port), password: randomPassword(t)}
	nc.serve(t)

	craneSkipped := false
	for i, b := range blocks[1:] {
		label := fmt.Sprintf("%02d-%s", i+1, b.tool)
		if craneSkipped {
			t.Logf("SKIP %s: the rest of the quick start pulls the image that crane pushes", label)
			continue
		}
		if !t.Run(label, func(t *testing.T) { nc.run(t, b) }) {
			t.Fatalf("the README's quick start fails at its %s block (%s): a newcomer following it stops here", b.tool, label)
		}
		if b.tool == "crane" && nc.skipped["crane"] {
			craneSkipped = true
		}
	}
	if craneSkipped {
		t.Skip("crane is not available: the quick start's image was never pushed")
	}
	nc.checkRegistry(t)
}

// readmeBlock is one marked sh block of the quick start.
type readmeBlock struct {
	tool, script string
}

var newcomerBlock = regexp.MustCompile("(?s)<!-- newcomer: ([a-z]+) -->\\s*\n```sh\n(.*?)```")

// quickStartBlocks returns the marked blocks of the README's Quick start
// section, in order.
func quickStartBlocks(t *testing.T, readme string) []readmeBlock {
	t.Helper()
	_, section, ok := strings.Cut(readme, "\n## Quick start\n")
	if !ok {
		t.Fatal(`README.md has no "## Quick start" section`)
	}
	if end := strings.Index(section, "\n## "); end >= 0 {
		section = section[:end]
	}
	var out []readmeBlock
	for _, m := range newcomerBlock.FindAllStringSubmatch(section, -1) {
		out = append(out, readmeBlock{tool: m[1], script: m[2]})
	}
	if len(out) == 0 {
		t.Fatal("README.md's quick start has no <!-- newcomer: TOOL --> sh blocks")
	}
	return out
}

func isSubsequence(want, in []string) bool {
	i := 0
	for _, s := range in {
		if i < len(want) && s == want[i] {
			i++
		}
	}
	return i == len(want)
}

func randomPassword(t *testing.T) string {
	t.Helper()
	b := make([]byte, 12)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return "newcomer-" + hex.EncodeToString(b)
}

type newcomer struct {
	bin, work, port, password string
	logPath                   string
	skipped                   map[string]bool
	ran                       map[string]bool
}

// serve starts the serve block's command in the work directory, on a free
// port, and waits until it answers.
func (nc *newcomer) serve(t *testing.T) {
	t.Helper()
	nc.skipped, nc.ran = map[string]bool{}, map[string]bool{}
	nc.logPath = filepath.Join(t.TempDir(), "berth.log")
	logf, err := os.Create(nc.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(nc.bin, "serve")
	cmd.Dir = nc.work
	cmd.Env = append(berthEnv(), "BERTH_ADDR=127.0.0.1:"+nc.port)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	t.Logf("$ BERTH_ADDR=127.0.0.1:%s berth serve  (in %s)", nc.port, nc.work)
	done := make(chan struct{})
	go func() { cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-done:
			case <-time.After(10 * time.Second):
				_ = cmd.Process.Kill()
				<-done
			}
		}
		if t.Failed() {
			b, _ := os.ReadFile(nc.logPath)
			const max = 48 << 10
			if len(b) > max {
				b = append([]byte("...(cut)...\n"), b[len(b)-max:]...)
			}
			t.Logf("---- berth log (%s) ----\n%s\n---- end of berth log ----", nc.logPath, b)
		}
	})
	client := http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-done:
			t.Fatal("berth serve exited before it became ready")
		default:
		}
		resp, err := client.Get("http://127.0.0.1:" + nc.port + "/v2/")
		if err == nil {
			resp.Body.Close()
			// Token mode, the default: anonymous callers are challenged.
			if resp.StatusCode == http.StatusUnauthorized {
				return
			}
			t.Fatalf("berth serve with no settings: anonymous GET /v2/ answered %s, want 401 (token mode)", resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("berth not ready after 30s: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// blockTool finds what a block needs, or why it cannot run.
func (nc *newcomer) blockTool(t *testing.T, tool string) (dir string, err error) {
	switch tool {
	case "berth":
		return "", nil
	case "docker":
		path, err := exec.LookPath("docker")
		if err != nil {
			return "", errors.New("docker is not installed")
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		info := exec.CommandContext(ctx, path, "info")
		info.Env = toolEnv()
		if out, err := info.CombinedOutput(); err != nil {
			return "", fmt.Errorf("no docker daemon answers (docker info: %v: %.200s)", err, out)
		}
		return filepath.Dir(path), nil
	case "podman":
		st, ok := tools["podman"]
		if !ok {
			return "", errors.New("podman is not in the e2e suite's tools")
		}
		if st.err != nil {
			return "", fmt.Errorf("podman is not available: %v", st.err)
		}
		return nc.podmanShim(t, st.path)
	}
	st, ok := tools[tool]
	if !ok {
		return "", fmt.Errorf("the quick start marks a block for %q, which the e2e suite does not install (tools_test.go)", tool)
	}
	if st.err != nil {
		return "", fmt.Errorf("%s is not available: %v", tool, st.err)
	}
	return filepath.Dir(st.path), nil
}

// podmanShim puts a `podman` on the PATH that keeps its storage in a temp
// directory and runs without systemd (as TestPodman does): what this
// machine needs, not something the README asks of a newcomer.
func (nc *newcomer) podmanShim(t *testing.T, real string) (string, error) {
	store := t.TempDir()
	dir := filepath.Join(store, "bin")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	script := fmt.Sprintf("#!/bin/sh\nexec %q --root %q --runroot %q --tmpdir %q --storage-driver vfs --cgroup-manager=cgroupfs --events-backend=file \"$@\"\n",
		real, filepath.Join(store, "root"), filepath.Join(store, "runroot"), filepath.Join(store, "tmp"))
	return dir, os.WriteFile(filepath.Join(dir, "podman"), []byte(script), 0o755)
}

// run runs one block as the README shows it.
func (nc *newcomer) run(t *testing.T, b readmeBlock) {
	dir, err := nc.blockTool(t, b.tool)
	if err != nil {
		if b.tool == "crane" {
			nc.skipped["crane"] = true
		}
		t.Skipf("SKIP the README's %s block: %v", b.tool, err)
	}
	script := strings.ReplaceAll(b.script, "go run ./cmd/berth", shellQuote(nc.bin))
	script = strings.ReplaceAll(script, "localhost:5000", "localhost:"+nc.port)
	path := os.Getenv("PATH")
	if dir != "" {
		path = dir + string(os.PathListSeparator) + path
	}
	ctx, cancel := context.WithTimeout(context.Background(), defaultCmdTimeout)
	defer cancel()
	// Each command is traced as written (bash -x would print the expanded
	// password); -e stops at the first failing one.
	trace := `trap 'printf "+ %s\n" "$BASH_COMMAND" >&2' DEBUG` + "\n"
	cmd := exec.CommandContext(ctx, "bash", "-e", "-o", "pipefail", "-c", trace+script)
	cmd.Dir = nc.work
	// The berth commands see no BERTH_* setting of the machine or harness.
	env := toolEnv("PATH="+path, "PASSWORD="+nc.password)
	cmd.Env = slices.DeleteFunc(env, func(kv string) bool { return strings.HasPrefix(kv, "BERTH_") })
	cmd.Stdin = strings.NewReader(nc.password + "\n") // the terminal the first block reads from
	cmd.WaitDelay = 10 * time.Second
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	began := time.Now()
	err = cmd.Run()
	t.Logf("README %s block  [%s, %s]:\n%s", b.tool, exitText(err), time.Since(began).Round(time.Millisecond), b.script)
	// The output holds no secret: every password is read from stdin.
	if err != nil || testing.Verbose() {
		t.Logf("stdout:\n%s\nstderr (with each command traced):\n%s", stdout.String(), stderr.String())
	}
	if strings.Contains(stdout.String()+stderr.String(), nc.password) {
		t.Errorf("the %s block printed alice's password", b.tool)
	}
	if err != nil {
		t.Fatalf("the README's %s block failed: %v", b.tool, err)
	}
	nc.ran[b.tool] = true
}

func shellQuote(s string) string {
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// checkRegistry checks what the blocks that ran pushed, as a user would:
// the tags, the file in the image, and an anonymous pull of the public
// repository.
func (nc *newcomer) checkRegistry(t *testing.T) {
	t.Helper()
	host := "127.0.0.1:" + nc.port
	alice := remote.WithAuth(&authn.Basic{Username: "alice", Password: nc.password})
	ref := func(s string) name.Reference {
		r, err := name.ParseReference(host+"/"+s, name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	repo, err := name.NewRepository(host+"/alice/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	tags, err := remote.List(repo, alice)
	if err != nil {
		t.Fatalf("list alice/app as alice: %v", err)
	}
	want := []string{"v1"}
	for tool, tag := range map[string]string{"skopeo": "v2", "podman": "v3", "docker": "v4"} {
		if nc.ran[tool] {
			want = append(want, tag)
		}
	}
	for _, w := range want {
		if !slices.Contains(tags, w) {
			t.Errorf("alice/app has tags %v; the quick start pushed %s", tags, w)
		}
	}
	img, err := remote.Image(ref("alice/app:v1"), alice)
	if err != nil {
		t.Fatalf("pull alice/app:v1 as alice: %v", err)
	}
	if got := imageFile(t, img, "hello.txt"); got != "hello from berth\n" {
		t.Errorf("hello.txt in alice/app:v1 is %q, want the README's %q", got, "hello from berth\n")
	}
	d, _ := img.Digest()
	if nc.ran["skopeo"] {
		if v2, err := remote.Head(ref("alice/app:v2"), alice); err != nil || v2.Digest != d {
			t.Errorf("alice/app:v2 (skopeo through an OCI layout): %v, %v; want %s", v2, err, d)
		}
	}
	// Anonymous: alice/app is private, acme/tools/app was created public.
	if _, err := remote.Head(ref("alice/app:v1")); err == nil {
		t.Error("an anonymous client reads private alice/app:v1")
	}
	if pub, err := remote.Head(ref("acme/tools/app:v1")); err != nil || pub.Digest != d {
		t.Errorf("anonymous pull of public acme/tools/app:v1: %v, %v; want %s", pub, err, d)
	}
	if nc.ran["helm"] {
		if _, err := remote.Head(ref("alice/charts/mychart:0.1.0"), alice); err != nil {
			t.Errorf("the chart helm pushed: %v", err)
		}
	}
	if nc.ran["oras"] {
		if _, err := remote.Head(ref("alice/report:v1"), alice); err != nil {
			t.Errorf("the artifact oras pushed: %v", err)
		}
	}
}

// imageFile returns the content of a file in an image's layers.
func imageFile(t *testing.T, img v1.Image, file string) string {
	t.Helper()
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Uncompressed()
		if err != nil {
			t.Fatal(err)
		}
		tr := tar.NewReader(rc)
		for {
			h, err := tr.Next()
			if err != nil {
				break
			}
			if strings.TrimPrefix(h.Name, "./") == file {
				b, err := io.ReadAll(tr)
				rc.Close()
				if err != nil {
					t.Fatal(err)
				}
				return string(b)
			}
		}
		rc.Close()
	}
	t.Errorf("no %s in the image", file)
	return ""
}
