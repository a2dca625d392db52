package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestEnvName(t *testing.T) {
	for path, want := range map[string]string{
		"addr":                             "BERTH_ADDR",
		"dataDir":                          "BERTH_DATA_DIR",
		"database.url":                     "BERTH_DATABASE_URL",
		"storage.filesystem.rootDirectory": "BERTH_STORAGE_FILESYSTEM_ROOT_DIRECTORY",
		"ALLOWED_OCI_ARTIFACT_TYPES":       "BERTH_ALLOWED_OCI_ARTIFACT_TYPES",
		"FEATURE_USER_INITIALIZE":          "BERTH_FEATURE_USER_INITIALIZE",
		"auth.tokenTTL":                    "BERTH_AUTH_TOKEN_TTL",
	} {
		if got := EnvName(path); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestLoadPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "berth.yaml")
	os.WriteFile(file, []byte(`
addr: 127.0.0.1:6000
dataDir: /var/lib/berth
registry:
  maxManifestBytes: 8192
ALLOWED_OCI_ARTIFACT_TYPES:
  application/vnd.example.config: ["*"]
`), 0o600)
	c := Default()
	if err := c.LoadFile(file); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"BERTH_ADDR": "127.0.0.1:7000", "BERTH_STORAGE_FILESYSTEM_FSYNC": "false", "BERTH_LOG_LEVEL": "debug",
		"BERTH_FEATURE_USER_INITIALIZE": "true", "BERTH_CREATE_PRIVATE_REPO_ON_PUSH": "false", "BERTH_AUTH_TOKEN_TTL": "10m"}
	if err := c.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Addr != "127.0.0.1:7000" || c.DataDir != "/var/lib/berth" || c.Registry.MaxManifestBytes != 8192 ||
		c.Storage.Filesystem.Fsync || c.Log.Level != "debug" || c.Auth.Mode != "token" || !c.FeatureUserInitialize ||
		c.CreatePrivateRepoOnPush || c.Auth.TokenTTL != 10*time.Minute {
		t.Fatalf("merged config = %+v", c)
	}
	if c.DatabaseURL() != "/var/lib/berth/berth.db" || c.StorageRoot() != "/var/lib/berth/storage" {
		t.Fatalf("derived paths: %s %s", c.DatabaseURL(), c.StorageRoot())
	}
	if p := c.ArtifactPolicy(); len(p.Allowed) != 1 {
		t.Fatalf("allow-list = %v", p.Allowed)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	typo := filepath.Join(dir, "typo.yaml")
	os.WriteFile(typo, []byte("adr: :5000\n"), 0o600)
	c := Default()
	if err := c.LoadFile(typo); err == nil || !strings.Contains(err.Error(), "adr") {
		t.Fatalf("unknown key: %v", err)
	}
	c = Default()
	err := c.LoadEnv(func(k string) (string, bool) {
		if k == "BERTH_REGISTRY_MAX_MANIFEST_BYTES" {
			return "lots", true
		}
		return "", false
	})
	if err == nil || !strings.Contains(err.Error(), "registry.maxManifestBytes") || !strings.Contains(err.Error(), "BERTH_REGISTRY_MAX_MANIFEST_BYTES") {
		t.Fatalf("bad env value: %v", err)
	}
}

func TestValidate(t *testing.T) {
	c := Default()
	c.Addr = "nowhere"
	c.Storage.Driver = "floppy"
	c.Auth.Mode = "maybe"
	c.Registry.MaxManifestBytes = 1
	c.Log.Level = "loud"
	c.Database.URL = "mysql://user:secret@host/db"
	c.AllowedArtifactTypes = map[string][]string{"a/b": nil}
	err := c.Validate()
	if err == nil {
		t.Fatal("Validate accepted a bad config")
	}
	for _, field := range []string{"addr:", "storage.driver:", "auth.mode:", "registry.maxManifestBytes:", "log.level:", "database.url:", "ALLOWED_OCI_ARTIFACT_TYPES:"} {
		if !strings.Contains(err.Error(), field) {
			t.Errorf("error does not name %s: %v", field, err)
		}
	}
	if strings.Contains(err.Error(), "secret") {
		t.Errorf("error leaks a password: %v", err)
	}
	d := Default()
	if err := d.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
}

func TestMetricsSettings(t *testing.T) {
	c := Default()
	if !c.Metrics.Enabled || c.Metrics.Addr != "" || c.Metrics.Public || c.Metrics.Pprof {
		t.Fatalf("metrics defaults = %+v", c.Metrics)
	}
	env := map[string]string{"BERTH_METRICS_ENABLED": "true", "BERTH_METRICS_ADDR": "127.0.0.1:9090", "BERTH_METRICS_PUBLIC": "false", "BERTH_METRICS_PPROF": "true"}
	if err := c.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || c.Metrics.Addr != "127.0.0.1:9090" || !c.Metrics.Pprof {
		t.Fatalf("metrics from env: %+v %v", c.Metrics, err)
	}
	for _, bad := range []Metrics{{Enabled: true, Addr: "nowhere"}, {Enabled: true, Addr: ":5000"}, {Enabled: true, Addr: "127.0.0.1:9090", Public: true}, {Enabled: true, Pprof: true}} {
		c := Default()
		c.Metrics = bad
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "metrics.") {
			t.Errorf("Validate(%+v) = %v", bad, err)
		}
	}
}

