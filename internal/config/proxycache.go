package config

import "time"

// ProxyCache bounds what one pull-through cache organization may have
// under way upstream at once in one Berth process (docs/ingress.md). A
// pull that finds every turn taken waits for one up to the wait, then is
// answered 429 TOOMANYREQUESTS, which docker does not retry on a blob:
// size the limits for the peak of cold pulls.
type ProxyCache struct {
	// MaxManifestFetches bounds the upstream manifest fetches and checks
	// of a cached tag; each holds up to registry.maxManifestBytes while
	// its upstream answers.
	MaxManifestFetches int `yaml:"maxManifestFetches"`
	// ManifestWait is how long a pull waits for a manifest fetch's turn.
	ManifestWait time.Duration `yaml:"manifestWait"`
	// MaxBlobFetches bounds the upstream blob downloads; each holds an
	// upstream connection and a storage upload, for up to an hour.
	MaxBlobFetches int `yaml:"maxBlobFetches"`
	// BlobWait is how long a pull of a blob waits for a download's turn.
	BlobWait time.Duration `yaml:"blobWait"`
}

// Bounds of the proxy cache's limits.
const (
	maxProxyManifestFetches = 256  // 1 GiB of manifests at the 4 MiB cap
	maxProxyBlobFetches     = 1024 // connections and storage uploads
	maxProxyWait            = 30 * time.Minute
)

func defaultProxyCache() ProxyCache {
	return ProxyCache{MaxManifestFetches: 8, ManifestWait: 2 * time.Minute, MaxBlobFetches: 16, BlobWait: 2 * time.Minute}
}

func (p *ProxyCache) validate(bad func(field, format string, args ...any)) {
	if n := p.MaxManifestFetches; n < 1 || n > maxProxyManifestFetches {
		bad("proxyCache.maxManifestFetches", "%d is outside 1..%d", n, maxProxyManifestFetches)
	}
	if n := p.MaxBlobFetches; n < 1 || n > maxProxyBlobFetches {
		bad("proxyCache.maxBlobFetches", "%d is outside 1..%d", n, maxProxyBlobFetches)
	}
	for field, d := range map[string]time.Duration{"proxyCache.manifestWait": p.ManifestWait, "proxyCache.blobWait": p.BlobWait} {
		if d < time.Second || d > maxProxyWait {
			bad(field, "%s is outside 1s..30m", d)
		}
	}
}
