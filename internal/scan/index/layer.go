package index

import (
	"archive/tar"
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"github.com/google/osv-scalibr/extractor/filesystem/language/java/archive"
	"github.com/google/osv-scalibr/extractor/filesystem/language/python/wheelegg"
	"github.com/google/osv-scalibr/extractor/filesystem/os/apk"
	"github.com/google/osv-scalibr/extractor/filesystem/os/dpkg"
	"github.com/google/osv-scalibr/extractor/filesystem/os/rpm"
	"github.com/google/osv-scalibr/extractor/filesystem/simplefileapi"
)

const (
	etcOSRelease = "etc/os-release"
	usrOSRelease = "usr/lib/os-release"

	// maxOSReleaseBytes bounds an os-release file; real ones are < 1 KiB.
	maxOSReleaseBytes = 64 << 10
	// memFileBytes is the largest file kept in memory for the extractors;
	// bigger ones are spooled to a temporary file.
	memFileBytes = 32 << 20
	// maxWarnings bounds LayerResult.Warnings for hostile layers, and
	// maxWarningBytes each of them.
	maxWarnings     = 100
	maxWarningBytes = 512
	// maxLayerPackages bounds the packages one layer may bring, hard links
	// to a package database included (each link repeats what its target
	// holds); a distribution has thousands.
	maxLayerPackages = 200_000
	// maxWhiteouts bounds the deletions one layer records.
	maxWhiteouts = 100_000
	// maxUnread bounds the unread package databases one layer records
	// (distroless images have one dpkg file per package).
	maxUnread = 10_000
)

// unsupportedError makes the layer unsupported for its reason.
type unsupportedError struct{ reason string }

func (e *unsupportedError) Error() string { return e.reason }

// fatalError is a local failure (temporary files) returned to the caller.
type fatalError struct{ err error }

func (e *fatalError) Error() string { return e.err.Error() }
func (e *fatalError) Unwrap() error { return e.err }

// indexer holds the state of one IndexLayer call.
type indexer struct {
	ctx    context.Context
	digest string
	lim    Limits
	ex     *extractors

	blob    *blobReader
	plain   *countingReader
	comp    string
	entries int
	last    string // name of the last tar entry read

	pkgs      map[string][]Package // by path
	files     map[string]bool
	whiteouts map[string]bool
	osrel     map[string][]byte   // content of etc/os-release, usr/lib/os-release
	manifests map[string][]string // content sets of content manifests, by path
	unread    map[string]string   // OS package databases (or archives) not read, or in part: why, by path
	warnings  []string
	dropped   int   // warnings over maxWarnings
	npkgs     int   // packages found, hard links' copies included
	content   int64 // file content handed to the extractors, at full size
	recorded  int64 // bytes of paths and packages recorded (paths.go)
	// maxRecorded and maxFiles are maxRecordedBytes and maxRecordedFiles,
	// smaller in tests.
	maxRecorded int64
	maxFiles    int
}

// addPackages records what was found at name, within maxLayerPackages
// and maxRecordedBytes (each package repeats its file's path).
func (ix *indexer) addPackages(name string, pkgs []Package) error {
	if ix.npkgs += len(pkgs); ix.npkgs > maxLayerPackages {
		return errTooManyPackages()
	}
	for _, p := range pkgs {
		if err := ix.record(p.Path, p.Name, p.Version, p.SourceName, p.SourceVersion, p.PURL); err != nil {
			return err
		}
	}
	ix.pkgs[name] = append(ix.pkgs[name], pkgs...)
	return nil
}

func newIndexer(ctx context.Context, digest string, lim Limits) (*indexer, error) {
	ex, err := newExtractors(lim)
	if err != nil {
		return nil, fmt.Errorf("index layer %s: %w", digest, err)
	}
	return &indexer{
		ctx:         ctx,
		digest:      digest,
		lim:         lim,
		ex:          ex,
		pkgs:        map[string][]Package{},
		files:       map[string]bool{},
		whiteouts:   map[string]bool{},
		osrel:       map[string][]byte{},
		manifests:   map[string][]string{},
		unread:      map[string]string{},
		maxRecorded: maxRecordedBytes,
		maxFiles:    maxRecordedFiles,
	}, nil
}

func (ix *indexer) warn(format string, args ...any) {
	if len(ix.warnings) >= maxWarnings {
		ix.dropped++
		return
	}
	w := fmt.Sprintf(format, args...)
	if len(w) > maxWarningBytes {
		w = w[:maxWarningBytes] + "..."
	}
	ix.warnings = append(ix.warnings, validUTF8(w))
}

