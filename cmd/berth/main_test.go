package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"
	"testing"
)

func run(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	cmd := rootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestVersion(t *testing.T) {
	out, err := run(t, nil, "version")
	if err != nil || !strings.HasPrefix(out, "berth ") || !strings.Contains(out, "commit:") {
		t.Fatalf("version = %q, %v", out, err)
	}
}

func TestReadBuildVersion(t *testing.T) {
	settings := func(kv ...string) []debug.BuildSetting {
		var out []debug.BuildSetting
		for i := 0; i < len(kv); i += 2 {
			out = append(out, debug.BuildSetting{Key: kv[i], Value: kv[i+1]})
		}
		return out
	}
	const rev = "0d65697f7208525d136fc70fc218639b0836c859"
	for _, tc := range []struct {
		name             string
		bi               *debug.BuildInfo
		version, commit  string
		want, wantAbsent []string
	}{
		{
			name: "buildvcs",
			bi: &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "v0.0.0-20261201233133-0d65697f7208"},
				Settings: settings("vcs", "git", "vcs.revision", rev, "vcs.time", "2026-12-01T23:31:33Z", "vcs.modified", "false")},
			want:       []string{"berth v0.0.0-20261201233133-0d65697f7208\n", "commit:  " + rev + " (vcs.revision)", "time:    2026-12-01T23:31:33Z", "go:      go1.26.8"},
			wantAbsent: []string{"uncommitted", "stamp it"},
		},
		{
			name: "modified working tree",
			bi:   &debug.BuildInfo{Main: debug.Module{Version: "(devel)"}, Settings: settings("vcs.revision", rev, "vcs.modified", "true")},
			want: []string{"berth devel\n", rev + " (vcs.revision; built with uncommitted changes)"},
		},
		{
			name: "buildvcs=false in a checkout",
			bi:   &debug.BuildInfo{GoVersion: "go1.26.8", Main: debug.Module{Version: "(devel)"}},
			want: []string{"berth devel\n", "commit:  unknown", "-buildvcs=false", `-X main.version=`, `-X main.commit=$(git rev-parse HEAD)`},
		},
		{
			name: "go install module@commit without VCS stamping",
			bi:   &debug.BuildInfo{Main: debug.Module{Version: "v1.2.4-0.20261201233133-0d65697f7208"}},
			want: []string{"berth v1.2.4-0.20261201233133-0d65697f7208\n", "commit:  0d65697f7208 (module pseudo-version)"},
		},
		{
			name:       "go install module@version",
			bi:         &debug.BuildInfo{Main: debug.Module{Version: "v1.2.3"}},
			want:       []string{"berth v1.2.3\n", "commit:  unknown"},
			wantAbsent: []string{"pseudo"},
		},
		{
			name: "stamped by the linker",
			bi: &debug.BuildInfo{Main: debug.Module{Version: "(devel)"},
				Settings: settings("vcs.revision", rev, "vcs.modified", "true")},
			version: "v9.9.9", commit: "abc123",
			want:       []string{"berth v9.9.9\n", "commit:  abc123 (stamped by the linker)"},
			wantAbsent: []string{rev, "uncommitted"},
		},
		{
			name: "no build information",
			want: []string{"berth devel\n", "commit:  unknown"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := readBuildVersion(tc.bi, tc.version, tc.commit).String()
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("version output lacks %q:\n%s", w, out)
				}
			}
			for _, w := range tc.wantAbsent {
				if strings.Contains(out, w) {
					t.Errorf("version output has %q:\n%s", w, out)
				}
			}
		})
	}
}

// TestVersionBinary builds the binary the ways a user does and reads what
// `berth version` says of each.
func TestVersionBinary(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the binary three times")
	}
	if _, err := exec.LookPath("git"); err != nil {
		t.Skip("git is not installed")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	head, err := exec.Command("git", "-C", root, "rev-parse", "HEAD").Output()
	if err != nil {
		t.Skipf("not a git checkout: %v", err)
	}
	rev := strings.TrimSpace(string(head))
	bin := filepath.Join(t.TempDir(), "berth")
	build := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("go", append(append([]string{"build", "-o", bin}, args...), "./cmd/berth")...)
		cmd.Dir = root
		// The flags under test decide, not the machine's GOFLAGS.
		cmd.Env = append(os.Environ(), "GOFLAGS=")
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("go build %v: %v\n%s", args, err, out)
		}
		out, err := exec.Command(bin, "version").Output()
		if err != nil {
			t.Fatalf("berth version: %v", err)
		}
		return string(out)
	}
	if out := build("-buildvcs=true"); !strings.Contains(out, "commit:  "+rev) {
		t.Errorf("built with -buildvcs=true at %s, berth version says:\n%s", rev, out)
	}
	if out := build("-buildvcs=false"); !strings.Contains(out, "commit:  unknown") || !strings.Contains(out, "-X main.commit=") {
		t.Errorf("built with -buildvcs=false, berth version does not say how to stamp it:\n%s", out)
	}
	if out := build("-buildvcs=false", "-ldflags", "-X main.version=v9.9.9 -X main.commit="+rev); !strings.HasPrefix(out, "berth v9.9.9\n") ||
		!strings.Contains(out, "commit:  "+rev+" (stamped by the linker)") {
		t.Errorf("built with -ldflags stamps, berth version says:\n%s", out)
	}
}

func TestServeRefusesBadSettings(t *testing.T) {
	dir := t.TempDir()
	_, err := run(t, map[string]string{"BERTH_LOG_LEVEL": "chatty"}, "serve", "--addr", "no-port", "--data-dir", dir, "--auth", "sometimes")
	if err == nil {
		t.Fatal("serve accepted bad settings")
	}
	for _, want := range []string{"addr:", "auth.mode:", "log.level:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
	_, err = run(t, map[string]string{"BERTH_REGISTRY_MAX_MANIFEST_BYTES": "many"}, "serve", "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "BERTH_REGISTRY_MAX_MANIFEST_BYTES") {
		t.Fatalf("bad environment value: %v", err)
	}
	_, err = run(t, nil, "serve", "--config", dir+"/missing.yaml")
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing config file: %v", err)
	}
}
