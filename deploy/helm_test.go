package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"testing"

	"go.yaml.in/yaml/v3"
)

// exampleSecretEnv is what the chart's Secret gives every replica, with
// example values.
var exampleSecretEnv = map[string]string{
	"BERTH_SECRET_KEY":            "ZXhhbXBsZS1rZXktZG8tbm90LXVzZS1pdC1hbnl3aGU=",
	"BERTH_DATABASE_URL":          "postgres://berth:example@postgres.example:5432/berth?sslmode=require",
	"BERTH_STORAGE_S3_ACCESS_KEY": "example-access-key",
	"BERTH_STORAGE_S3_SECRET_KEY": "example-secret-key",
}

// TestHelmValues checks the chart without helm (test/e2e renders it with
// helm): the default `config` of values.yaml, which the ConfigMap holds as
// config.yaml, loads through Berth's loader with the Secret's variables,
// and every BERTH_* variable the templates and values set is a setting.
func TestHelmValues(t *testing.T) {
	var values struct {
		Config map[string]any `yaml:"config"`
	}
	readYAML(t, "helm/berth/values.yaml", &values)
	b, err := yaml.Marshal(values.Config)
	if err != nil {
		t.Fatal(err)
	}
	cfg := loadBerthConfig(t, "values.yaml config", b, exampleSecretEnv)
	requireProduction(t, "values.yaml config", cfg)
	if cfg.Metrics.Addr == "" {
		t.Error("values.yaml: metrics.addr is empty: the ServiceMonitor scrapes the metrics port without credentials")
	}
	// An install that sets only its own address (as docs/deployment.md
	// says) announces its own token endpoint, not the example's.
	values.Config["externalURL"] = "https://reg.acme.io/"
	if b, err = yaml.Marshal(values.Config); err != nil {
		t.Fatal(err)
	}
	own := loadBerthConfig(t, "values.yaml config with externalURL set", b, exampleSecretEnv)
	if realm := own.TokenRealm(); realm != "https://reg.acme.io/v2/auth" {
		t.Errorf("values.yaml with config.externalURL=https://reg.acme.io/: the token realm is %q, want https://reg.acme.io/v2/auth", realm)
	}

	files, err := filepath.Glob("helm/berth/templates/*")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, "helm/berth/values.yaml")
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		checkEnvNames(t, f, string(b))
	}
}

// TestDeploymentDoc: the BERTH_* variables docs/deployment.md names are
// settings, and the files it links to exist.
func TestDeploymentDoc(t *testing.T) {
	b, err := os.ReadFile("../docs/deployment.md")
	if err != nil {
		t.Fatal(err)
	}
	checkEnvNames(t, "docs/deployment.md", string(b))
	for _, m := range regexp.MustCompile(`\]\((\.\./[^)#]+)`).FindAllStringSubmatch(string(b), -1) {
		if _, err := os.Stat(filepath.Join("../docs", m[1])); err != nil {
			t.Errorf("docs/deployment.md links to %s: %v", m[1], err)
		}
	}
}
