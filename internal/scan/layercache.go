package scan

import (
	"encoding/json"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/scan/index"
)

// cachedLayer is a layer's index result as the layer cache holds it
// (meta.LayerIndexEntry.Result): the result, and the limits it was made
// with. Results cached before the limits were recorded have none.
type cachedLayer struct {
	index.LayerResult
	Limits *layerLimits `json:"indexLimits,omitempty"`
}

// layerLimits are the limits of scan.* a layer's result depends on, as
// applied (defaults filled in).
type layerLimits struct {
	MaxLayerBytes        int64 `json:"maxLayerBytes"`
	MaxUncompressedBytes int64 `json:"maxUncompressedBytes"`
	MaxFileBytes         int64 `json:"maxFileBytes"`
}

// effectiveLimits are the limits the indexer applies for l.
func effectiveLimits(l index.Limits) layerLimits {
	out := layerLimits{MaxLayerBytes: l.MaxLayerBytes, MaxUncompressedBytes: l.MaxUncompressedBytes, MaxFileBytes: l.MaxFileBytes}
	if out.MaxLayerBytes <= 0 {
		out.MaxLayerBytes = index.DefaultMaxLayerBytes
	}
	if out.MaxUncompressedBytes <= 0 {
		out.MaxUncompressedBytes = index.DefaultMaxUncompressedBytes
	}
	if out.MaxFileBytes <= 0 {
		out.MaxFileBytes = index.DefaultMaxFileBytes
	}
	return out
}

// covers reports whether a result made with limits l is what limits now
// would make: none of now is larger. (A result made with larger limits is
// kept when they are lowered: it knows more, not less.)
func (l layerLimits) covers(now layerLimits) bool {
	return now.MaxLayerBytes <= l.MaxLayerBytes && now.MaxUncompressedBytes <= l.MaxUncompressedBytes && now.MaxFileBytes <= l.MaxFileBytes
}

// limitBound reports whether a layer's result may be what it is because of
// a limit: unsupported (over the layer or uncompressed size), a package
// database unread (over the file size), or files skipped (warnings).
func limitBound(lr index.LayerResult) bool {
	return lr.Status != index.StatusIndexed || len(lr.Unread) > 0 || len(lr.Warnings) > 0
}

// reusable decodes a cached layer result, and says whether it can stand
// for a reading with limits now: it was made with limits at least as
// large, or no limit shaped it.
func reusable(b []byte, now layerLimits) (index.LayerResult, bool) {
	var c cachedLayer
	if err := json.Unmarshal(b, &c); err != nil {
		return index.LayerResult{}, false
	}
	if limitBound(c.LayerResult) && (c.Limits == nil || !c.Limits.covers(now)) {
		return index.LayerResult{}, false
	}
	return c.LayerResult, true
}

// encodeCachedLayer is the layer cache's form of a result made with
// limits.
func encodeCachedLayer(lr index.LayerResult, limits layerLimits) ([]byte, error) {
	return json.Marshal(cachedLayer{LayerResult: lr, Limits: &limits})
}

// reportLimitBound reports whether a stored manifest result may be what it
// is because of a limit: it is derived again from the layer cache, which
// reads again only the layers the current limits would read differently.
func reportLimitBound(status string, rep *Report) bool {
	return status != meta.ScanScanned || rep == nil || len(rep.Gaps) > 0 || len(rep.Warnings) > 0
}
