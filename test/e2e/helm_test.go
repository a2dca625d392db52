package e2e

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// TestHelmChart pushes charts with helm (which sends manifests without a
// mediaType field), pulls them back byte for byte and reads them with helm
// show.
func TestHelmChart(t *testing.T) {
	begin(t)
	requireTool(t, "helm")
	work := t.TempDir()
	repo := uniqueRepo(t, "charts")
	base := "oci://" + registryHost + "/" + repo
	mustRun(t, opts{Dir: work}, "helm", "create", "mychart")
	mustRun(t, opts{Dir: work}, "helm", "package", "mychart")
	mustRun(t, opts{Dir: work}, "helm", "package", "mychart", "--version", "0.2.0")
	chart := filepath.Join(work, "mychart-0.1.0.tgz")
	pushed, err := os.ReadFile(chart)
	if err != nil {
		t.Fatal(err)
	}

	r := tryRun(t, opts{Dir: work}, "helm", "push", chart, base, "--plain-http")
	if r.Err != nil {
		t.Fatalf("helm push: %v", r.Err)
	}
	// helm prints "Pushed: ..." and "Digest: sha256:..." on stderr.
	m := regexp.MustCompile(`Digest: (sha256:[0-9a-f]{64})`).FindStringSubmatch(r.Stdout + r.Stderr)
	if m == nil {
		t.Fatalf("helm push printed no digest:\n%s%s", r.Stdout, r.Stderr)
	}
	dig := m[1]
	mustRun(t, opts{Dir: work}, "helm", "push", filepath.Join(work, "mychart-0.2.0.tgz"), base, "--plain-http")

	// The manifest as the registry serves it.
	chartRepo := repo + "/mychart"
	body := requireManifest(t, chartRepo, dig, mtOCIManifest)
	if got := getManifest(t, chartRepo, "0.1.0"); sha256Digest(got.Body) != dig {
		t.Fatalf("tag 0.1.0 is not the pushed manifest %s: %s", dig, got)
	}
	var man v1.Manifest
	if err := json.Unmarshal(body, &man); err != nil {
		t.Fatal(err)
	}
	if man.Config.MediaType != "application/vnd.cncf.helm.config.v1+json" || len(man.Layers) != 1 ||
		man.Layers[0].MediaType != "application/vnd.cncf.helm.chart.content.v1.tar+gzip" ||
		man.Layers[0].Digest.String() != sha256Digest(pushed) {
		t.Fatalf("chart manifest: %s; want a helm config and one chart layer %s", body, sha256Digest(pushed))
	}
	tags := tagList(t, chartRepo)
	sort.Strings(tags)
	if !slices.Equal(tags, []string{"0.1.0", "0.2.0"}) {
		t.Fatalf("tags of %s: %v, want [0.1.0 0.2.0]", chartRepo, tags)
	}

	// Pull gives back the very bytes that were pushed.
	out := mkdir(t, filepath.Join(work, "pulled"))
	pr := tryRun(t, opts{Dir: work}, "helm", "pull", base+"/mychart", "--version", "0.1.0", "--plain-http", "-d", out)
	if pr.Err != nil {
		t.Fatalf("helm pull: %v", pr.Err)
	}
	if !strings.Contains(pr.Stdout+pr.Stderr, "Digest: "+dig) {
		t.Fatalf("helm pull did not report the pushed digest %s:\n%s%s", dig, pr.Stdout, pr.Stderr)
	}
	got, err := os.ReadFile(filepath.Join(out, "mychart-0.1.0.tgz"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, pushed) {
		t.Fatalf("pulled chart differs: %d bytes %s, pushed %d bytes %s", len(got), sha256Digest(got), len(pushed), sha256Digest(pushed))
	}
	// Without --version helm picks the highest semver tag from the tag list.
	latest := mkdir(t, filepath.Join(work, "latest"))
	mustRun(t, opts{Dir: work}, "helm", "pull", base+"/mychart", "--plain-http", "-d", latest)
	if _, err := os.Stat(filepath.Join(latest, "mychart-0.2.0.tgz")); err != nil {
		t.Fatalf("helm pull without --version did not fetch 0.2.0: %v", err)
	}

	show := mustRun(t, opts{Dir: work}, "helm", "show", "chart", base+"/mychart", "--version", "0.1.0", "--plain-http")
	if !strings.Contains(show, "name: mychart") || !strings.Contains(show, "version: 0.1.0") {
		t.Fatalf("helm show chart:\n%s", show)
	}
	tmpl := mustRun(t, opts{Dir: work}, "helm", "template", "rel", base+"/mychart", "--version", "0.2.0", "--plain-http")
	if !strings.Contains(tmpl, "kind: Deployment") || !strings.Contains(tmpl, "helm.sh/chart: mychart-0.2.0") {
		t.Fatalf("helm template from the registry:\n%s", tmpl)
	}
}

func mkdir(t *testing.T, dir string) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	return dir
}