// validUTF8 replaces invalid UTF-8 (from hostile file names or contents) so
// that results round-trip through encoding/json unchanged.
func validUTF8(s string) string { return strings.ToValidUTF8(s, "\uFFFD") }

// run streams the layer once and builds its result.
func (ix *indexer) run(r io.Reader) (LayerResult, error) {
	ix.blob = &blobReader{ctx: ix.ctx, r: r, max: ix.lim.MaxLayerBytes}
	dr, comp, closeDecomp, err := decompressor(bufio.NewReader(ix.blob))
	ix.comp = comp
	if err != nil {
		return ix.fail(err)
	}
	defer closeDecomp()
	ix.plain = &countingReader{r: dr, max: ix.lim.MaxUncompressedBytes}
	tr := tar.NewReader(ix.plain)
	for {
		hdr, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return ix.fail(err)
		}
		ix.entries++
		ix.last = hdr.Name
		if err := ix.entry(tr, hdr); err != nil {
			return ix.fail(err)
		}
	}
	if err := ix.ctx.Err(); err != nil {
		return LayerResult{}, fmt.Errorf("index layer %s: %w", ix.digest, err)
	}
	return ix.result(), nil
}

// fail turns an error met while reading into the call's result.
func (ix *indexer) fail(err error) (LayerResult, error) {
	var ue *unsupportedError
	if errors.As(err, &ue) {
		return unsupported(ix.digest, ue.reason), nil
	}
	var fe *fatalError
	if errors.As(err, &fe) {
		return LayerResult{}, fmt.Errorf("index layer %s: %w", ix.digest, fe.err)
	}
	what := "at its start"
	if ix.entries > 0 {
		what = fmt.Sprintf("at entry %q", ix.last)
	}
	reason, fatal := ix.failure(err, what)
	if fatal != nil {
		return LayerResult{}, fatal
	}
	return unsupported(ix.digest, reason), nil
}

// cleanPath normalises a tar entry name to a slash-separated path relative to
// the layer root ("" for the root itself). ok is false when the name escapes
// the root.
func cleanPath(name string) (p string, ok bool) {
	p = name
	for {
		switch {
		case strings.HasPrefix(p, "/"):
			p = p[1:]
		case strings.HasPrefix(p, "./"):
			p = p[2:]
		default:
			if p == "" || p == "." {
				return "", true
			}
			p = path.Clean(p)
			if p == ".." || strings.HasPrefix(p, "../") {
				return "", false
			}
			if p == "." {
				return "", true
			}
			return p, true
		}
	}
}

// entry handles one tar entry.
func (ix *indexer) entry(tr *tar.Reader, hdr *tar.Header) error {
	name, ok := cleanPath(hdr.Name)
	if !ok {
		return &unsupportedError{fmt.Sprintf("tar entry %q escapes the layer root", hdr.Name)}
	}
	if name == "" {
		return nil
	}
	dir, base := path.Split(name)
	if strings.HasPrefix(base, ".wh.") {
		return ix.whiteout(hdr.Name, dir, base)
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeGNUSparse: // archive/tar reads a sparse file's holes as zeros
		return ix.regular(tr, hdr, name)
	case tar.TypeLink:
		return ix.hardlink(hdr, name)
	case tar.TypeSymlink:
		return ix.symlink(hdr, name)
	}
	return nil
}

func (ix *indexer) whiteout(entry, dir, base string) error {
	var deleted string
	switch {
	case base == ".wh..wh..opq":
		if dir == "" {
			dir = "/"
		}
		deleted = dir
	case strings.HasPrefix(base, ".wh..wh."):
		// AUFS metadata (.wh..wh.plnk, .wh..wh.aufs): not a deletion.
		return nil
	default:
		target := strings.TrimPrefix(base, ".wh.")
		if target == "" || target == "." || target == ".." {
			return &unsupportedError{fmt.Sprintf("whiteout entry %q names no file", entry)}
		}
		deleted = dir + target
	}
	if ix.whiteouts[deleted] {
		return nil
	}
	if len(ix.whiteouts) >= maxWhiteouts {
		return &unsupportedError{fmt.Sprintf("over %d whiteouts in one layer", maxWhiteouts)}
	}
	if err := ix.record(deleted); err != nil {
		return err
	}
	ix.whiteouts[deleted] = true
	return nil
}

func isOSRelease(name string) bool { return name == etcOSRelease || name == usrOSRelease }

// isOSExtractor reports whether an extractor reads an OS package database.
func isOSExtractor(name string) bool {
	return name == dpkg.Name || name == apk.Name || name == rpm.Name
}

