package deploy

import (
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// k8sService is the part of a rendered Service or ServiceMonitor the
// metrics check reads.
type k8sService struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name   string            `yaml:"name"`
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		Type      string                  `yaml:"type"`
		Selector  map[string]any          `yaml:"selector"`
		Ports     []struct{ Name string } `yaml:"ports"`
		Endpoints []struct {
			Port string `yaml:"port"`
		} `yaml:"endpoints"`
	} `yaml:"spec"`
}

// helmServices renders the chart and returns its Services and
// ServiceMonitors by kind/name.
func helmServices(t *testing.T, helm string, args ...string) map[string]k8sService {
	t.Helper()
	return decodeObjects(t, renderChart(t, helm, append(append([]string{}, requiredValues...), args...)...), func(o k8sService) string {
		if o.Kind == "Service" || o.Kind == "ServiceMonitor" {
			return o.Kind + "/" + o.Metadata.Name
		}
		return ""
	})
}

// TestHelmMetricsStayInside: the metrics port (no credentials, and
// /debug/pprof with config.metrics.pprof) is published only on a
// ClusterIP Service of its own, whatever service.type is: with
// service.type LoadBalancer the main Service, which the load balancer
// exposes, carried it too. The ServiceMonitor scrapes that Service only.
func TestHelmMetricsStayInside(t *testing.T) {
	helm := helmBinary(t)
	for _, typ := range []string{"ClusterIP", "LoadBalancer", "NodePort"} {
		objs := helmServices(t, helm, "--set", "service.type="+typ, "--set", "serviceMonitor.enabled=true", "--set", "config.metrics.pprof=true")
		main, ok := objs["Service/reg-berth"]
		if !ok || main.Spec.Type != typ {
			t.Fatalf("service.type=%s: main Service %+v (have %v)", typ, main, keysOf(objs))
		}
		for _, p := range main.Spec.Ports {
			if p.Name != "http" {
				t.Errorf("service.type=%s: the main Service publishes port %q", typ, p.Name)
			}
		}
		m, ok := objs["Service/reg-berth-metrics"]
		if !ok || (m.Spec.Type != "" && m.Spec.Type != "ClusterIP") || len(m.Spec.Ports) != 1 || m.Spec.Ports[0].Name != "metrics" {
			t.Fatalf("service.type=%s: metrics Service %+v", typ, m)
		}
		sm := objs["ServiceMonitor/reg-berth"]
		sel, _ := yaml.Marshal(sm.Spec.Selector)
		labels, _ := sm.Spec.Selector["matchLabels"].(map[string]any)
		matches := func(svc k8sService) bool {
			for k, v := range labels {
				if svc.Metadata.Labels[k] != v {
					return false
				}
			}
			return len(labels) > 0
		}
		if matches(main) || !matches(m) {
			t.Errorf("service.type=%s: the ServiceMonitor's selector %s matches the main Service: %v, the metrics Service: %v", typ, sel, matches(main), matches(m))
		}
		if len(sm.Spec.Endpoints) != 1 || sm.Spec.Endpoints[0].Port != "metrics" {
			t.Errorf("service.type=%s: ServiceMonitor endpoints %+v", typ, sm.Spec.Endpoints)
		}
	}
	// Without a metrics listener there is no metrics Service.
	objs := helmServices(t, helm, "--set", "config.metrics.addr=")
	if _, ok := objs["Service/reg-berth-metrics"]; ok {
		t.Error("a metrics Service without config.metrics.addr")
	}
	if !strings.Contains(strings.Join(keysOf(objs), " "), "Service/reg-berth") {
		t.Errorf("no main Service: %v", keysOf(objs))
	}
}

func keysOf(m map[string]k8sService) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