func TestRuntimeSettings(t *testing.T) {
	c := Default()
	if c.Runtime.GCHeapFloorBytes != 32<<20 {
		t.Fatalf("runtime.gcHeapFloorBytes default = %d, want 32 MiB", c.Runtime.GCHeapFloorBytes)
	}
	env := map[string]string{"BERTH_RUNTIME_GC_HEAP_FLOOR_BYTES": "0"}
	if err := c.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || c.Runtime.GCHeapFloorBytes != 0 {
		t.Fatalf("runtime from env: %+v %v", c.Runtime, err)
	}
	if c := Default(); c.Runtime.ExtraProcs != 1 {
		t.Fatalf("runtime.extraProcs default = %d, want 1", c.Runtime.ExtraProcs)
	}
	env["BERTH_RUNTIME_EXTRA_PROCS"] = "0"
	if c := Default(); c.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }) != nil || c.Validate() != nil || c.Runtime.ExtraProcs != 0 {
		t.Fatalf("runtime.extraProcs from env: %+v", c.Runtime)
	}
	for _, bad := range []int{-1, 65} {
		c := Default()
		c.Runtime.ExtraProcs = bad
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "runtime.extraProcs") {
			t.Errorf("Validate(extraProcs %d) = %v", bad, err)
		}
	}
	for _, bad := range []int64{-1, 64<<30 + 1} {
		c := Default()
		c.Runtime.GCHeapFloorBytes = bad
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "runtime.gcHeapFloorBytes") {
			t.Errorf("Validate(gcHeapFloorBytes %d) = %v", bad, err)
		}
	}
}

// TestValidateSecretKey: a secretKey that is not 32 bytes of base64 is
// refused by Validate (before the server opens and migrates the
// database), without the key in the message.
func TestValidateSecretKey(t *testing.T) {
	c := Default()
	c.SecretKey = "short-key-value"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "secretKey:") || strings.Contains(err.Error(), "short-key-value") {
		t.Fatalf("a bad secretKey: %v", err)
	}
	c.SecretKey = "MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" // 32 bytes
	if err := c.Validate(); err != nil {
		t.Fatalf("a good secretKey: %v", err)
	}
}

// TestValidateHidesSecrets: a refused setting is named with its value,
// less any password or token in it: a key=value connection string's
// password, a URL's user password and its query.
func TestValidateHidesSecrets(t *testing.T) {
	c := Default()
	c.Database.URL = "host=db user=berth password=s3cret-pw dbname=berth"
	c.Scan.VulnDB.BaseURL = "https://osv.example.com/all?token=t0ken-value"
	c.Scan.VulnDB.CPEMappingURL = "https://user:p4ss@cpe.example.com/map.json?x=1"
	err := c.Validate()
	if err == nil || !strings.Contains(err.Error(), "database.url:") || !strings.Contains(err.Error(), "scan.vulndb.baseURL:") || !strings.Contains(err.Error(), "scan.vulndb.cpeMappingURL:") {
		t.Fatalf("Validate: %v", err)
	}
	for _, secret := range []string{"s3cret-pw", "t0ken-value", "p4ss"} {
		if strings.Contains(err.Error(), secret) {
			t.Errorf("the error shows %q: %v", secret, err)
		}
	}
}

// TestValidateMetricsListener: a metrics.addr on the main port (spelled
// differently: ":5000" against "0.0.0.0:5000") is refused by Validate;
// before, it failed at start after the migrations and workers. (One set
// while metrics are off is allowed, and logged: turning metrics off in
// the chart keeps its metrics.addr.)
func TestValidateMetricsListener(t *testing.T) {
	for _, c := range []struct {
		addr, metrics string
		enabled       bool
		want          string
	}{
		{"0.0.0.0:5000", ":5000", true, "port 5000"},
		{":5000", "127.0.0.1:5000", true, "port 5000"},
		{":5000", "127.0.0.1:5000", false, "port 5000"},
	} {
		cfg := Default()
		cfg.Addr, cfg.Metrics.Addr, cfg.Metrics.Enabled = c.addr, c.metrics, c.enabled
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("addr %s, metrics.addr %s, enabled %v: %v", c.addr, c.metrics, c.enabled, err)
		}
	}
	cfg := Default()
	cfg.Addr, cfg.Metrics.Addr = "127.0.0.1:5000", "127.0.0.2:5000"
	if err := cfg.Validate(); err != nil {
		t.Errorf("the same port on two addresses: %v", err)
	}
}

func TestRedactURL(t *testing.T) {
	for in, want := range map[string]string{
		"postgres://berth:s3cret@db:5432/berth?sslmode=disable": "postgres://REDACTED@db:5432/berth?REDACTED",
		"https://t0ken@mirror.example/osv":                      "https://REDACTED@mirror.example/osv",
		"https://u:p?w#d@mirror.example/osv":                    "https://REDACTED@mirror.example/osv",
		"https://mirror.example/osv":                            "https://mirror.example/osv",
		"host=db user=berth password='a b' dbname=x":            "host=db user=berth password=REDACTED dbname=x",
	} {
		if got := redactURL(in); got != want {
			t.Errorf("redactURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestValidateTokenTTL: auth.tokenTTL is 60s to 24h. Docker's token
// specification asks for expires_in of at least 60, and the docker client
// takes a token to live 60 seconds: a shorter one expired under clients
// that still used it (30s was accepted before).
func TestValidateTokenTTL(t *testing.T) {
	for ttl, ok := range map[time.Duration]bool{30 * time.Second: false, 59 * time.Second: false, time.Minute: true,
		5 * time.Minute: true, 24 * time.Hour: true, 24*time.Hour + time.Second: false} {
		c := Default()
		c.Auth.TokenTTL = ttl
		err := c.Validate()
		if ok && err != nil || !ok && (err == nil || !strings.Contains(err.Error(), "auth.tokenTTL") || !strings.Contains(err.Error(), "60s..24h")) {
			t.Errorf("auth.tokenTTL %s: %v", ttl, err)
		}
	}
}