// wantsOSDatabase reports whether an OS package extractor is among ws.
func wantsOSDatabase(ws []namedExtractor) bool {
	return slices.ContainsFunc(ws, func(w namedExtractor) bool { return isOSExtractor(w.name) })
}

// notRead records that the OS package database (or archive) name,
// written by this layer, could not be read (or only in part): the
// packages it lists are unknown. The first reason is kept.
func (ix *indexer) notRead(name, format string, args ...any) error {
	if _, ok := ix.unread[name]; ok {
		return nil
	}
	if len(ix.unread) >= maxUnread {
		return &unsupportedError{fmt.Sprintf("over %d unreadable package databases in one layer", maxUnread)}
	}
	reason := fmt.Sprintf(format, args...)
	if len(reason) > maxWarningBytes {
		reason = reason[:maxWarningBytes] + "..."
	}
	ix.unread[name] = validUTF8(reason)
	return nil
}

// charge counts n bytes of file content about to be handed to the
// extractors against MaxUncompressedBytes. A file's size, not the bytes
// its tar entry holds, is what is read: a sparse entry of a few bytes can
// claim a terabyte of holes, which archive/tar reads as zeros.
func (ix *indexer) charge(n int64) error {
	if ix.content += n; ix.content > ix.lim.MaxUncompressedBytes {
		return &unsupportedError{fmt.Sprintf("file content to read is over the %d-byte limit (files count at their full size, sparse files too)",
			ix.lim.MaxUncompressedBytes)}
	}
	return nil
}

// regular handles a regular file: if an extractor or the os-release reader
// wants it, it is read (bounded) and handed to the extractors right away.
func (ix *indexer) regular(tr *tar.Reader, hdr *tar.Header, name string) error {
	info := hdr.FileInfo()
	wanters := ix.ex.required(simplefileapi.New(name, info))
	osr := isOSRelease(name)
	cm := isContentManifest(name)
	if len(wanters) == 0 && !osr && !cm {
		return nil
	}
	if err := ix.rewrite(name); err != nil {
		return err
	}
	if hdr.Size > ix.lim.MaxFileBytes {
		return ix.tooBig(tr, hdr, name, wanters) // skipped.go
	}
	if cm {
		return ix.contentManifest(tr, hdr, name)
	}
	if osr {
		if hdr.Size > maxOSReleaseBytes {
			ix.warn("skipped %s: %d bytes is too big for an os-release file", name, hdr.Size)
		} else {
			if err := ix.charge(hdr.Size); err != nil {
				return err
			}
			data, err := readN(tr, hdr.Size)
			if err != nil {
				return err
			}
			ix.osrel[name] = data
			return ix.runAll(wanters, name, hdr, &content{data: data})
		}
	}
	if len(wanters) == 0 {
		return nil
	}

	var src io.Reader = tr
	if ix.ex.onlyGoBinary(wanters) {
		// Most executables are scripts or C programs: look at the magic
		// bytes before reading the whole file.
		if err := ix.charge(min(hdr.Size, 4)); err != nil {
			return err
		}
		head, err := readUpTo(tr, 4)
		if err != nil {
			return err
		}
		if !isExecutableFormat(head) {
			return nil
		}
		src = io.MultiReader(bytes.NewReader(head), tr)
		if err := ix.charge(hdr.Size - int64(len(head))); err != nil {
			return err
		}
	} else if err := ix.charge(hdr.Size); err != nil {
		return err
	}

	// Records of a dpkg or apk database are counted on the way, to refuse
	// one of too many packages before extraction.
	var records *recordCounter
	if wantsRecords(wanters) {
		records = &recordCounter{}
		src = io.TeeReader(src, records)
	}
	if hdr.Size <= memFileBytes && !ix.ex.needsRealFile(wanters) {
		data, err := readN(src, hdr.Size)
		if err != nil {
			return err
		}
		if err := ix.precountRecords(records); err != nil {
			return err
		}
		return ix.runAll(wanters, name, hdr, &content{data: data})
	}
	c, err := spool(src, name, hdr.Size)
	if err != nil {
		return err
	}
	defer c.remove()
	if err := ix.precountRecords(records); err != nil {
		return err
	}
	return ix.runAll(wanters, name, hdr, c)
}

