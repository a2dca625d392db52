package deploy

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
)

// envPaths maps every BERTH_* variable Berth reads to its setting.
func envPaths() map[string]string {
	m := map[string]string{}
	for _, p := range config.Paths() {
		m[config.EnvName(p)] = p
	}
	m[config.DefaultsFileVariable] = "(a file of defaults)"
	return m
}

var berthVar = regexp.MustCompile(`\bBERTH_[A-Z0-9_]+\b`)

// checkEnvNames reports every BERTH_* name in text that is not a setting.
// Names that are not settings but legitimately appear (the test suite's
// own variables) are in except.
func checkEnvNames(t *testing.T, where, text string, except ...string) {
	t.Helper()
	known := envPaths()
	seen := map[string]bool{}
	for _, name := range berthVar.FindAllString(text, -1) {
		if seen[name] || slices.Contains(except, name) {
			continue
		}
		seen[name] = true
		if _, ok := known[name]; !ok {
			t.Errorf("%s: %s is not a Berth setting (config.EnvName of no field of config.Config)", where, name)
		}
	}
}

// loadBerthConfig loads a configuration file's content the way `berth
// serve --config FILE` does, with env as the environment: defaults, the
// file (unknown keys refused), BERTH_* variables, Validate.
func loadBerthConfig(t *testing.T, where string, content []byte, env map[string]string) config.Config {
	t.Helper()
	file := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(file, content, 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	if err := cfg.LoadFile(file); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	lookup := func(name string) (string, bool) {
		v, ok := env[name]
		return v, ok
	}
	if err := cfg.LoadEnv(lookup); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	if err := cfg.Validate(); err != nil {
		t.Fatalf("%s: %v", where, err)
	}
	return cfg
}

// requireProduction checks what every replica of a multi-replica setup
// needs: PostgreSQL and one valid shared secretKey.
func requireProduction(t *testing.T, where string, cfg config.Config) {
	t.Helper()
	if !strings.HasPrefix(cfg.Database.URL, "postgres://") {
		t.Errorf("%s: database.url %q is not PostgreSQL", where, cfg.Database.URL)
	}
	if cfg.HTTP.ShutdownDelay < 5*time.Second {
		t.Errorf("%s: http.shutdownDelay %s: a replica stopping for an update closes its port while the load balancer still sends it requests", where, cfg.HTTP.ShutdownDelay)
	}
	if cfg.SecretKey == "" {
		t.Errorf("%s: no secretKey: replicas would each generate their own", where)
	} else if _, err := auth.LoadOrCreateKey(cfg.SecretKey, ""); err != nil {
		t.Errorf("%s: %v", where, err)
	}
}

// readEnvFile reads KEY=VALUE lines (comments and blanks skipped).
func readEnvFile(t *testing.T, path string) map[string]string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	m := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			t.Fatalf("%s: %q is not KEY=VALUE", path, line)
		}
		m[k] = v
	}
	return m
}

var composeVar = regexp.MustCompile(`\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}`)

// interpolate applies compose's ${VAR}, ${VAR:-default} and
// ${VAR:?message} with vars, and $$ as a literal $.
func interpolate(s string, vars map[string]string) (string, error) {
	var errs []string
	out := composeVar.ReplaceAllStringFunc(strings.ReplaceAll(s, "$$", "\x00"), func(m string) string {
		g := composeVar.FindStringSubmatch(m)
		v, ok := vars[g[1]]
		switch {
		case ok && v != "":
			return v
		case strings.HasSuffix(g[2], "-"):
			return g[3]
		case strings.HasSuffix(g[2], "?"):
			errs = append(errs, fmt.Sprintf("%s is required (%s) and not in env.example", g[1], g[3]))
		}
		return v
	})
	if len(errs) > 0 {
		sort.Strings(errs)
		return "", fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return strings.ReplaceAll(out, "\x00", "$"), nil
}
