package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestLifecycleExpirationBounds: the bounds of tag expirations default to
// Quay's (LABELED_EXPIRATION_MINIMUM 1h, LABELED_EXPIRATION_MAXIMUM 104w),
// are read from the file and BERTH_LIFECYCLE_EXPIRATION_* (0 for no
// minimum), and are refused negative, with a maximum under the minimum,
// or a maximum of 0.
func TestLifecycleExpirationBounds(t *testing.T) {
	c := Default()
	if c.Lifecycle.ExpirationMinimum != time.Hour || c.Lifecycle.ExpirationMaximum != 104*7*24*time.Hour {
		t.Fatalf("defaults %+v, want Quay's 1h and 104 weeks", c.Lifecycle)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "berth.yaml")
	if err := os.WriteFile(path, []byte("lifecycle:\n  expirationMinimum: 0\n  expirationMaximum: 720h\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := c.LoadFile(path); err != nil {
		t.Fatal(err)
	}
	if c.Lifecycle.ExpirationMinimum != 0 || c.Lifecycle.ExpirationMaximum != 720*time.Hour {
		t.Fatalf("from the file: %+v", c.Lifecycle)
	}
	env := map[string]string{"BERTH_LIFECYCLE_EXPIRATION_MINIMUM": "30m", "BERTH_LIFECYCLE_EXPIRATION_MAXIMUM": "2160h"}
	if err := c.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if c.Lifecycle.ExpirationMinimum != 30*time.Minute || c.Lifecycle.ExpirationMaximum != 2160*time.Hour {
		t.Fatalf("from the environment: %+v", c.Lifecycle)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []Lifecycle{{ExpirationMinimum: -time.Second, ExpirationMaximum: time.Hour}, {ExpirationMinimum: 2 * time.Hour, ExpirationMaximum: time.Hour},
		{ExpirationMinimum: 0, ExpirationMaximum: 0}} {
		c := Default()
		c.Lifecycle = bad
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "lifecycle.expiration") {
			t.Errorf("%+v: %v, want a refusal naming the setting", bad, err)
		}
	}
}