// runAll runs the extractors that want name on its content.
func (ix *indexer) runAll(wanters []namedExtractor, name string, hdr *tar.Header, c *content) error {
	for _, w := range wanters {
		ok := true
		var err error
		switch w.name {
		case rpm.Name:
			// Whatever its name, go-rpmdb reads the file in the format its
			// first bytes name: each is checked first (rpmdb.go).
			ok, err = ix.guardRPM(name, c)
		case archive.Name, wheelegg.Name:
			// What they read inside archives is bounded first (archives.go).
			ok, err = ix.guardArchive(w, name, c)
		}
		if err != nil {
			return err
		}
		if !ok {
			continue
		}
		pkgs, err := ix.ex.run(ix.ctx, w, name, hdr.FileInfo(), c, ix.extractorFS())
		if ctxErr := ix.ctx.Err(); ctxErr != nil {
			return ctxErr
		}
		if err != nil {
			if err := ix.extractorFailed(w, name, c, err); err != nil { // skipped.go
				return err
			}
		}
		if err := ix.addPackages(name, pkgs); err != nil {
			return err
		}
	}
	return nil
}

// hardlink handles a hard link to a file earlier in the layer: the link gets
// what was found in its target.
func (ix *indexer) hardlink(hdr *tar.Header, name string) error {
	wanters := ix.ex.required(simplefileapi.New(name, hdr.FileInfo()))
	wanted := isOSRelease(name) || isContentManifest(name) || len(wanters) > 0
	if !wanted {
		return nil
	}
	if err := ix.rewrite(name); err != nil {
		return err
	}
	target, ok := cleanPath(hdr.Linkname)
	if !ok || !ix.files[target] {
		ix.warn("skipped %s: hard link to %s, which was not indexed", name, hdr.Linkname)
		if wantsOSDatabase(wanters) {
			return ix.notRead(name, "not read: a hard link to %s, which the scanner did not read", hdr.Linkname)
		}
		return nil
	}
	if why, ok := ix.unread[target]; ok {
		if err := ix.notRead(name, "a hard link to %s: %s", target, why); err != nil {
			return err
		}
	}
	linked := make([]Package, 0, len(ix.pkgs[target]))
	for _, p := range ix.pkgs[target] {
		p.Path = name
		linked = append(linked, p)
	}
	if err := ix.addPackages(name, linked); err != nil {
		return err
	}
	if data, ok := ix.osrel[target]; ok && isOSRelease(name) {
		ix.osrel[name] = data
	}
	if sets, ok := ix.manifests[target]; ok && isContentManifest(name) {
		ix.manifests[name] = sets
	}
	return nil
}

// symlink handles a symbolic link where an OS package database belongs.
// The scanner does not follow links: one to another path of a package
// database is fine (that file is read where it is), one elsewhere leaves
// the packages unknown.
func (ix *indexer) symlink(hdr *tar.Header, name string) error {
	info := hdr.FileInfo()
	if !wantsOSDatabase(ix.ex.required(simplefileapi.New(name, info))) {
		return nil
	}
	if err := ix.rewrite(name); err != nil {
		return err
	}
	target := hdr.Linkname
	if !path.IsAbs(target) {
		target = path.Join(path.Dir(name), target)
	}
	if t, ok := cleanPath(target); ok && t != name && wantsOSDatabase(ix.ex.required(simplefileapi.New(t, info))) {
		return nil
	}
	ix.warn("skipped %s: a symbolic link to %s", name, hdr.Linkname)
	return ix.notRead(name, "not read: a symbolic link (to %s), which the scanner does not follow", hdr.Linkname)
}

// contentManifest reads the content sets a content manifest names.
func (ix *indexer) contentManifest(tr *tar.Reader, hdr *tar.Header, name string) error {
	if hdr.Size > maxContentManifestBytes {
		ix.warn("skipped %s: %d bytes is too big for a content manifest", name, hdr.Size)
		return nil
	}
	if err := ix.charge(hdr.Size); err != nil {
		return err
	}
	data, err := readN(tr, hdr.Size)
	if err != nil {
		return err
	}
	sets, ok, err := parseContentManifest(data)
	inBuildInfo := path.Dir(name) == buildInfoDir
	switch {
	case err != nil && inBuildInfo:
		return nil // not all JSON there is a content manifest
	case err != nil:
		ix.warn("content manifest %s: %v", name, err)
		return nil
	case !ok && inBuildInfo:
		return nil // labels.json and the like
	}
	ix.manifests[name] = sets
	return nil
}

// readN reads exactly n bytes of r.
func readN(r io.Reader, n int64) ([]byte, error) {
	buf := make([]byte, n)
	if _, err := io.ReadFull(r, buf); err != nil {
		return nil, err
	}
	return buf, nil
}

// readUpTo reads up to n bytes of r; a shorter file is not an error.
func readUpTo(r io.Reader, n int) ([]byte, error) {
	buf := make([]byte, n)
	got, err := io.ReadFull(r, buf)
	if errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, io.EOF) {
		err = nil
	}
	return buf[:got], err
}

