package config

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

// TestMapAndListSettingsReplace: a map or list setting from a later
// source (the --config file over BERTH_CONFIG_DEFAULTS's file, a BERTH_*
// variable over either) replaces the earlier value instead of being merged
// into it, so an operator can narrow the artifact allow-list, or clear it
// with {}. Before, the map was merged: a type the earlier source allowed
// stayed allowed.
func TestMapAndListSettingsReplace(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	both := write("both.yaml", `
ALLOWED_OCI_ARTIFACT_TYPES:
  application/vnd.a.config: ["application/vnd.a.layer"]
  application/vnd.b.config: ["*"]
notifications:
  allowedHosts: [private, loopback]
`)
	onlyA := map[string][]string{"application/vnd.a.config": {"application/vnd.a.layer"}}
	load := func(t *testing.T, env map[string]string, files ...string) Config {
		t.Helper()
		c := Default()
		for _, f := range files {
			if err := c.LoadFile(f); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
			t.Fatal(err)
		}
		if err := c.Validate(); err != nil {
			t.Fatal(err)
		}
		return c
	}

	t.Run("environment over file", func(t *testing.T) {
		c := load(t, map[string]string{
			"BERTH_ALLOWED_OCI_ARTIFACT_TYPES":  `{"application/vnd.a.config": ["application/vnd.a.layer"]}`,
			"BERTH_NOTIFICATIONS_ALLOWED_HOSTS": `[private]`,
		}, both)
		if !reflect.DeepEqual(c.AllowedArtifactTypes, onlyA) || !reflect.DeepEqual(c.Notifications.AllowedHosts, []string{"private"}) {
			t.Fatalf("allow-list %v, allowed hosts %v; want %v, [private]", c.AllowedArtifactTypes, c.Notifications.AllowedHosts, onlyA)
		}
	})
	t.Run("empty from the environment clears the file's", func(t *testing.T) {
		c := load(t, map[string]string{"BERTH_ALLOWED_OCI_ARTIFACT_TYPES": `{}`, "BERTH_NOTIFICATIONS_ALLOWED_HOSTS": `[]`}, both)
		if len(c.AllowedArtifactTypes) != 0 || len(c.Notifications.AllowedHosts) != 0 {
			t.Fatalf("allow-list %v, allowed hosts %v; want both empty", c.AllowedArtifactTypes, c.Notifications.AllowedHosts)
		}
		if got, def := c.ArtifactPolicy().Allowed, (&Config{}).ArtifactPolicy().Allowed; !reflect.DeepEqual(got, def) {
			t.Fatalf("policy %v, want the default list", got)
		}
	})
	t.Run("--config over the defaults file", func(t *testing.T) {
		narrow := write("narrow.yaml", `
ALLOWED_OCI_ARTIFACT_TYPES:
  application/vnd.a.config: ["application/vnd.a.layer"]
notifications:
  allowedHosts: [private]
`)
		c := load(t, nil, both, narrow)
		if !reflect.DeepEqual(c.AllowedArtifactTypes, onlyA) || !reflect.DeepEqual(c.Notifications.AllowedHosts, []string{"private"}) {
			t.Fatalf("allow-list %v, allowed hosts %v; want %v, [private]", c.AllowedArtifactTypes, c.Notifications.AllowedHosts, onlyA)
		}
	})
	t.Run("a file that does not name the setting keeps it", func(t *testing.T) {
		other := write("other.yaml", "log:\n  level: debug\n")
		c := load(t, nil, both, other)
		if len(c.AllowedArtifactTypes) != 2 || len(c.Notifications.AllowedHosts) != 2 || c.Log.Level != "debug" {
			t.Fatalf("allow-list %v, allowed hosts %v, log level %s", c.AllowedArtifactTypes, c.Notifications.AllowedHosts, c.Log.Level)
		}
	})
	t.Run("{} in --config clears the defaults file's", func(t *testing.T) {
		empty := write("empty.yaml", "ALLOWED_OCI_ARTIFACT_TYPES: {}\n")
		c := load(t, nil, both, empty)
		if len(c.AllowedArtifactTypes) != 0 {
			t.Fatalf("allow-list %v, want empty", c.AllowedArtifactTypes)
		}
	})
}
