package main

// Content for the scanning benchmark (-scan): names, versions and the
// image's layers, generated in-process from fixed seeds (nothing is
// downloaded); scan_osv.go makes the advisories and the manifest
// population.

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"debug/buildinfo"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// tarFile is one entry of a generated layer.
type tarFile struct {
	name string
	mode int64
	data []byte
}

// gzipTar writes files as a gzip member holding a tar stream. With end
// false the tar end-of-archive blocks are left out, so that another member
// can follow: gzip readers read concatenated members as one stream
// (RFC 1952, multistream), which lets a precompressed body be reused behind
// a small member that makes each layer's digest new.
func gzipTar(files []tarFile, end bool) ([]byte, error) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	tw := tar.NewWriter(zw)
	for _, f := range files {
		mode := f.mode
		if mode == 0 {
			mode = 0o644
		}
		hdr := &tar.Header{Name: f.name, Mode: mode, Size: int64(len(f.data)), Typeflag: tar.TypeReg,
			ModTime: time.Unix(1_700_000_000, 0), Uname: "root", Gname: "root"}
		if err := tw.WriteHeader(hdr); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.name, err)
		}
		if _, err := tw.Write(f.data); err != nil {
			return nil, fmt.Errorf("tar %s: %w", f.name, err)
		}
	}
	var err error
	if end {
		err = tw.Close()
	} else {
		err = tw.Flush()
	}
	if err != nil {
		return nil, fmt.Errorf("tar: %w", err)
	}
	if err := zw.Close(); err != nil {
		return nil, fmt.Errorf("gzip: %w", err)
	}
	return buf.Bytes(), nil
}

// withNonce returns body preceded by a gzip member holding one small file,
// so that the layer's digest is new while its packages stay the same.
func withNonce(body []byte, path, nonce string) ([]byte, error) {
	head, err := gzipTar([]tarFile{{name: path, data: []byte(nonce + "\n")}}, false)
	if err != nil {
		return nil, err
	}
	return append(head, body...), nil
}

// ---- names, versions and text ----

var loremWords = strings.Fields(`the a of to in and is for with on that by this be are from as it or an
library package support data file files system used function functions allow allows handling parser
parsing buffer memory overflow remote attacker could crafted input denial service via request response
header headers certificate validation error errors stream streams compression format format string
client server connection socket protocol version versions option options default configuration module
modules implementation utility utilities command line tool tools provides runtime shared object code`)

func words(rng *rand.Rand, n int) string {
	var b strings.Builder
	for i := range n {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(loremWords[rng.IntN(len(loremWords))])
	}
	return b.String()
}

var syllables = strings.Fields("ab ac ad al am an ar as at ba be bo bu ca ce co cu da de di do du el em en er es fa fe fi fo ga ge gi go ha he hi ho ja ka ke ki ko la le li lo lu ma me mi mo mu na ne ni no nu pa pe pi po ra re ri ro ru sa se si so su ta te ti to tu va ve vi vo xa xe ya yo za ze zo")

func synthName(rng *rand.Rand) string {
	n := 2 + rng.IntN(3)
	var b strings.Builder
	for range n {
		b.WriteString(syllables[rng.IntN(len(syllables))])
	}
	return b.String()
}

// realDebianSources are source packages of Debian 12 images.
var realDebianSources = strings.Fields(`acl adduser apt attr audit base-files base-passwd bash bzip2
ca-certificates coreutils curl cyrus-sasl2 dash db5.3 debconf debian-archive-keyring debianutils diffutils
dpkg e2fsprogs expat findutils gcc-12 gdbm glib2.0 glibc gmp gnupg2 gnutls28 grep gzip hostname icu
init-system-helpers keyutils krb5 libcap-ng libcap2 libffi libgcrypt20 libgpg-error libidn2 libpsl
libseccomp libselinux libsemanage libsepol libssh2 libtasn1-6 libunistring libxcrypt libxml2 libxslt
libzstd login lz4 mawk ncurses nettle nghttp2 openldap openssl p11-kit pam pcre2 perl procps python3.11
readline rtmpdump sed shadow sqlite3 systemd sysvinit tar tzdata util-linux xz-utils zlib libyaml
libpng1.6 libjpeg-turbo tiff freetype fontconfig harfbuzz cairo pango1.0 git openssh wget less vim nano
iproute2 iputils netbase libbsd libmd brotli libssh jansson libevent libuv1 nodejs python-pip
python-setuptools libedit gettext file libmnl libnftnl iptables nftables sudo cron logrotate rsyslog
lsb-release media-types tini dumb-init`)

