package deploy

import (
	"net/url"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestComposeRealmIsTheClientsHost: the compose replicas, with .env as
// env.example or gen-env.sh writes it, announce no fixed token realm: it
// is taken from the host name each client used, which HAProxy passes on.
// Before, BERTH_EXTERNAL_URL defaulted to http://localhost:5000, and a
// docker login from any other machine was sent to its own localhost.
func TestComposeRealmIsTheClientsHost(t *testing.T) {
	raw, err := os.ReadFile("compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	envs := map[string]map[string]string{"env.example": readEnvFile(t, "compose/env.example")}
	if _, err := exec.LookPath("openssl"); err != nil {
		t.Log("gen-env.sh not run: openssl is not installed")
	} else {
		out, err := exec.Command("sh", "compose/gen-env.sh").Output()
		if err != nil {
			t.Fatalf("gen-env.sh: %v", err)
		}
		gen := map[string]string{}
		for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			k, v, _ := strings.Cut(line, "=")
			gen[k] = v
		}
		envs["gen-env.sh"] = gen
	}
	for source, vars := range envs {
		text, err := interpolate(string(raw), vars)
		if err != nil {
			t.Fatalf("compose.yaml with %s: %v", source, err)
		}
		var c composeFile
		if err := yaml.Unmarshal([]byte(text), &c); err != nil {
			t.Fatalf("compose.yaml with %s: %v", source, err)
		}
		for name, s := range c.Services {
			if len(s.Command) == 0 || s.Command[0] != "serve" {
				continue
			}
			i := slices.Index(s.Command, "--config")
			content, err := os.ReadFile(hostPath(t, s, s.Command[i+1]))
			if err != nil {
				t.Fatal(err)
			}
			cfg := loadBerthConfig(t, name, content, s.Environment)
			if realm := cfg.TokenRealm(); realm != "" {
				u, err := url.Parse(realm)
				if err != nil || u.Hostname() == "localhost" || strings.HasPrefix(u.Hostname(), "127.") || u.Hostname() == "::1" {
					t.Errorf("%s with %s: the token realm is %s, which remote clients cannot reach", name, source, realm)
				}
			}
		}
	}
}
