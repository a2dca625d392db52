package index

import "fmt"

// Bounds of what one layer's result records: it is held in memory while
// the layer is read, then kept in the layer cache. Tar names of up to
// 1 MiB (PAX) compress to almost nothing, so counts alone do not bound
// it.
const (
	// maxRecordedFiles bounds the paths of LayerResult.Files: files an
	// extractor wants (every executable among them) and os-release and
	// content manifest paths. Real layers have tens of thousands.
	maxRecordedFiles = 200_000
	// maxRecordedBytes bounds the bytes of the paths (files, whiteouts)
	// and of the packages (each with its file's path, a hard link's
	// packages once more) a layer records, as JSON would write them.
	// Real layers record a few MB.
	maxRecordedBytes = 64 << 20
)

// rewrite records that this layer writes name, replacing anything found
// there earlier in the same layer; recording a new path may make the
// layer unsupported (maxRecordedFiles, maxRecordedBytes).
func (ix *indexer) rewrite(name string) error {
	if !ix.files[name] {
		if len(ix.files) >= ix.maxFiles {
			return &unsupportedError{fmt.Sprintf("over %d files in one layer that the extractors read (executables, package files)", ix.maxFiles)}
		}
		if err := ix.record(name); err != nil {
			return err
		}
		ix.files[name] = true
	}
	delete(ix.pkgs, name)
	delete(ix.osrel, name)
	delete(ix.manifests, name)
	delete(ix.unread, name)
	return nil
}

// record counts strings about to be recorded in the result against
// maxRecordedBytes. What was recorded and then replaced still counts.
func (ix *indexer) record(strs ...string) error {
	for _, s := range strs {
		ix.recorded += jsonLen(s)
	}
	if ix.recorded > ix.maxRecorded {
		return &unsupportedError{fmt.Sprintf("over %d bytes of paths and packages recorded in one layer", ix.maxRecorded)}
	}
	return nil
}

// jsonLen bounds the bytes encoding/json writes for s: control
// characters and <, >, & take six bytes, invalid UTF-8 becomes U+FFFD
// (three), U+2028 and U+2029 six.
func jsonLen(s string) int64 {
	n := int64(2)
	for i := 0; i < len(s); i++ {
		switch b := s[i]; {
		case b < 0x20 || b == '<' || b == '>' || b == '&':
			n += 6
		case b == '"' || b == '\\':
			n += 2
		case b >= 0x80:
			n += 3
		default:
			n++
		}
	}
	return n
}

// RecordedBytes bounds the bytes of what a layer's result records, as
// JSON would write them: its paths (files, whiteouts), its packages
// (each with its file's path), what it could not read and its
// warnings. One result is within maxRecordedBytes of paths and
// packages; a caller holding the results of many layers at once bounds
// their sum.
func RecordedBytes(lr LayerResult) int64 {
	var n int64
	for _, s := range lr.Files {
		n += jsonLen(s)
	}
	for _, s := range lr.Whiteouts {
		n += jsonLen(s)
	}
	for _, p := range lr.Packages {
		for _, s := range []string{p.Kind, p.Name, p.Version, p.SourceName, p.SourceVersion, p.PURL, p.Path, p.AddedBy} {
			n += jsonLen(s)
		}
	}
	for _, g := range lr.Unread {
		n += jsonLen(g.Path) + jsonLen(g.Reason) + jsonLen(g.Layer)
	}
	for _, s := range lr.Warnings {
		n += jsonLen(s)
	}
	for k, v := range lr.OSRelease {
		n += jsonLen(k) + jsonLen(v)
	}
	for k, sets := range lr.ContentManifests {
		n += jsonLen(k)
		for _, s := range sets {
			n += jsonLen(s)
		}
	}
	return n
}
