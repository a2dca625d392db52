package deploy

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// helmBinary finds helm: $BERTH_HELM, the PATH, or the end-to-end suite's
// tool cache (test/e2e installs helm there: $BERTH_E2E_TOOLS or
// ~/.cache/berth/e2e-tools).
func helmBinary(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("BERTH_HELM"); p != "" {
		return p
	}
	if p, err := exec.LookPath("helm"); err == nil {
		return p
	}
	cache := os.Getenv("BERTH_E2E_TOOLS")
	if cache == "" {
		if home, err := os.UserHomeDir(); err == nil {
			cache = filepath.Join(home, ".cache", "berth", "e2e-tools")
		}
	}
	if p := filepath.Join(cache, "bin", "helm"); cache != "" {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	t.Skip("SKIP: helm is not on PATH, in $BERTH_HELM or in the e2e tool cache (go test ./test/e2e installs it)")
	return ""
}

// requiredValues are the values the chart refuses to render without.
var requiredValues = []string{
	"--set", "secret.secretKey=" + exampleSecretEnv["BERTH_SECRET_KEY"],
	"--set", "secret.databaseURL=" + exampleSecretEnv["BERTH_DATABASE_URL"],
}

// k8sObject is the part of a rendered manifest the checks read.
type k8sObject struct {
	Kind     string `yaml:"kind"`
	Metadata struct {
		Name        string            `yaml:"name"`
		Annotations map[string]string `yaml:"annotations"`
	} `yaml:"metadata"`
	Data       map[string]string `yaml:"data"`
	StringData map[string]string `yaml:"stringData"`
	Spec       struct {
		Replicas *int           `yaml:"replicas"`
		Template k8sPodTemplate `yaml:"template"`
	} `yaml:"spec"`
}

type k8sPodTemplate struct {
	Metadata struct {
		Labels map[string]string `yaml:"labels"`
	} `yaml:"metadata"`
	Spec struct {
		TerminationGracePeriodSeconds int            `yaml:"terminationGracePeriodSeconds"`
		Containers                    []k8sContainer `yaml:"containers"`
	} `yaml:"spec"`
}

type k8sContainer struct {
	Name  string   `yaml:"name"`
	Args  []string `yaml:"args"`
	Ports []struct {
		Name          string `yaml:"name"`
		ContainerPort int    `yaml:"containerPort"`
	} `yaml:"ports"`
	Env            []k8sEnv  `yaml:"env"`
	StartupProbe   *k8sProbe `yaml:"startupProbe"`
	LivenessProbe  *k8sProbe `yaml:"livenessProbe"`
	ReadinessProbe *k8sProbe `yaml:"readinessProbe"`
}

type k8sEnv struct {
	Name      string         `yaml:"name"`
	Value     string         `yaml:"value"`
	ValueFrom map[string]any `yaml:"valueFrom"`
}

type k8sProbe struct {
	HTTPGet struct {
		Path string `yaml:"path"`
	} `yaml:"httpGet"`
	PeriodSeconds    int `yaml:"periodSeconds"`
	FailureThreshold int `yaml:"failureThreshold"`
}

// helmTemplate renders the chart with args and returns its objects by
// kind/name.
func helmTemplate(t *testing.T, helm string, args ...string) map[string]k8sObject {
	t.Helper()
	return decodeObjects(t, renderChart(t, helm, args...), func(o k8sObject) string {
		if o.Kind == "" {
			return ""
		}
		return o.Kind + "/" + o.Metadata.Name
	})
}

// renderChart is `helm template` of the chart with args, in a throwaway
// helm home.
func renderChart(t *testing.T, helm string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(helm, append([]string{"template", "reg", "helm/berth"}, args...)...)
	cmd.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("helm template %v: %v\n%s", args, err, stderr.String())
	}
	return out
}

// decodeObjects decodes each YAML document of out as a T and returns
// them by key (documents whose key is "" are left out).
func decodeObjects[T any](t *testing.T, out []byte, key func(T) string) map[string]T {
	t.Helper()
	objs := map[string]T{}
	dec := yaml.NewDecoder(bytes.NewReader(out))
	for {
		var o T
		if err := dec.Decode(&o); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatalf("the rendered chart does not parse: %v\n%s", err, out)
		}
		if k := key(o); k != "" {
			objs[k] = o
		}
	}
	return objs
}

