package deploy

import (
	"os"
	"path/filepath"
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
