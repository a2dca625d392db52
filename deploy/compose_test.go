package deploy

import (
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

type composeFile struct {
	Services map[string]composeService `yaml:"services"`
	Volumes  map[string]any            `yaml:"volumes"`
}

type composeService struct {
	Image       string            `yaml:"image"`
	Build       *composeBuild     `yaml:"build"`
	Command     []string          `yaml:"command"`
	Environment map[string]string `yaml:"environment"`
	Volumes     []string          `yaml:"volumes"`
	Profiles    []string          `yaml:"profiles"`
	DependsOn   any               `yaml:"depends_on"`
	Healthcheck map[string]any    `yaml:"healthcheck"`
	StopGrace   string            `yaml:"stop_grace_period"`
}

type composeBuild struct {
	Context    string `yaml:"context"`
	Dockerfile string `yaml:"dockerfile"`
}

// loadCompose reads compose.yaml with env.example's values interpolated.
func loadCompose(t *testing.T) composeFile {
	t.Helper()
	raw, err := os.ReadFile("compose/compose.yaml")
	if err != nil {
		t.Fatal(err)
	}
	vars := readEnvFile(t, "compose/env.example")
	text, err := interpolate(string(raw), vars)
	if err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	var c composeFile
	if err := yaml.Unmarshal([]byte(text), &c); err != nil {
		t.Fatalf("compose.yaml: %v", err)
	}
	return c
}

// TestCompose: compose.yaml parses; every file it mounts exists and
// parses; every Berth service loads its configuration through Berth's
// loader with its BERTH_* variables; the replicas share PostgreSQL, one
// secretKey and S3, the image is built from deploy/Containerfile, and the
// load balancer, Prometheus and Grafana point at what exists.
func TestCompose(t *testing.T) {
	c := loadCompose(t)
	var replicas []string
	for name, s := range c.Services {
		for _, v := range s.Volumes {
			src, dst, _ := strings.Cut(v, ":")
			if !strings.HasPrefix(src, ".") {
				if _, ok := c.Volumes[src]; !ok {
					t.Errorf("service %s mounts volume %q, which is not declared", name, src)
				}
				continue
			}
			checkMountedFile(t, name, filepath.Join("compose", src), dst)
		}
		if s.Build == nil {
			continue
		}
		if s.Build.Dockerfile != "deploy/Containerfile" || filepath.Clean(filepath.Join("compose", s.Build.Context)) != ".." {
			t.Errorf("service %s builds %+v, not deploy/Containerfile from the repository root", name, *s.Build)
		}
		cfgFile := ""
		if i := slices.Index(s.Command, "--config"); i >= 0 && i+1 < len(s.Command) {
			cfgFile = hostPath(t, s, s.Command[i+1])
		} else {
			t.Fatalf("service %s runs %v without --config", name, s.Command)
		}
		content, err := os.ReadFile(cfgFile)
		if err != nil {
			t.Fatal(err)
		}
		checkEnvNames(t, "compose.yaml service "+name, strings.Join(mapKeys(s.Environment), " "))
		cfg := loadBerthConfig(t, name+": "+cfgFile, content, s.Environment)
		requireProduction(t, "compose service "+name, cfg)
		if g, err := time.ParseDuration(s.StopGrace); s.Command[0] == "serve" && (err != nil || g <= cfg.HTTP.ShutdownDelay+cfg.HTTP.ShutdownTimeout+10*time.Second) {
			t.Errorf("service %s: stop_grace_period %q does not cover its shutdown delay, drain and recording", name, s.StopGrace)
		}
		if s.Command[0] == "serve" {
			replicas = append(replicas, name)
			if cfg.Metrics.Addr == "" || !strings.HasSuffix(cfg.Metrics.Addr, ":9090") {
				t.Errorf("%s: metrics.addr %q: prometheus.yml scrapes port 9090", name, cfg.Metrics.Addr)
			}
		}
	}
	slices.Sort(replicas)
	if len(replicas) < 3 {
		t.Fatalf("berth replicas: %v, want 3", replicas)
	}
	// One secretKey, one database, one bucket for all.
	for _, r := range replicas[1:] {
		a, b := c.Services[replicas[0]].Environment, c.Services[r].Environment
		for _, k := range []string{"BERTH_SECRET_KEY", "BERTH_DATABASE_URL", "BERTH_STORAGE_S3_SECRET_KEY"} {
			if a[k] == "" || a[k] != b[k] {
				t.Errorf("%s differs between %s and %s", k, replicas[0], r)
			}
		}
	}

	lb, err := os.ReadFile("compose/haproxy.cfg")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"uri /readyz", "expect status 200"} {
		if !strings.Contains(string(lb), want) {
			t.Errorf("haproxy.cfg does not check readiness (%q)", want)
		}
	}
	if regexp.MustCompile(`(?m)^\s*option\s+http-buffer-request`).Match(lb) {
		t.Error("haproxy.cfg buffers request bodies: blob uploads must stream")
	}
	servers := regexp.MustCompile(`(?m)^\s*server\s+\S+\s+([\w-]+):5000\b`).FindAllStringSubmatch(string(lb), -1)
	var lbTargets []string
	for _, m := range servers {
		lbTargets = append(lbTargets, m[1])
	}
	slices.Sort(lbTargets)
	if !slices.Equal(lbTargets, replicas) {
		t.Errorf("haproxy.cfg balances %v, compose runs %v", lbTargets, replicas)
	}

	var prom struct {
		ScrapeConfigs []struct {
			StaticConfigs []struct {
				Targets []string `yaml:"targets"`
			} `yaml:"static_configs"`
		} `yaml:"scrape_configs"`
	}
	readYAML(t, "compose/prometheus.yml", &prom)
	var scraped []string
	for _, sc := range prom.ScrapeConfigs {
		for _, st := range sc.StaticConfigs {
			for _, target := range st.Targets {
				host, _, _ := net.SplitHostPort(target)
				scraped = append(scraped, host)
			}
		}
	}
	slices.Sort(scraped)
	if !slices.Equal(scraped, replicas) {
		t.Errorf("prometheus.yml scrapes %v, compose runs %v", scraped, replicas)
	}

	var providers struct {
		Providers []struct {
			Options struct {
				Path string `yaml:"path"`
			} `yaml:"options"`
		} `yaml:"providers"`
	}
	readYAML(t, "compose/grafana/dashboards.yaml", &providers)
	g := c.Services["grafana"]
	if len(providers.Providers) != 1 || !slices.Contains(g.Volumes, "../grafana/berth-dashboard.json:"+providers.Providers[0].Options.Path+"/berth-dashboard.json:ro") {
		t.Errorf("grafana does not mount the dashboard where its provider looks: %v, %+v", g.Volumes, providers)
	}

	// gen-env.sh writes the variables env.example documents.
	gen, err := os.ReadFile("compose/gen-env.sh")
	if err != nil {
		t.Fatal(err)
	}
	var generated []string
	for _, m := range regexp.MustCompile(`(?m)^([A-Z][A-Z0-9_]*)=`).FindAllStringSubmatch(string(gen), -1) {
		generated = append(generated, m[1])
	}
	example := mapKeys(readEnvFile(t, "compose/env.example"))
	slices.Sort(generated)
	if !slices.Equal(generated, example) {
		t.Errorf("gen-env.sh writes %v, env.example lists %v", generated, example)
	}
}

// hostPath maps a path inside a service's container to the mounted file.
func hostPath(t *testing.T, s composeService, inside string) string {
	t.Helper()
	for _, v := range s.Volumes {
		parts := strings.Split(v, ":")
		if len(parts) >= 2 && parts[1] == inside {
			return filepath.Join("compose", parts[0])
		}
	}
	t.Fatalf("%s is not mounted from a file of deploy/compose", inside)
	return ""
}

// checkMountedFile: the file exists and, by its kind, parses.
func checkMountedFile(t *testing.T, service, path, dst string) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Errorf("service %s mounts %s: %v", service, path, err)
		return
	}
	switch filepath.Ext(path) {
	case ".yaml", ".yml":
		var v any
		if err := yaml.Unmarshal(b, &v); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	case ".json":
		var v any
		if err := json.Unmarshal(b, &v); err != nil {
			t.Errorf("%s: %v", path, err)
		}
	default:
		if len(b) == 0 {
			t.Errorf("%s (mounted at %s) is empty", path, dst)
		}
	}
}

func readYAML(t *testing.T, path string, v any) {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(b, v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
}

func mapKeys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