var realNPM = strings.Fields(`lodash express react react-dom debug ms chalk commander semver uuid
minimist yargs glob rimraf mkdirp async moment axios body-parser cookie qs send serve-static mime
mime-types accepts negotiator depd inherits safe-buffer string_decoder readable-stream bluebird
underscore classnames prop-types tslib rxjs core-js regenerator-runtime ws socket.io colors dotenv
jsonwebtoken bcrypt cors helmet morgan winston nanoid fs-extra graceful-fs path-to-regexp
follow-redirects form-data combined-stream delayed-stream asynckit ansi-regex strip-ansi
supports-color has-flag escape-string-regexp`)

var realPyPI = strings.Fields(`requests urllib3 idna certifi charset-normalizer numpy pandas
python-dateutil six pytz setuptools pip wheel packaging pyyaml jinja2 markupsafe click flask werkzeug
itsdangerous cryptography cffi pycparser attrs pyasn1 rsa botocore boto3 s3transfer jmespath
protobuf grpcio typing-extensions pydantic sqlalchemy psycopg2-binary redis celery kombu
gunicorn uvicorn fastapi starlette anyio sniffio h11 httpx httpcore pillow lxml`)

// uniquePool returns n distinct names: the real ones first, then made-up
// ones in the same style.
func uniquePool(rng *rand.Rand, real []string, n int, style func(*rand.Rand) string) []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range real {
		if len(out) < n && !seen[r] {
			seen[r] = true
			out = append(out, r)
		}
	}
	for len(out) < n {
		s := style(rng)
		if !seen[s] {
			seen[s] = true
			out = append(out, s)
		}
	}
	return out
}

// debianPool is the Debian source package names the image, the advisories
// and the re-match population draw from.
func debianPool() []string {
	return uniquePool(rand.New(rand.NewPCG(7, 8)), realDebianSources, 2000, debianStyle)
}

func debianStyle(rng *rand.Rand) string {
	s := synthName(rng)
	switch rng.IntN(6) {
	case 0:
		return "lib" + s
	case 1:
		return "lib" + s + strconv.Itoa(1+rng.IntN(3))
	case 2:
		return s + "-utils"
	}
	return s
}

func npmStyle(rng *rand.Rand) string {
	s := synthName(rng)
	switch rng.IntN(5) {
	case 0:
		return "@" + synthName(rng) + "/" + s
	case 1:
		return s + "-" + synthName(rng)
	}
	return s
}

func pypiStyle(rng *rand.Rand) string {
	s := synthName(rng)
	if rng.IntN(3) == 0 {
		return "python-" + s
	}
	return s
}

func goStyle(rng *rand.Rand) string {
	return "github.com/" + synthName(rng) + "/" + synthName(rng)
}

// debianVersion is a plausible Debian version: [epoch:]upstream-revision.
func debianVersion(rng *rand.Rand) string {
	v := fmt.Sprintf("%d.%d.%d", 1+rng.IntN(9), rng.IntN(20), rng.IntN(15))
	if rng.IntN(10) == 0 {
		v += "+dfsg"
	}
	v += "-" + strconv.Itoa(1+rng.IntN(5))
	if rng.IntN(5) == 0 {
		v += "+deb12u" + strconv.Itoa(1+rng.IntN(4))
	}
	if rng.IntN(10) == 0 {
		v = strconv.Itoa(1+rng.IntN(2)) + ":" + v
	}
	return v
}

func semverVersion(rng *rand.Rand) string {
	return fmt.Sprintf("%d.%d.%d", rng.IntN(8), 1+rng.IntN(30), rng.IntN(20))
}

// semverParts reads major.minor.patch from v ("v1.2.3-pre+meta").
func semverParts(v string) (int, int, int, bool) {
	v = strings.TrimPrefix(v, "v")
	if i := strings.IndexAny(v, "-+"); i >= 0 {
		v = v[:i]
	}
	p := strings.Split(v, ".")
	if len(p) < 2 {
		return 0, 0, 0, false
	}
	var n [3]int
	for i := range min(len(p), 3) {
		x, err := strconv.Atoi(p[i])
		if err != nil {
			return 0, 0, 0, false
		}
		n[i] = x
	}
	return n[0], n[1], n[2], true
}

