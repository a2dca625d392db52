package index

import (
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"math"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing/fstest"

	scalibr "github.com/google/osv-scalibr/extractor"
	"github.com/google/osv-scalibr/extractor/filesystem"
	"github.com/google/osv-scalibr/extractor/filesystem/language/golang/gobinary"
	"github.com/google/osv-scalibr/extractor/filesystem/language/java/archive"
	"github.com/google/osv-scalibr/extractor/filesystem/language/javascript/packagejson"
	"github.com/google/osv-scalibr/extractor/filesystem/language/python/wheelegg"
	"github.com/google/osv-scalibr/extractor/filesystem/os/apk"
	apkmeta "github.com/google/osv-scalibr/extractor/filesystem/os/apk/metadata"
	"github.com/google/osv-scalibr/extractor/filesystem/os/dpkg"
	dpkgmeta "github.com/google/osv-scalibr/extractor/filesystem/os/dpkg/metadata"
	"github.com/google/osv-scalibr/extractor/filesystem/os/osrelease"
	"github.com/google/osv-scalibr/extractor/filesystem/os/rpm"
	rpmmeta "github.com/google/osv-scalibr/extractor/filesystem/os/rpm/metadata"
	scalibrfs "github.com/google/osv-scalibr/fs"
	"github.com/google/osv-scalibr/purl"

	cpb "github.com/google/osv-scalibr/binary/proto/config_go_proto"
)

// namedExtractor is an osv-scalibr extractor with its name cached.
type namedExtractor struct {
	name string
	filesystem.Extractor
}

// extractors is the set of osv-scalibr extractors used for one layer.
type extractors struct {
	list []namedExtractor
}

// newExtractors builds the extractors. Their own size limits are lifted: the
// indexer applies Limits.MaxFileBytes itself so that skipped files are
// reported.
func newExtractors(lim Limits) (*extractors, error) {
	cfg := &cpb.PluginConfig{
		MaxFileSizeBytes: math.MaxInt64,
		PluginSpecific: []*cpb.PluginSpecificConfig{{
			Config: &cpb.PluginSpecificConfig_JavaArchive{JavaArchive: &cpb.JavaArchiveConfig{
				// Bytes read out of nested archives (inner jars are read into memory).
				MaxOpenedBytes: javaMaxOpenedBytes(lim),
			}},
		}},
	}
	ctors := []func(*cpb.PluginConfig) (filesystem.Extractor, error){
		dpkg.New, apk.New, rpm.New, gobinary.New, wheelegg.New, packagejson.New, archive.New,
	}
	ex := &extractors{}
	for _, ctor := range ctors {
		e, err := ctor(cfg)
		if err != nil {
			return nil, fmt.Errorf("create extractor: %w", err)
		}
		ex.list = append(ex.list, namedExtractor{name: e.Name(), Extractor: e})
	}
	return ex, nil
}

// required returns the extractors that want the file.
func (ex *extractors) required(api filesystem.FileAPI) []namedExtractor {
	p := api.Path()
	var out []namedExtractor
	for _, e := range ex.list {
		switch {
		case e.name == dpkg.Name && p == "usr/lib/opkg/status":
			continue // OpenWrt, not a supported kind
		case e.name == packagejson.Name && !strings.HasPrefix(p, "node_modules/") && !strings.Contains(p, "/node_modules/"):
			continue // only installed npm packages, not applications' manifests
		}
		if fileRequired(e, api) {
			out = append(out, e)
		}
	}
	return out
}

func fileRequired(e namedExtractor, api filesystem.FileAPI) (ok bool) {
	defer func() {
		if recover() != nil {
			ok = false
		}
	}()
	return e.FileRequired(api)
}

func (ex *extractors) onlyGoBinary(ws []namedExtractor) bool {
	for _, w := range ws {
		if w.name != gobinary.Name {
			return false
		}
	}
	return true
}

// needsRealFile reports whether an extractor needs the file on disk.
func (ex *extractors) needsRealFile(ws []namedExtractor) bool {
	return slices.ContainsFunc(ws, func(w namedExtractor) bool { return w.name == rpm.Name })
}

// run runs one extractor on a file, turning a panic into an error.
func (ex *extractors) run(ctx context.Context, e namedExtractor, name string, info fs.FileInfo, c *content, fsys scalibrfs.FS) (pkgs []Package, err error) {
	defer func() {
		if r := recover(); r != nil {
			pkgs = nil
			err = fmt.Errorf("extractor panicked: %v\n%s", r, firstLines(debug.Stack(), 12))
		}
	}()
	input := &filesystem.ScanInput{
		FS:     fsys,
		Path:   name,
		Root:   c.root,
		Info:   info,
		Reader: c.reader(),
	}
	inv, err := e.Extract(ctx, input)
	for _, p := range inv.Packages {
		if pkg, ok := convert(p, name); ok {
			pkgs = append(pkgs, pkg)
		}
	}
	return pkgs, err
}

