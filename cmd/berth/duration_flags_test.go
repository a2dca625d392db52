package main

import (
	"strings"
	"testing"
)

// TestNegativeDurationFlagsRefused: a duration flag below 0 is an error
// naming the flag, before anything is created or fetched. Before,
// `token create --expires -720h` created a token that never expires and
// `vulns --max-data-age -72h` turned the staleness gate off, silently.
func TestNegativeDurationFlagsRefused(t *testing.T) {
	dir := t.TempDir()
	if out, err := runIn(t, "", "admin", "migrate", "--data-dir", dir); err != nil {
		t.Fatalf("admin migrate: %v\n%s", err, out)
	}
	for _, tc := range []struct {
		flag string
		args []string
	}{
		{"--expires", []string{"admin", "token", "create", "ci-token", "--scope", "alice/*=content/read", "--expires", "-720h", "--data-dir", dir}},
		{"--max-data-age", []string{"vulns", "127.0.0.1:1/alice/app:v1", "--insecure", "--max-data-age", "-72h"}},
		{"--wait", []string{"vulns", "127.0.0.1:1/alice/app:v1", "--insecure", "--wait", "-1m"}},
	} {
		out, err := runIn(t, "", tc.args...)
		if err == nil || !strings.Contains(err.Error(), tc.flag) || !strings.Contains(err.Error(), "negative") {
			t.Errorf("%v: %v (want an error naming %s as negative)\n%s", tc.args, err, tc.flag, out)
		}
		if strings.Contains(out, "created token") {
			t.Errorf("%v created a token:\n%s", tc.args, out)
		}
	}
	// The refused name is free, and 0 still means no expiry.
	if out, err := runIn(t, "", "admin", "token", "create", "ci-token", "--scope", "alice/*=content/read", "--expires", "0", "--data-dir", dir); err != nil {
		t.Fatalf("--expires 0 after the refusal: %v\n%s", err, out)
	}
}