// above and below return a version of the ecosystem just above and well
// below v (ok false when there is none below).
func above(eco, v string) string {
	if strings.HasPrefix(eco, "Debian") {
		return v + "+deb12u9"
	}
	maj, mnr, pat, ok := semverParts(v)
	if !ok {
		return "999.0.0"
	}
	return fmt.Sprintf("%d.%d.%d", maj, mnr, pat+1)
}

func below(eco, v string) (string, bool) {
	if strings.HasPrefix(eco, "Debian") {
		if e, _, ok := strings.Cut(v, ":"); ok {
			return e + ":0.0.1-1", true
		}
		return "0.0.1-1", true
	}
	maj, mnr, pat, ok := semverParts(v)
	switch {
	case !ok:
		return "", false
	case pat > 0:
		return fmt.Sprintf("%d.%d.%d", maj, mnr, pat-1), true
	case mnr > 0:
		return fmt.Sprintf("%d.%d.0", maj, mnr-1), true
	case maj > 0:
		return fmt.Sprintf("%d.0.0", maj-1), true
	}
	return "", false
}

// ---- the image ----

// dpkgPkg is a stanza of the image's dpkg status.
type dpkgPkg struct {
	name, version, source, sourceVersion string
}

// srcName and srcVersion are what Debian advisories name.
func (p dpkgPkg) srcName() string {
	if p.source != "" {
		return p.source
	}
	return p.name
}

func (p dpkgPkg) srcVersion() string {
	if p.sourceVersion != "" {
		return p.sourceVersion
	}
	return p.version
}

type langPkg struct{ name, version string }

// imageSpec is the scanned image: layer bodies (precompressed, see
// withNonce) and the packages they hold.
type imageSpec struct {
	fixture []byte // the Debian fixture layer, as committed
	bodies  []layerBody
	dpkg    []dpkgPkg
	npm     []langPkg
	pypi    []langPkg
	gomods  []langPkg // the binary's modules and stdlib
	goBin   string
	goBytes int64
}

type layerBody struct {
	name  string // what the layer is, for the report
	nonce string // path of the file that varies
	body  []byte
}

// parseDpkgStatus reads the stanzas of a dpkg status file.
func parseDpkgStatus(s string) []dpkgPkg {
	var out []dpkgPkg
	for _, stanza := range strings.Split(strings.TrimSpace(s), "\n\n") {
		var p dpkgPkg
		for _, line := range strings.Split(stanza, "\n") {
			k, v, ok := strings.Cut(line, ": ")
			if !ok {
				continue
			}
			switch k {
			case "Package":
				p.name = v
			case "Version":
				p.version = v
			case "Source":
				p.source = v
				if n, ver, ok := strings.Cut(v, " ("); ok {
					p.source, p.sourceVersion = n, strings.TrimSuffix(ver, ")")
				}
			}
		}
		if p.name != "" {
			out = append(out, p)
		}
	}
	return out
}

// fixtureStatus returns the dpkg status inside the fixture layer.
func fixtureStatus(blob []byte) (string, error) {
	zr, err := gzip.NewReader(bytes.NewReader(blob))
	if err != nil {
		return "", fmt.Errorf("fixture: %w", err)
	}
	tr := tar.NewReader(zr)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return "", fmt.Errorf("fixture has no var/lib/dpkg/status")
		}
		if err != nil {
			return "", fmt.Errorf("fixture: %w", err)
		}
		if strings.TrimPrefix(hdr.Name, "./") == "var/lib/dpkg/status" {
			b, err := io.ReadAll(tr)
			return string(b), err
		}
	}
}

