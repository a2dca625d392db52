// Package index finds the packages installed in container image layers.
//
// It follows Clair's indexer model: every layer blob is indexed once (by
// digest) into a LayerResult listing the packages found in the files that
// layer wrote, its whiteouts and its os-release; Merge then stacks the
// per-layer results of an image into the image's package list, recording the
// layer that introduced each package.
//
// The package databases and manifests are parsed with osv-scalibr's
// extractors (dpkg, apk, rpm, Go binaries, Python wheel/egg metadata, npm
// package.json under node_modules, Java archives).
package index

import (
	"context"
	"fmt"
	"io"
)

// IndexerVersion identifies the indexing logic. Bump it whenever the results
// of IndexLayer for the same blob would change; the caller re-indexes layers
// whose cached results carry an older version.
//
// 2: content manifests (LayerResult.ContentManifests).
// 3: unread OS package databases (LayerResult.Unread, Image.Gaps), content
// sets in usr/share/buildinfo, old GNU sparse entries, file content read
// counted against MaxUncompressedBytes.
// 4: archives whose metadata is over the bounds of archives.go unread
// (LayerResult.Unread) and unpacked metadata charged; the paths and
// packages a layer records bounded (paths.go).
// 5: every file an extractor wants over MaxFileBytes unread (a jar, wheel,
// package.json, a Go binary: skipped.go), and a Java archive its extractor
// read in part; an rpm database in SQLite form whose blobs are computed
// (generated columns, defaults) refused (rpmsqlite.go).
const IndexerVersion = 5

// Layer statuses.
const (
	// StatusIndexed means the layer was read to the end of its tar stream.
	StatusIndexed = "indexed"
	// StatusUnsupported means the layer could not be indexed; Reason says why.
	StatusUnsupported = "unsupported"
)

// Package kinds (Package.Kind).
const (
	KindDpkg  = "dpkg"
	KindApk   = "apk"
	KindRPM   = "rpm"
	KindGo    = "go"
	KindPyPI  = "pypi"
	KindNPM   = "npm"
	KindMaven = "maven"
)

// GoStdlib is the Package.Name of the Go standard library found in a Go
// binary; its Version is the toolchain version without the "go" prefix
// (go1.26.8 → "1.26.8").
const GoStdlib = "stdlib"

// Default limits, used for zero fields of Limits.
const (
	DefaultMaxLayerBytes        int64 = 2 << 30
	DefaultMaxUncompressedBytes int64 = 8 << 30
	DefaultMaxFileBytes         int64 = 256 << 20
)

// Limits bounds the resources spent on one layer. Zero fields take defaults.
type Limits struct {
	// MaxLayerBytes is the largest compressed blob accepted; 0 → 2 GiB.
	MaxLayerBytes int64
	// MaxUncompressedBytes bounds the total bytes read out of the
	// (decompressed) tar stream, a decompression-bomb guard; 0 → 8 GiB.
	// It also bounds the file content handed to the extractors, counted
	// at the files' full size (a sparse entry's holes included).
	MaxUncompressedBytes int64
	// MaxFileBytes is the largest single file handed to an extractor; bigger
	// files are skipped, noted in LayerResult.Warnings and, where an
	// extractor would have found packages in them (not an executable
	// that is no Go binary), in LayerResult.Unread; 0 → 256 MiB.
	MaxFileBytes int64
}

func (l Limits) withDefaults() Limits {
	if l.MaxLayerBytes <= 0 {
		l.MaxLayerBytes = DefaultMaxLayerBytes
	}
	if l.MaxUncompressedBytes <= 0 {
		l.MaxUncompressedBytes = DefaultMaxUncompressedBytes
	}
	if l.MaxFileBytes <= 0 {
		l.MaxFileBytes = DefaultMaxFileBytes
	}
	return l
}

// Package is one package found in a layer or image.
type Package struct {
	// Kind is one of "dpkg", "apk", "rpm", "go", "pypi", "npm", "maven".
	Kind string `json:"kind"`
	// Name is the binary package name; maven: "group:artifact"; go: the
	// module path, or "stdlib" for the Go standard library.
	Name string `json:"name"`
	// Version is the installed version. rpm: [epoch:]version-release; go
	// modules keep the leading "v" as the binary records it; go stdlib is the
	// toolchain version without "go" (e.g. "1.26.8").
	Version string `json:"version"`
	// SourceName is the dpkg Source:, the apk origin or the rpm source
	// package name. Empty when the package database does not name one (for
	// dpkg that means the source package has the binary's name).
	SourceName string `json:"sourceName,omitempty"`
	// SourceVersion is the dpkg source version when it differs from the
	// binary's, or the rpm source package's version-release.
	SourceVersion string `json:"sourceVersion,omitempty"`
	// PURL is the package URL computed by osv-scalibr.
	PURL string `json:"purl,omitempty"`
	// Path is the file the package was found in, without a leading slash.
	Path string `json:"path"`
	// AddedBy is the digest of the layer that introduced the package; set by
	// Merge.
	AddedBy string `json:"addedBy,omitempty"`
}

