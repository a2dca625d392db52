package config

import (
	"strings"
	"testing"
)

// TestCheckEnv: a BERTH_* variable that names no setting is refused, as an
// unknown key of the file is, with the setting it likely misspells; the
// settings' own variables, the project's other BERTH_* variables and
// other programs' variables pass. Before, a misspelled variable was
// ignored without a word.
func TestCheckEnv(t *testing.T) {
	ok := []string{
		"BERTH_EXTERNAL_URL=https://registry.example.com", "BERTH_STORAGE_S3_BUCKET=b", "BERTH_ALLOWED_OCI_ARTIFACT_TYPES={}",
		"BERTH_CONFIG_DEFAULTS=/etc/berth/defaults.yaml", "BERTH_PASSWORD=x", "BERTH_TEST_POSTGRES_DSN=postgres://x",
		"BERTH_E2E_TOOLS=/tmp/tools", "BERTH_REPOSITORY=team/app", "BERTH_BASE_NEW_DIGEST=sha256:0", "HOME=/root", "PATH=/bin",
		"NOT_BERTH_X=1", "BERTH_EXTERNAL_URL=twice",
	}
	if err := CheckEnv(ok); err != nil {
		t.Fatalf("known variables: %v", err)
	}
	for _, p := range Paths() {
		if err := CheckEnv([]string{EnvName(p) + "=v"}); err != nil {
			t.Errorf("the variable of %s: %v", p, err)
		}
	}
	for name, want := range map[string]string{
		"BERTH_EXTERNALURL":         "did you mean BERTH_EXTERNAL_URL?",
		"BERTH_DATABASE_URI":        "did you mean BERTH_DATABASE_URL?",
		"BERTH_LOGLEVEL":            "did you mean BERTH_LOG_LEVEL?",
		"BERTH_S3_BUCKET":           "did you mean BERTH_STORAGE_S3_BUCKET?",
		"BERTH_S3_ACCESS_KEY":       "did you mean BERTH_STORAGE_S3_ACCESS_KEY?",
		"BERTH_TOKEN_TTL":           "did you mean BERTH_AUTH_TOKEN_TTL?",
		"BERTH_STORAGE_S3_REDIRECT": "names a section, not a setting: its settings are BERTH_STORAGE_S3_REDIRECT_ENABLED, ",
		"BERTH_FROBNICATE":          "BERTH_FROBNICATE is not a setting (a setting's variable is BERTH_ and its path",
	} {
		err := CheckEnv([]string{"HOME=/root", name + "=x"})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want %q", name, err, want)
		}
	}
	err := CheckEnv([]string{"BERTH_LOGLEVEL=debug", "BERTH_ADDR=:5000", "BERTH_EXTERNALURL=x"})
	if err == nil || strings.Count(err.Error(), "is not a setting") != 2 || strings.Index(err.Error(), "BERTH_EXTERNALURL") > strings.Index(err.Error(), "BERTH_LOGLEVEL") {
		t.Fatalf("two unknown variables: %v", err)
	}
}

// TestServiceLinksAreNoSettings: the variables Kubernetes gives a pod for
// each Service of its namespace pass, so a release (and Service) named
// berth or berth-metrics starts; no setting's variable looks like one.
// Before, BERTH_SERVICE_HOST and the others were refused and the pod did
// not start.
func TestServiceLinksAreNoSettings(t *testing.T) {
	links := []string{
		"BERTH_SERVICE_HOST=10.0.0.1", "BERTH_SERVICE_PORT=5000", "BERTH_SERVICE_PORT_HTTP=5000",
		"BERTH_PORT=tcp://10.0.0.1:5000", "BERTH_PORT_5000_TCP=tcp://10.0.0.1:5000",
		"BERTH_PORT_5000_TCP_PROTO=tcp", "BERTH_PORT_5000_TCP_PORT=5000", "BERTH_PORT_5000_TCP_ADDR=10.0.0.1",
		"BERTH_METRICS_SERVICE_HOST=10.0.0.2", "BERTH_METRICS_PORT_9090_TCP_ADDR=10.0.0.2", "BERTH_POSTGRESQL_PORT=tcp://10.0.0.3:5432",
	}
	if err := CheckEnv(links); err != nil {
		t.Fatalf("service links: %v", err)
	}
	for _, p := range Paths() {
		if n := EnvName(p); serviceLink.MatchString(n) {
			t.Errorf("the variable of %s, %s, looks like a service link and would not be checked", p, n)
		}
	}
	if err := CheckEnv([]string{"BERTH_PORTS=5000"}); err == nil {
		t.Fatal("BERTH_PORTS, no service link, passed")
	}
}
