package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/server"
)

type dashboard struct {
	Panels []struct {
		Title   string `json:"title"`
		Targets []struct {
			Expr string `json:"expr"`
		} `json:"targets"`
	} `json:"panels"`
	Templating struct {
		List []struct {
			Definition string `json:"definition"`
		} `json:"list"`
	} `json:"templating"`
}

// metricName matches the metric names Berth exports inside PromQL (every
// one starts with registry_, go_ or process_).
var metricName = regexp.MustCompile(`\b(?:registry|go|process)_[a-z0-9_]+\b`)

// dashboardMetrics lists the metric names the dashboard's queries use,
// with the panels that use each.
func dashboardMetrics(t *testing.T) map[string][]string {
	t.Helper()
	b, err := os.ReadFile("grafana/berth-dashboard.json")
	if err != nil {
		t.Fatal(err)
	}
	var d dashboard
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatalf("berth-dashboard.json: %v", err)
	}
	used := map[string][]string{}
	add := func(where, expr string) {
		for _, n := range metricName.FindAllString(expr, -1) {
			used[n] = append(used[n], where)
		}
	}
	for _, p := range d.Panels {
		for _, tg := range p.Targets {
			add(p.Title, tg.Expr)
		}
	}
	for _, v := range d.Templating.List {
		add("variable", v.Definition)
	}
	if len(used) < 20 {
		t.Fatalf("the dashboard uses only %d metrics: %v", len(used), used)
	}
	return used
}

const password = "deploy-test-password"

// TestDashboardMetrics: every metric the Grafana dashboard queries is in a
// scrape of a real server after a small workload (a push, a pull, a scan,
// a webhook delivery, a GC pass), so that no panel says "no data" because
// of a misspelled or invented name.
func TestDashboardMetrics(t *testing.T) {
	used := dashboardMetrics(t)
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusNoContent) }))
	defer hook.Close()

	cfg := config.Default()
	cfg.DataDir = t.TempDir()
	cfg.Storage.Filesystem.Fsync = false
	cfg.Log.Level = "error"
	cfg.Metrics.Public = true
	cfg.GC.Interval = time.Second
	cfg.Notifications.AllowedHosts = []string{"loopback"}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db, err := meta.Open(ctx, cfg.DatabaseURL())
	if err != nil {
		t.Fatal(err)
	}
	hash, _ := auth.HashPassword(password)
	if _, err := db.Users().CreateUser(ctx, meta.User{Username: "root", SecretHash: hash, Superuser: true}); err != nil {
		t.Fatal(err)
	}
	db.Close()
	srv, err := server.New(ctx, cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("serve: %v", err)
		}
		srv.Close()
	}()
	host := ln.Addr().String()

	push := func(tag string) {
		img, err := random.Image(16<<10, 1)
		if err != nil {
			t.Fatal(err)
		}
		ref, _ := name.ParseReference(host+"/root/app:"+tag, name.Insecure)
		if err := remote.Write(ref, img, remote.WithAuth(&authn.Basic{Username: "root", Password: password})); err != nil {
			t.Fatal(err)
		}
		if _, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "root", Password: password})); err != nil {
			t.Fatal(err)
		}
	}
	push("v1")
	body := fmt.Sprintf(`{"event":"repo_push","method":"webhook","title":"deploy test","config":{"url":%q},"eventConfig":{}}`, hook.URL)
	req, _ := http.NewRequest("POST", "http://"+host+"/api/v1/repository/root/app/notification/", strings.NewReader(body))
	req.SetBasicAuth("root", password)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("create notification: %s", resp.Status)
	}
	push("v2")

	// The scan, the delivery and the GC pass happen in the background:
	// scrape until every name is there (or give up and name the missing).
	var missing []string
	for deadline := time.Now().Add(2 * time.Minute); ; {
		exported := scrapeNames(t, "http://"+host+"/metrics")
		missing = missing[:0]
		for n := range used {
			if !exported[n] {
				missing = append(missing, n)
			}
		}
		if len(missing) == 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	slices.Sort(missing)
	for _, n := range missing {
		t.Errorf("the dashboard queries %s (panels %q), which a running Berth does not export", n, used[n])
	}
}

// scrapeNames returns the metric names of a scrape, with a histogram's
// _bucket, _sum and _count series under their own names too.
func scrapeNames(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		t.Fatalf("parse scrape: %v", err)
	}
	names := map[string]bool{}
	for n, f := range fams {
		if len(f.Metric) == 0 {
			continue
		}
		names[n] = true
		if f.GetType() == dto.MetricType_HISTOGRAM || f.GetType() == dto.MetricType_SUMMARY {
			names[n+"_sum"], names[n+"_count"] = true, true
			if f.GetType() == dto.MetricType_HISTOGRAM {
				names[n+"_bucket"] = true
			}
		}
	}
	return names
}
