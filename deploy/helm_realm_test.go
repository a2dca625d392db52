package deploy

import (
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestHelmDefaultRealmIsTheClientsHost: the chart's defaults (no Ingress)
// put no example.com placeholder into Berth's configuration, so the
// token realm comes from the host each client used and a
// `kubectl port-forward` + `docker login localhost:5000`, as NOTES.txt
// says, logs in. Before, values.yaml set externalURL to
// https://registry.example.com, every challenge sent clients there and the
// web UI showed pull commands for it. NOTES.txt tells an install with an
// Ingress to set config.externalURL.
func TestHelmDefaultRealmIsTheClientsHost(t *testing.T) {
	var values struct {
		Config  map[string]any `yaml:"config"`
		Ingress struct {
			Enabled bool `yaml:"enabled"`
		} `yaml:"ingress"`
	}
	readYAML(t, "helm/berth/values.yaml", &values)
	if values.Ingress.Enabled {
		t.Fatal("values.yaml: ingress.enabled is on by default; this test checks the install without one")
	}
	b, err := yaml.Marshal(values.Config)
	if err != nil {
		t.Fatal(err)
	}
	checkNoPlaceholderRealm(t, "values.yaml config", b)

	notes, err := os.ReadFile("helm/berth/templates/NOTES.txt")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(notes), "config.externalURL") {
		t.Error("NOTES.txt does not say to set config.externalURL for an Ingress or a public host")
	}

	t.Run("rendered", func(t *testing.T) {
		helm := helmBinary(t)
		objs := helmTemplate(t, helm, requiredValues...)
		checkNoPlaceholderRealm(t, "rendered ConfigMap config.yaml", []byte(objs["ConfigMap/reg-berth"].Data["config.yaml"]))

		own := helmTemplate(t, helm, append([]string{"--set", "ingress.enabled=true", "--set", "ingress.hosts[0]=reg.acme.io",
			"--set", "config.externalURL=https://reg.acme.io"}, requiredValues...)...)
		cfg := loadBerthConfig(t, "rendered with config.externalURL", []byte(own["ConfigMap/reg-berth"].Data["config.yaml"]), exampleSecretEnv)
		if realm := cfg.TokenRealm(); realm != "https://reg.acme.io/v2/auth" {
			t.Errorf("with config.externalURL=https://reg.acme.io the token realm is %q", realm)
		}
	})
}

// checkNoPlaceholderRealm: the configuration content names no example.com
// host, loads, and announces no fixed token realm.
func checkNoPlaceholderRealm(t *testing.T, where string, content []byte) {
	t.Helper()
	if strings.Contains(string(content), "example.com") {
		t.Errorf("%s names an example.com placeholder:\n%s", where, content)
	}
	cfg := loadBerthConfig(t, where, content, exampleSecretEnv)
	if cfg.ExternalURL != "" || cfg.TokenRealm() != "" {
		t.Errorf("%s: externalURL %q, token realm %q; want both empty (the realm follows the client's host)", where, cfg.ExternalURL, cfg.TokenRealm())
	}
}