// isExecutableFormat reports whether head starts like a binary format
// debug/buildinfo can read (ELF, PE, Mach-O, XCOFF, WebAssembly).
func isExecutableFormat(head []byte) bool {
	for _, m := range [][]byte{
		[]byte("\x7fELF"),
		[]byte("MZ"),
		{0xfe, 0xed, 0xfa, 0xce}, {0xfe, 0xed, 0xfa, 0xcf},
		{0xce, 0xfa, 0xed, 0xfe}, {0xcf, 0xfa, 0xed, 0xfe},
		{0x01, 0xdf}, {0x01, 0xf7},
		[]byte("\x00asm"),
	} {
		if bytes.HasPrefix(head, m) {
			return true
		}
	}
	return false
}

// content is a file's bytes, in memory or in a temporary file laid out under
// root at the file's layer path (for extractors that need a real path).
type content struct {
	data []byte
	file *os.File
	size int64
	root string
}

func (c *content) reader() io.Reader {
	if c.file != nil {
		return io.NewSectionReader(c.file, 0, c.size)
	}
	return bytes.NewReader(c.data)
}

func (c *content) remove() {
	if c.file != nil {
		_ = c.file.Close()
	}
	if c.root != "" {
		_ = os.RemoveAll(c.root)
	}
}

// spool copies size bytes of r to <tempdir>/<name>.
func spool(r io.Reader, name string, size int64) (_ *content, err error) {
	root, err := os.MkdirTemp("", "berth-index-")
	if err != nil {
		return nil, &fatalError{fmt.Errorf("create temporary directory: %w", err)}
	}
	c := &content{root: root, size: size}
	defer func() {
		if err != nil {
			c.remove()
		}
	}()
	full := filepath.Join(root, filepath.FromSlash(name))
	if err := os.MkdirAll(filepath.Dir(full), 0o700); err != nil {
		return nil, &fatalError{fmt.Errorf("create temporary directory: %w", err)}
	}
	f, err := os.OpenFile(full, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return nil, &fatalError{fmt.Errorf("create temporary file: %w", err)}
	}
	c.file = f
	if _, err := io.CopyN(f, r, size); err != nil {
		var pe *os.PathError
		if errors.As(err, &pe) {
			return nil, &fatalError{fmt.Errorf("write temporary file: %w", err)}
		}
		return nil, err
	}
	return c, nil
}

// result builds the LayerResult of a fully read layer.
func (ix *indexer) result() LayerResult {
	res := LayerResult{Digest: ix.digest, Status: StatusIndexed}
	seen := map[pkgKey]bool{}
	for _, pkgs := range ix.pkgs {
		for _, p := range pkgs {
			p.Kind, p.Name, p.Version = validUTF8(p.Kind), validUTF8(p.Name), validUTF8(p.Version)
			p.SourceName, p.SourceVersion = validUTF8(p.SourceName), validUTF8(p.SourceVersion)
			p.PURL, p.Path = validUTF8(p.PURL), validUTF8(p.Path)
			if k := keyOf(p); !seen[k] {
				seen[k] = true
				res.Packages = append(res.Packages, p)
			}
		}
	}
	sortPackages(res.Packages)
	for _, p := range []string{etcOSRelease, usrOSRelease} {
		if data, ok := ix.osrel[p]; ok {
			if m := parseOSRelease(data); len(m) > 0 {
				res.OSRelease, res.OSReleasePath = m, p
				break
			}
		}
	}
	if len(ix.manifests) > 0 {
		res.ContentManifests = make(map[string][]string, len(ix.manifests))
		for p, sets := range ix.manifests {
			res.ContentManifests[validUTF8(p)] = sets
		}
	}
	for p, why := range ix.unread {
		res.Unread = append(res.Unread, Gap{Path: validUTF8(p), Reason: why})
	}
	slices.SortFunc(res.Unread, func(a, b Gap) int { return strings.Compare(a.Path, b.Path) })
	res.Files = sortedKeys(ix.files)
	res.Whiteouts = sortedKeys(ix.whiteouts)
	res.Warnings = ix.warnings
	if ix.dropped > 0 {
		res.Warnings = append(res.Warnings, fmt.Sprintf("%d more warnings not shown", ix.dropped))
	}
	return res
}

// sortedKeys returns the keys of m, made valid UTF-8, sorted and unique.
func sortedKeys(m map[string]bool) []string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, validUTF8(k))
	}
	slices.Sort(keys)
	return slices.Compact(keys)
}
