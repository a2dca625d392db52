package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/config"
)

// TestImageDefaultsAreNotHidden: the file of defaults the image names
// (BERTH_CONFIG_DEFAULTS) is not under a directory the chart or compose
// mount over: every command reads it first, and fails without it (the
// chart mounts its ConfigMap at /etc/berth, which hid it there).
func TestImageDefaultsAreNotHidden(t *testing.T) {
	b, err := os.ReadFile("Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(config.DefaultsFileVariable + `=(\S+)`).FindStringSubmatch(string(b))
	if m == nil {
		t.Fatalf("the Containerfile sets no %s", config.DefaultsFileVariable)
	}
	defaults := m[1]
	if !strings.Contains(string(b), "COPY --from=build /out/defaults.yaml "+defaults) {
		t.Fatalf("the Containerfile does not copy the defaults to %s", defaults)
	}
	files, _ := filepath.Glob("helm/berth/templates/*.yaml")
	files = append(files, "compose/compose.yaml")
	mount := regexp.MustCompile(`mountPath: (\S+?)[,}\s]|:(/[^:\s"]+)(?::ro)?\s*$`)
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range strings.Split(string(text), "\n") {
			for _, mm := range mount.FindAllStringSubmatch(line, -1) {
				dir := mm[1] + mm[2]
				if dir != "" && (defaults == dir || strings.HasPrefix(defaults, strings.TrimSuffix(dir, "/")+"/")) {
					t.Errorf("%s mounts %s over the image's defaults %s", f, dir, defaults)
				}
			}
		}
	}
}
