package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func loadYAML(t *testing.T, content string) (Config, error) {
	t.Helper()
	file := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(file, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	c := Default()
	err := c.LoadFile(file)
	return c, err
}

// TestDurationZero: a duration written as a bare 0, as the README and
// docs/gc.md say to turn the time machine, retention, scheduled
// vulnerability updates and the graph's debounce off (and as Helm renders
// --set gc.timeMachine=0), loads as 0, in block and flow style; yaml.v3
// refused it ("cannot unmarshal !!int `0` into time.Duration").
func TestDurationZero(t *testing.T) {
	c, err := loadYAML(t, `
gc:
  timeMachine: 0
  retention:
    events: 0
    doneJobs: 0
    deadJobs: -0
    attempts: 0.0
    audit: 0
scan:
  vulndb: {updateInterval: 0, staleAfter: 48h}
graph:
  debounce: 0   # no debounce
http:
  shutdownDelay: 0
`)
	if err != nil {
		t.Fatal(err)
	}
	r := c.GC.Retention
	for name, d := range map[string]time.Duration{"gc.timeMachine": c.GC.TimeMachine, "gc.retention.events": r.Events, "gc.retention.doneJobs": r.DoneJobs,
		"gc.retention.deadJobs": r.DeadJobs, "gc.retention.attempts": r.Attempts, "gc.retention.audit": r.Audit,
		"scan.vulndb.updateInterval": c.Scan.VulnDB.UpdateInterval, "graph.debounce": c.Graph.Debounce, "http.shutdownDelay": c.HTTP.ShutdownDelay} {
		if d != 0 {
			t.Errorf("%s = %s, want 0", name, d)
		}
	}
	if c.Scan.VulnDB.StaleAfter != 48*time.Hour {
		t.Errorf("scan.vulndb.staleAfter = %s beside a 0 in the same flow mapping", c.Scan.VulnDB.StaleAfter)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
}

// TestDurationWithoutUnit: any other bare number given to a duration is
// refused, naming the setting and its line and saying to write a unit
// (30 could be seconds or minutes); numbers stay numbers for the settings
// that are numbers, and an unknown key is still refused with its line.
func TestDurationWithoutUnit(t *testing.T) {
	_, err := loadYAML(t, `
registry:
  maxManifestBytes: 8192
gc:
  delay: 30
  retention: {events: 1.5}
`)
	if err == nil {
		t.Fatal("gc.delay: 30 was accepted")
	}
	for _, want := range []string{"line 5: gc.delay: 30 has no unit", "line 6: gc.retention.events: 1.5 has no unit", "30s"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	c, err := loadYAML(t, "registry:\n  maxManifestBytes: 0\n  maxOpenUploads: 0\n")
	if err != nil || c.Registry.MaxManifestBytes != 0 || c.Registry.MaxOpenUploads != 0 {
		t.Fatalf("numeric settings given 0: %+v, %v", c.Registry, err)
	}
	_, err = loadYAML(t, "gc:\n  timeMachine: 0\n  timemachine: 1h\n")
	if err == nil || !strings.Contains(err.Error(), "line 3: field timemachine not found") {
		t.Fatalf("an unknown key beside a 0 duration: %v", err)
	}
}
