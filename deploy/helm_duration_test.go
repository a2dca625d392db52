package deploy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/config"
)

// TestHelmDurationZero: `--set config.gc.timeMachine=0` (and the other
// settings the documentation turns off with 0) renders a bare 0 into the
// ConfigMap, which Berth loads as 0; before, the replicas refused it at
// start ("cannot unmarshal !!int `0` into time.Duration"). A bare number
// other than 0 stops them with the setting's name.
func TestHelmDurationZero(t *testing.T) {
	helm := helmBinary(t)
	objs := helmTemplate(t, helm, append([]string{"--set", "config.gc.timeMachine=0", "--set", "config.gc.retention.events=0",
		"--set", "config.graph.debounce=0", "--set", "config.scan.vulndb.updateInterval=0"}, requiredValues...)...)
	rendered := objs["ConfigMap/reg-berth"].Data["config.yaml"]
	if !strings.Contains(rendered, "timeMachine: 0\n") {
		t.Fatalf("the ConfigMap does not hold a bare 0:\n%s", rendered)
	}
	cfg := loadBerthConfig(t, "ConfigMap config.yaml", []byte(rendered), exampleSecretEnv)
	if cfg.GC.TimeMachine != 0 || cfg.GC.Retention.Events != 0 || cfg.Graph.Debounce != 0 || cfg.Scan.VulnDB.UpdateInterval != 0 {
		t.Errorf("loaded %s, %s, %s, %s; want 0 each", cfg.GC.TimeMachine, cfg.GC.Retention.Events, cfg.Graph.Debounce, cfg.Scan.VulnDB.UpdateInterval)
	}

	objs = helmTemplate(t, helm, append([]string{"--set", "config.gc.delay=30"}, requiredValues...)...)
	file := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(file, []byte(objs["ConfigMap/reg-berth"].Data["config.yaml"]), 0o600); err != nil {
		t.Fatal(err)
	}
	c := config.Default()
	if err := c.LoadFile(file); err == nil || !strings.Contains(err.Error(), "gc.delay: 30 has no unit") {
		t.Fatalf("gc.delay rendered as a bare 30: %v", err)
	}
}
