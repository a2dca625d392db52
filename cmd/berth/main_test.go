package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

func run(t *testing.T, env map[string]string, args ...string) (string, error) {
	t.Helper()
	for k, v := range env {
		t.Setenv(k, v)
	}
	cmd := rootCmd()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err := cmd.ExecuteContext(context.Background())
	return out.String(), err
}

func TestVersion(t *testing.T) {
	out, err := run(t, nil, "version")
	if err != nil || !strings.HasPrefix(out, "berth ") || !strings.Contains(out, "commit") {
		t.Fatalf("version = %q, %v", out, err)
	}
}

func TestServeRefusesBadSettings(t *testing.T) {
	dir := t.TempDir()
	_, err := run(t, map[string]string{"BERTH_LOG_LEVEL": "chatty"}, "serve", "--addr", "no-port", "--data-dir", dir, "--auth", "sometimes")
	if err == nil {
		t.Fatal("serve accepted bad settings")
	}
	for _, want := range []string{"addr:", "auth.mode:", "log.level:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not name %s: %v", want, err)
		}
	}
	_, err = run(t, map[string]string{"BERTH_REGISTRY_MAX_MANIFEST_BYTES": "many"}, "serve", "--data-dir", dir)
	if err == nil || !strings.Contains(err.Error(), "BERTH_REGISTRY_MAX_MANIFEST_BYTES") {
		t.Fatalf("bad environment value: %v", err)
	}
	_, err = run(t, nil, "serve", "--config", dir+"/missing.yaml")
	if err == nil || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("missing config file: %v", err)
	}
}