// buildImage makes the image's layers: the Debian fixture, an apt layer
// whose dpkg status holds the fixture's packages and dpkgCount-ish more
// (with their docs and shared libraries), the Go binary, node_modules and
// Python site-packages.
func buildImage(root, goBin string, debPool []string, dpkgCount, npmCount, pypiCount int) (*imageSpec, error) {
	rng := rand.New(rand.NewPCG(1, 2))
	bytesRng := rand.NewChaCha8([32]byte{1})
	fixture, err := os.ReadFile(filepath.Join(root, "internal/scan/index/testdata/debian-layer.tar.gz"))
	if err != nil {
		return nil, fmt.Errorf("read fixture layer: %w", err)
	}
	status, err := fixtureStatus(fixture)
	if err != nil {
		return nil, err
	}
	img := &imageSpec{fixture: fixture, goBin: goBin}
	img.dpkg = parseDpkgStatus(status)
	taken := map[string]bool{}
	for _, p := range img.dpkg {
		taken[p.srcName()] = true
		taken[p.name] = true
	}

	// The apt layer: more Debian packages, ~1.5 binaries per source.
	var stanzas strings.Builder
	stanzas.WriteString(strings.TrimSpace(status) + "\n\n")
	var files []tarFile
	for _, src := range debPool {
		if len(img.dpkg) >= dpkgCount {
			break
		}
		if taken[src] {
			continue
		}
		taken[src] = true
		srcVer := debianVersion(rng)
		bins := []string{src}
		if rng.IntN(2) == 0 {
			bins = append(bins, []string{"lib" + strings.TrimPrefix(src, "lib") + strconv.Itoa(rng.IntN(4)), src + "-common", src + "-bin", src + "-data"}[rng.IntN(4)])
		}
		for _, bin := range bins {
			if taken[bin] && bin != src {
				continue
			}
			taken[bin] = true
			p := dpkgPkg{name: bin, version: srcVer}
			if bin != src {
				p.source = src
			}
			if rng.IntN(12) == 0 { // binNMU: the binary's version differs
				p.version = srcVer + "+b1"
				p.source, p.sourceVersion = src, srcVer
			}
			img.dpkg = append(img.dpkg, p)
			fmt.Fprintf(&stanzas, "Package: %s\nStatus: install ok installed\nPriority: optional\nSection: libs\nInstalled-Size: %d\n"+
				"Maintainer: Debian %s Maintainers <pkg-%s@lists.debian.org>\nArchitecture: amd64\nMulti-Arch: same\n",
				bin, 50+rng.IntN(5000), src, src)
			switch {
			case p.sourceVersion != "":
				fmt.Fprintf(&stanzas, "Source: %s (%s)\n", p.source, p.sourceVersion)
			case p.source != "":
				fmt.Fprintf(&stanzas, "Source: %s\n", p.source)
			}
			fmt.Fprintf(&stanzas, "Version: %s\nDepends: libc6 (>= 2.34)\nDescription: %s\n %s\nHomepage: https://%s.example.org/\n\n",
				p.version, words(rng, 6), words(rng, 20), src)
			doc := []byte(fmt.Sprintf("Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: %s\n\n%s\n", src, words(rng, 150+rng.IntN(200))))
			files = append(files,
				tarFile{name: "usr/share/doc/" + bin + "/copyright", data: doc},
				tarFile{name: "var/lib/dpkg/info/" + bin + ".list", data: []byte("/.\n/usr\n/usr/share/doc/" + bin + "\n/usr/share/doc/" + bin + "/copyright\n")},
				tarFile{name: "var/lib/dpkg/info/" + bin + ".md5sums", data: []byte(fmt.Sprintf("%x  usr/share/doc/%s/copyright\n", sha256.Sum256(doc), bin))})
			if strings.HasPrefix(bin, "lib") {
				so := make([]byte, 16<<10+rng.IntN(80<<10))
				bytesRng.Read(so)
				files = append(files, tarFile{name: "usr/lib/x86_64-linux-gnu/" + bin + ".so.1", data: so})
			}
		}
	}
	files = append(files, tarFile{name: "var/lib/dpkg/status", data: []byte(stanzas.String())})
	apt, err := gzipTar(files, true)
	if err != nil {
		return nil, err
	}

	// The Go binary, with its module list.
	bi, err := buildinfo.ReadFile(goBin)
	if err != nil {
		return nil, fmt.Errorf("read build info of %s: %w", goBin, err)
	}
	img.gomods = append(img.gomods, langPkg{"stdlib", strings.TrimPrefix(bi.GoVersion, "go")})
	for _, d := range bi.Deps {
		if d.Replace != nil {
			d = d.Replace
		}
		img.gomods = append(img.gomods, langPkg{d.Path, d.Version})
	}
	bin, err := os.ReadFile(goBin)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", goBin, err)
	}
	img.goBytes = int64(len(bin))
	goLayer, err := gzipTar([]tarFile{{name: "usr/local/bin/berth", mode: 0o755, data: bin}}, true)
	if err != nil {
		return nil, err
	}

	// node_modules: package.json, code and docs per package; a tenth nested.
	npmNames := uniquePool(rng, realNPM, npmCount, npmStyle)
	files = files[:0]
	for i, n := range npmNames {
		v := semverVersion(rng)
		img.npm = append(img.npm, langPkg{n, v})
		dir := "usr/src/app/node_modules/" + n
		if i%10 == 9 {
			dir = "usr/src/app/node_modules/" + npmNames[i-1] + "/node_modules/" + n
		}
		deps := map[string]string{}
		for range rng.IntN(4) {
			deps[npmNames[rng.IntN(len(npmNames))]] = "^" + semverVersion(rng)
		}
		pj, _ := json.MarshalIndent(map[string]any{"name": n, "version": v, "description": words(rng, 8), "main": "index.js",
			"license": "MIT", "repository": map[string]string{"type": "git", "url": "git+https://github.com/example/" + strings.TrimPrefix(n, "@") + ".git"},
			"dependencies": deps, "engines": map[string]string{"node": ">=14"}, "keywords": strings.Fields(words(rng, 4))}, "", "  ")
		files = append(files, tarFile{name: dir + "/package.json", data: pj},
			tarFile{name: dir + "/index.js", data: []byte("'use strict';\n// " + words(rng, 300+rng.IntN(600)) + "\nmodule.exports = {};\n")},
			tarFile{name: dir + "/README.md", data: []byte("# " + n + "\n\n" + words(rng, 100+rng.IntN(300)) + "\n")},
			tarFile{name: dir + "/LICENSE", data: []byte("MIT License\n\n" + words(rng, 160) + "\n")})
	}
	npmLayer, err := gzipTar(files, true)
	if err != nil {
		return nil, err
	}

	// Python site-packages: a dist-info directory and the module per package.
	pyNames := uniquePool(rng, realPyPI, pypiCount, pypiStyle)
	files = files[:0]
	const site = "usr/local/lib/python3.11/site-packages/"
	for _, n := range pyNames {
		v := semverVersion(rng)
		img.pypi = append(img.pypi, langPkg{n, v})
		mod := strings.ReplaceAll(n, "-", "_")
		di := site + mod + "-" + v + ".dist-info/"
		md := fmt.Sprintf("Metadata-Version: 2.1\nName: %s\nVersion: %s\nSummary: %s\nHome-page: https://%s.example.org\nAuthor: %s\n"+
			"License: BSD-3-Clause\nClassifier: Programming Language :: Python :: 3\nRequires-Python: >=3.8\nDescription-Content-Type: text/markdown\n\n%s\n",
			n, v, words(rng, 8), n, synthName(rng), words(rng, 150+rng.IntN(300)))
		files = append(files, tarFile{name: di + "METADATA", data: []byte(md)},
			tarFile{name: di + "WHEEL", data: []byte("Wheel-Version: 1.0\nGenerator: bdist_wheel (0.41.2)\nRoot-Is-Purelib: true\nTag: py3-none-any\n")},
			tarFile{name: di + "RECORD", data: []byte(mod + "/__init__.py,sha256=abc,1234\n" + di + "METADATA,,\n")},
			tarFile{name: di + "top_level.txt", data: []byte(mod + "\n")},
			tarFile{name: site + mod + "/__init__.py", data: []byte("# " + words(rng, 200+rng.IntN(500)) + "\n")})
	}
	pyLayer, err := gzipTar(files, true)
	if err != nil {
		return nil, err
	}

	img.bodies = []layerBody{
		{name: "Debian 12 fixture (real .deb contents)", nonce: "etc/bench-nonce", body: fixture},
		{name: "apt layer: dpkg status, docs, shared libraries", nonce: "var/lib/bench-nonce", body: apt},
		{name: "Go binary (berth)", nonce: "usr/local/share/bench-nonce", body: goLayer},
		{name: "node_modules", nonce: "usr/src/app/.bench-nonce", body: npmLayer},
		{name: "Python site-packages", nonce: "usr/local/lib/python3.11/.bench-nonce", body: pyLayer},
	}
	return img, nil
}

// layers returns the image's layer blobs, each made new by nonce.
func (img *imageSpec) layers(nonce string) ([][]byte, error) {
	out := make([][]byte, 0, len(img.bodies))
	for _, b := range img.bodies {
		l, err := withNonce(b.body, b.nonce, nonce)
		if err != nil {
			return nil, err
		}
		out = append(out, l)
	}
	return out, nil
}
