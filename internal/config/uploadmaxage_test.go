package config

import (
	"strings"
	"testing"
	"time"
)

// TestUploadMaxAge: gc.uploadMaxAge bounds an upload session's age,
// whatever its activity: 168h by default (CNCF Distribution's
// uploadpurging age), BERTH_GC_UPLOAD_MAX_AGE overrides it, and a value
// under 1h (0 and negative included: it cannot be turned off) is refused.
func TestUploadMaxAge(t *testing.T) {
	if c := Default(); c.GC.UploadMaxAge != 168*time.Hour {
		t.Fatalf("gc.uploadMaxAge default = %s, want 168h", c.GC.UploadMaxAge)
	}
	c := Default()
	env := map[string]string{"BERTH_GC_UPLOAD_MAX_AGE": "72h"}
	if err := c.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil || c.GC.UploadMaxAge != 72*time.Hour {
		t.Fatalf("gc.uploadMaxAge from env: %s %v", c.GC.UploadMaxAge, err)
	}
	for _, bad := range []time.Duration{-time.Hour, 0, 59 * time.Minute} {
		c := Default()
		c.GC.UploadMaxAge = bad
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), "gc.uploadMaxAge") {
			t.Errorf("Validate(uploadMaxAge %s) = %v", bad, err)
		}
	}
}