// TestHelmChart lints and renders the chart: with the defaults (and the
// required secrets) and with every option on; the Deployment probes
// /livez and /readyz, runs at least 2 replicas, and its config.yaml and
// BERTH_* variables load through Berth's loader; the options add what they
// promise.
func TestHelmChart(t *testing.T) {
	helm := helmBinary(t)
	lint := exec.Command(helm, append([]string{"lint", "--strict", "helm/berth"}, requiredValues...)...)
	lint.Env = append(os.Environ(), "HELM_CACHE_HOME="+t.TempDir(), "HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	if out, err := lint.CombinedOutput(); err != nil {
		t.Fatalf("helm lint: %v\n%s", err, out)
	}
	cmd := exec.Command(helm, "template", "reg", "helm/berth")
	if out, err := cmd.CombinedOutput(); err == nil || !strings.Contains(string(out), "secret.secretKey is required") {
		t.Errorf("rendered without a secretKey: %v\n%s", err, out)
	}

	objs := helmTemplate(t, helm, requiredValues...)
	for _, want := range []string{"Deployment/reg-berth", "Service/reg-berth", "ConfigMap/reg-berth", "Secret/reg-berth", "PodDisruptionBudget/reg-berth"} {
		if _, ok := objs[want]; !ok {
			t.Errorf("defaults render no %s (have %v)", want, mapKeysOf(objs))
		}
	}
	for _, absent := range []string{"Ingress/reg-berth", "HorizontalPodAutoscaler/reg-berth", "ServiceMonitor/reg-berth", "Job/reg-berth-migrate"} {
		if _, ok := objs[absent]; ok {
			t.Errorf("defaults render %s, which is optional", absent)
		}
	}
	d := objs["Deployment/reg-berth"]
	if d.Spec.Replicas == nil || *d.Spec.Replicas < 2 {
		t.Errorf("replicas: %v, want at least 2", d.Spec.Replicas)
	}
	cfgRendered := loadBerthConfig(t, "ConfigMap config.yaml", []byte(objs["ConfigMap/reg-berth"].Data["config.yaml"]), map[string]string{})
	// The delay, the drain and the recording of cut requests (10 s).
	if g, need := d.Spec.Template.Spec.TerminationGracePeriodSeconds, int((cfgRendered.HTTP.ShutdownDelay+cfgRendered.HTTP.ShutdownTimeout+10*time.Second)/time.Second); g <= need {
		t.Errorf("terminationGracePeriodSeconds %d does not cover Berth's %d s of shutdown delay, drain and recording", g, need)
	}
	c := d.Spec.Template.Spec.Containers[0]
	for probe, want := range map[*k8sProbe]string{c.StartupProbe: "/livez", c.LivenessProbe: "/livez", c.ReadinessProbe: "/readyz"} {
		if probe == nil || probe.HTTPGet.Path != want {
			t.Errorf("a probe is %+v, want %s", probe, want)
		}
	}
	env := map[string]string{}
	var names []string
	for _, e := range c.Env {
		names = append(names, e.Name)
		env[e.Name] = exampleSecretEnv[e.Name]
		if e.ValueFrom == nil {
			env[e.Name] = e.Value
		}
	}
	checkEnvNames(t, "Deployment env", strings.Join(names, " "))
	i := slices.Index(c.Args, "--config")
	if i < 0 || c.Args[i+1] != "/etc/berth/config.yaml" {
		t.Fatalf("container args %v: no --config /etc/berth/config.yaml", c.Args)
	}
	cfg := loadBerthConfig(t, "ConfigMap config.yaml", []byte(objs["ConfigMap/reg-berth"].Data["config.yaml"]), env)
	requireProduction(t, "ConfigMap config.yaml", cfg)

	// The mail relay's password goes in the Secret, not the ConfigMap.
	mail := helmTemplate(t, helm, append([]string{"--set", "secret.smtpPassword=relay-pw"}, requiredValues...)...)
	if got := mail["Secret/reg-berth"].StringData["smtpPassword"]; got != "relay-pw" {
		t.Errorf("secret.smtpPassword: the Secret holds %q", got)
	}
	if strings.Contains(mail["ConfigMap/reg-berth"].Data["config.yaml"], "relay-pw") {
		t.Error("secret.smtpPassword is in the ConfigMap")
	}
	found := false
	for _, e := range mail["Deployment/reg-berth"].Spec.Template.Spec.Containers[0].Env {
		if e.Name == "BERTH_NOTIFICATIONS_SMTP_PASSWORD" {
			ref, _ := e.ValueFrom["secretKeyRef"].(map[string]any)
			found = ref["key"] == "smtpPassword" && ref["name"] == "reg-berth"
		}
	}
	if !found {
		t.Error("the Deployment does not give BERTH_NOTIFICATIONS_SMTP_PASSWORD from the Secret's smtpPassword")
	}

	all := helmTemplate(t, helm, append([]string{"--set", "ingress.enabled=true", "--set", "autoscaling.enabled=true",
		"--set", "serviceMonitor.enabled=true", "--set", "migrations.job.enabled=true", "--set", "preStopSleepSeconds=5"}, requiredValues...)...)
	for _, want := range []string{"Ingress/reg-berth", "HorizontalPodAutoscaler/reg-berth", "ServiceMonitor/reg-berth", "Job/reg-berth-migrate"} {
		if _, ok := all[want]; !ok {
			t.Errorf("every option on renders no %s (have %v)", want, mapKeysOf(all))
		}
	}
	if ing := all["Ingress/reg-berth"]; ing.Metadata.Annotations["nginx.ingress.kubernetes.io/proxy-body-size"] != "0" ||
		ing.Metadata.Annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] != "off" {
		t.Errorf("the Ingress limits or buffers request bodies: %v", ing.Metadata.Annotations)
	}
	if all["Deployment/reg-berth"].Spec.Replicas != nil {
		t.Error("with the HPA on, the Deployment still sets replicas (each upgrade would reset the HPA's choice)")
	}
	job := all["Job/reg-berth-migrate"]
	if args := job.Spec.Template.Spec.Containers[0].Args; !slices.Equal(args[:2], []string{"admin", "migrate"}) {
		t.Errorf("the migration Job runs %v", args)
	}
	if job.Spec.Template.Metadata.Labels["app.kubernetes.io/name"] == d.Spec.Template.Metadata.Labels["app.kubernetes.io/name"] {
		t.Error("the migration Job's pod carries the replicas' labels: the Service would send it traffic")
	}

	// The container's ports are the ones Berth listens on: config.addr's
	// and config.metrics.addr's (the metrics port came from
	// service.metricsPort, and http was always 5000).
	ports := helmTemplate(t, helm, append([]string{"--set", "config.addr=0.0.0.0:8080", "--set", "config.metrics.addr=0.0.0.0:9100",
		"--set", "service.metricsPort=9300"}, requiredValues...)...)
	got := map[string]int{}
	for _, p := range ports["Deployment/reg-berth"].Spec.Template.Spec.Containers[0].Ports {
		got[p.Name] = p.ContainerPort
	}
	if got["http"] != 8080 || got["metrics"] != 9100 {
		t.Errorf("with config.addr :8080 and config.metrics.addr :9100 the container's ports are %v", got)
	}

	ext := helmTemplate(t, helm, "--set", "secret.existingSecret=berth-secrets")
	if _, ok := ext["Secret/reg-berth"]; ok {
		t.Error("with secret.existingSecret the chart still creates a Secret")
	}
	if !strings.Contains(mustYAML(t, ext["Deployment/reg-berth"].Spec.Template), "name: berth-secrets") {
		t.Error("with secret.existingSecret the Deployment does not read it")
	}
}

func mustYAML(t *testing.T, v any) string {
	t.Helper()
	b, err := yaml.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func mapKeysOf(m map[string]k8sObject) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
