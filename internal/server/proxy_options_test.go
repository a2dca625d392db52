package server

import (
	"net/http"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/config"
)

// TestProxyOptionsFromConfig: the proxyCache settings reach the
// pull-through cache, with the registry's manifest cap and the upstream
// transport. Before, the server set none of its per-organization limits,
// and a proxy organization could not have more than 16 blob downloads
// under way in a process, whatever its pulls needed.
func TestProxyOptionsFromConfig(t *testing.T) {
	cfg := config.Default()
	cfg.ProxyCache = config.ProxyCache{MaxManifestFetches: 24, ManifestWait: 45 * time.Second, MaxBlobFetches: 300, BlobWait: 5 * time.Minute}
	cfg.Registry.MaxManifestBytes = 8 << 20
	tr := &http.Transport{}
	o := proxyOptions(cfg, tr, nil)
	if o.MaxManifestFetches != 24 || o.ManifestWait != 45*time.Second || o.MaxBlobFetches != 300 || o.BlobWait != 5*time.Minute {
		t.Fatalf("proxy.Options limits = %d %s %d %s, want proxyCache's 24 45s 300 5m", o.MaxManifestFetches, o.ManifestWait, o.MaxBlobFetches, o.BlobWait)
	}
	if o.MaxManifestBytes != 8<<20 || o.Transport != tr || len(o.Policy.Allowed) == 0 {
		t.Fatalf("proxy.Options = %+v, want the registry's manifest cap, the upstream transport and the allow-list", o)
	}
}
