package e2e

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestHelmChartRenders runs deploy/'s chart checks (TestHelmChart: helm lint
// and helm template, probes on /livez and /readyz, the ConfigMap's
// config.yaml and every BERTH_* variable through Berth's loader) with the
// helm this suite installed, so that they run wherever the suite runs even
// if `go test ./deploy/` found no helm of its own.
func TestHelmChartRenders(t *testing.T) {
	begin(t)
	helm := requireTool(t, "helm")
	root, err := moduleRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("go", "test", "-count=1", "-run", "^TestHelmChart$", "-v", "./deploy/")
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "BERTH_HELM="+helm)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("go test ./deploy/ -run TestHelmChart: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "--- PASS: TestHelmChart") {
		t.Fatalf("TestHelmChart did not pass (skipped?):\n%s", out)
	}
}