// LayerResult is what IndexLayer found in one layer. It round-trips through
// encoding/json so callers can cache it by digest.
type LayerResult struct {
	Digest string `json:"digest"`
	// Status is StatusIndexed or StatusUnsupported.
	Status string `json:"status"`
	// Reason says why the layer is unsupported.
	Reason   string    `json:"reason,omitempty"`
	Packages []Package `json:"packages,omitempty"`
	// OSRelease is the key=value content of this layer's etc/os-release
	// (preferred) or usr/lib/os-release.
	OSRelease map[string]string `json:"osRelease,omitempty"`
	// OSReleasePath is the file OSRelease was read from.
	OSReleasePath string `json:"osReleasePath,omitempty"`
	// ContentManifests are the content sets named by each content manifest
	// this layer wrote (root/buildinfo/content_manifests/*.json, and
	// usr/share/buildinfo/*.json that name content sets), by path.
	ContentManifests map[string][]string `json:"contentManifests,omitempty"`
	// Files lists every path this layer wrote that an extractor (or the
	// os-release reader) wanted, even if nothing was found in it: in Merge, a
	// layer rewriting a file replaces what earlier layers found there.
	Files []string `json:"files,omitempty"`
	// Whiteouts lists the paths this layer deletes (.wh.<name>); an opaque
	// directory (.wh..wh..opq) is recorded as "dir/" ("/" for the root).
	Whiteouts []string `json:"whiteouts,omitempty"`
	// Unread lists the OS package databases (dpkg, apk, rpm) this layer
	// wrote but that could not be read, or only in part, the files over
	// MaxFileBytes an extractor would have read (skipped.go), the Java
	// archives their extractor read in part, and the archives (jars,
	// wheels, eggs) and Python metadata files refused for what the
	// extractors would read in them, with the reason: the packages they
	// list are unknown. Sorted by path.
	Unread []Gap `json:"unread,omitempty"`
	// Warnings notes per-file extractor failures and skipped files.
	Warnings []string `json:"warnings,omitempty"`
}

// Gap is an OS package database, or another file an extractor reads (an
// archive, a Go binary), whose packages are unknown: a layer wrote it but
// it could not be read (LayerResult.Unread), or, in a merged image
// (Image.Gaps), it is still there unread, or it held packages and a later
// layer deleted it.
type Gap struct {
	// Path is the database's path in the image, without a leading slash.
	Path string `json:"path"`
	// Reason says why its packages are unknown.
	Reason string `json:"reason"`
	// Layer is the digest of the layer that wrote the unread file or
	// deleted the database; set by Merge.
	Layer string `json:"layer,omitempty"`
}

// IndexLayer reads one layer blob (compressed or not) and indexes it.
//
// mediaType is the layer descriptor's media type; OCI layer types (tar,
// +gzip, +zstd, and their nondistributable variants) and Docker rootfs diff
// types are accepted. The compression is detected from the blob's magic bytes,
// not from the media type. size is the descriptor's size; a negative size
// means unknown.
//
// A layer that cannot be indexed is returned with Status StatusUnsupported, a
// specific Reason and a nil error: an unknown media type, a blob over
// MaxLayerBytes (checked before reading), a corrupt compressed stream, a blob
// that is not a tar archive, an entry escaping the root, or a decompressed
// stream over MaxUncompressedBytes. A non-nil error is returned only when ctx
// is done, r fails, or checking an rpm database ran out of time (which a
// loaded host may cause: not a fact about the layer to cache); the caller
// may retry those.
func IndexLayer(ctx context.Context, digest string, r io.Reader, mediaType string, size int64, lim Limits) (LayerResult, error) {
	lim = lim.withDefaults()
	if !IsLayerMediaType(mediaType) {
		return unsupported(digest, fmt.Sprintf("media type %q is not a container layer", mediaType)), nil
	}
	if size > lim.MaxLayerBytes {
		return unsupported(digest, fmt.Sprintf("layer is %d bytes, over the %d-byte limit", size, lim.MaxLayerBytes)), nil
	}
	if err := ctx.Err(); err != nil {
		return LayerResult{}, fmt.Errorf("index layer %s: %w", digest, err)
	}
	ix, err := newIndexer(ctx, digest, lim)
	if err != nil {
		return LayerResult{}, err
	}
	return ix.run(r)
}

func unsupported(digest, reason string) LayerResult {
	return LayerResult{Digest: digest, Status: StatusUnsupported, Reason: reason}
}

// IsLayerMediaType reports whether mt is a container layer media type.
func IsLayerMediaType(mt string) bool {
	switch mt {
	case "application/vnd.oci.image.layer.v1.tar",
		"application/vnd.oci.image.layer.v1.tar+gzip",
		"application/vnd.oci.image.layer.v1.tar+zstd",
		"application/vnd.oci.image.layer.nondistributable.v1.tar",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+gzip",
		"application/vnd.oci.image.layer.nondistributable.v1.tar+zstd",
		"application/vnd.docker.image.rootfs.diff.tar",
		"application/vnd.docker.image.rootfs.diff.tar.gzip",
		"application/vnd.docker.image.rootfs.foreign.diff.tar",
		"application/vnd.docker.image.rootfs.foreign.diff.tar.gzip":
		return true
	}
	return false
}
