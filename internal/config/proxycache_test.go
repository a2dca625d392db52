package config

import (
	"strings"
	"testing"
	"time"
)

// TestProxyCacheSettings: the pull-through cache's per-organization
// limits are settings (they were fixed: 16 blob downloads per
// organization and process, then a 2-minute wait and a 429 that docker
// does not retry), read from the file and from BERTH_* variables, and
// refused out of bounds with the setting's name.
func TestProxyCacheSettings(t *testing.T) {
	d := Default()
	if p := d.ProxyCache; p.MaxManifestFetches != 8 || p.ManifestWait != 2*time.Minute || p.MaxBlobFetches != 16 || p.BlobWait != 2*time.Minute {
		t.Fatalf("proxyCache defaults = %+v, want 8, 2m, 16, 2m", p)
	}
	c, err := loadYAML(t, `
proxyCache:
  maxManifestFetches: 32
  manifestWait: 30s
  maxBlobFetches: 200
`)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{"BERTH_PROXY_CACHE_BLOB_WAIT": "5m", "BERTH_PROXY_CACHE_MAX_BLOB_FETCHES": "256"}
	if err := c.LoadEnv(func(k string) (string, bool) { v, ok := env[k]; return v, ok }); err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if p := c.ProxyCache; p.MaxManifestFetches != 32 || p.ManifestWait != 30*time.Second || p.MaxBlobFetches != 256 || p.BlobWait != 5*time.Minute {
		t.Fatalf("proxyCache from the file and the environment = %+v", p)
	}
	for _, bad := range []struct {
		field string
		set   func(*ProxyCache)
	}{
		{"proxyCache.maxManifestFetches", func(p *ProxyCache) { p.MaxManifestFetches = 0 }},
		{"proxyCache.maxManifestFetches", func(p *ProxyCache) { p.MaxManifestFetches = 257 }},
		{"proxyCache.manifestWait", func(p *ProxyCache) { p.ManifestWait = 0 }},
		{"proxyCache.manifestWait", func(p *ProxyCache) { p.ManifestWait = time.Hour }},
		{"proxyCache.maxBlobFetches", func(p *ProxyCache) { p.MaxBlobFetches = -1 }},
		{"proxyCache.maxBlobFetches", func(p *ProxyCache) { p.MaxBlobFetches = 1025 }},
		{"proxyCache.blobWait", func(p *ProxyCache) { p.BlobWait = 500 * time.Millisecond }},
		{"proxyCache.blobWait", func(p *ProxyCache) { p.BlobWait = 31 * time.Minute }},
	} {
		c := Default()
		bad.set(&c.ProxyCache)
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), bad.field+":") {
			t.Errorf("Validate(%+v) = %v, want it to name %s", c.ProxyCache, err, bad.field)
		}
	}
	// A wait with no unit is refused with its name, as every duration is.
	if _, err := loadYAML(t, "proxyCache:\n  blobWait: 120\n"); err == nil || !strings.Contains(err.Error(), "proxyCache.blobWait") {
		t.Fatalf("a wait without a unit: %v", err)
	}
}