func firstLines(b []byte, n int) []byte {
	lines := bytes.SplitN(b, []byte("\n"), n+1)
	if len(lines) > n {
		lines = lines[:n]
	}
	return bytes.Join(lines, []byte("\n"))
}

// extractorFS is the file system the extractors see: only this layer's
// os-release (the dpkg, apk and rpm extractors read it for metadata and
// PURL qualifiers), as etc/os-release.
func (ix *indexer) extractorFS() scalibrfs.FS {
	m := fstest.MapFS{}
	for _, p := range []string{etcOSRelease, usrOSRelease} {
		if data, ok := ix.osrel[p]; ok {
			m[etcOSRelease] = &fstest.MapFile{Data: data, Mode: 0o644}
			break
		}
	}
	return m
}

// parseOSRelease parses os-release(5) content with osv-scalibr's rules,
// keeping only well-formed variable names and valid UTF-8 values.
func parseOSRelease(data []byte) map[string]string {
	m, err := osrelease.GetOSRelease(fstest.MapFS{etcOSRelease: &fstest.MapFile{Data: data}})
	if err != nil {
		return nil
	}
	out := map[string]string{}
	for k, v := range m {
		if isEnvName(k) {
			out[k] = validUTF8(v)
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

// isEnvName reports whether s is a shell variable name: [A-Za-z_][A-Za-z0-9_]*.
func isEnvName(s string) bool {
	if s == "" {
		return false
	}
	for i, c := range s {
		switch {
		case c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && '0' <= c && c <= '9':
		default:
			return false
		}
	}
	return true
}

// convert maps an osv-scalibr package found in file name to a Package.
func convert(p *scalibr.Package, name string) (Package, bool) {
	if p == nil {
		return Package{}, false
	}
	out := Package{Name: p.Name, Version: p.Version, Path: name}
	switch p.PURLType {
	case purl.TypeDebian:
		out.Kind = KindDpkg
		if m, ok := p.Metadata.(*dpkgmeta.Metadata); ok {
			if m.PackageName != "" {
				out.Name = m.PackageName
			}
			if m.PackageVersion != "" {
				out.Version = m.PackageVersion
			}
			out.SourceName = m.SourceName
			if m.SourceVersion != out.Version {
				out.SourceVersion = m.SourceVersion
			}
		}
	case purl.TypeApk:
		out.Kind = KindApk
		if m, ok := p.Metadata.(*apkmeta.Metadata); ok {
			out.SourceName = m.OriginName
		}
	case purl.TypeRPM:
		out.Kind = KindRPM
		if m, ok := p.Metadata.(*rpmmeta.Metadata); ok {
			if m.Epoch > 0 {
				out.Version = strconv.Itoa(m.Epoch) + ":" + out.Version
			}
			out.SourceName, out.SourceVersion = parseSourceRPM(m.SourceRPM)
		}
	case purl.TypeGolang:
		out.Kind = KindGo
		switch {
		case p.Name == "go" && p.Metadata == nil:
			// osv-scalibr reports the toolchain as "go" with the "go" prefix
			// of its version removed.
			out.Name = GoStdlib
		case out.Version != "" && out.Version != "(devel)" && !strings.HasPrefix(out.Version, "v"):
			// osv-scalibr strips the "v" the binary records.
			out.Version = "v" + out.Version
		}
	case purl.TypePyPi:
		out.Kind = KindPyPI
	case purl.TypeNPM:
		out.Kind = KindNPM
	case purl.TypeMaven:
		out.Kind = KindMaven
		if p.Name == "unknown" && p.Version == "unknown" {
			return Package{}, false // an unidentified jar, only hashed
		}
	default:
		return Package{}, false
	}
	if out.Name == "" {
		return Package{}, false
	}
	if u := p.PURL(); u != nil {
		out.PURL = u.String()
	}
	return out, true
}

// parseSourceRPM splits "name-version-release.src.rpm" into name and
// "version-release".
func parseSourceRPM(s string) (name, version string) {
	s = strings.TrimSuffix(s, ".rpm")
	s = strings.TrimSuffix(strings.TrimSuffix(s, ".src"), ".nosrc")
	rel := strings.LastIndexByte(s, '-')
	if rel <= 0 {
		return "", ""
	}
	ver := strings.LastIndexByte(s[:rel], '-')
	if ver <= 0 {
		return "", ""
	}
	return s[:ver], s[ver+1:]
}
