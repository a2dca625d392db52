package events

import (
	"testing"

	"github.com/berth-dev/berth/internal/config"
)

// TestTriggerVariablesAreNoRefusedSettings: the variables CI triggers hand
// to pipelines, which may run berth (gate, promote, vulns), pass berth's
// check of BERTH_* variables: config keeps its own list of them, and this
// keeps the two lists the same.
func TestTriggerVariablesAreNoRefusedSettings(t *testing.T) {
	p, err := SamplePayload(Server{Host: "registry.example.com"}, EventBaseImageUpdated, "team/app")
	if err != nil {
		t.Fatal(err)
	}
	vars := TriggerVariables(p)
	if len(vars) < 10 {
		t.Fatalf("a base_image_updated sample gives %d variables: %v", len(vars), vars)
	}
	var environ []string
	for k, v := range vars {
		environ = append(environ, k+"="+v)
	}
	if err := config.CheckEnv(environ); err != nil {
		t.Fatalf("berth in a pipeline would refuse its trigger's variables: %v", err)
	}
}
