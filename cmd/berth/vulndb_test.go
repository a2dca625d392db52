package main

import (
	"archive/zip"
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/server"
)

// lockedBuffer collects a server's logs.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// serveFor runs `berth serve` on cfg (its data directory) until the
// returned stop is called, and returns its host and its logs.
func serveFor(t *testing.T, cfg config.Config) (string, *lockedBuffer, func()) {
	t.Helper()
	cfg.Storage.Filesystem.Fsync = false
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg.Addr = ln.Addr().String()
	logs := &lockedBuffer{}
	srv, err := server.New(context.Background(), cfg, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	var once sync.Once
	stop := func() { once.Do(func() { cancel(); <-done; srv.Close() }) }
	t.Cleanup(stop)
	return ln.Addr().String(), logs, stop
}

// waitLog waits for a line of a server's log.
func waitLog(t *testing.T, logs *lockedBuffer, want string) {
	t.Helper()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(logs.String(), want); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no %q in the log:\n%s", want, logs)
		}
	}
}

// osvBucket serves <Ecosystem>/all.zip files, with ETags, as OSV's bucket
// does, and counts the downloads.
func osvBucket(t *testing.T, files map[string][]byte) (*httptest.Server, func() int) {
	var mu sync.Mutex
	downloads := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, ok := files[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("ETag", `"1"`)
		if r.Header.Get("If-None-Match") == `"1"` {
			w.WriteHeader(http.StatusNotModified)
			return
		}
		mu.Lock()
		downloads++
		mu.Unlock()
		w.Write(b)
	}))
	t.Cleanup(srv.Close)
	return srv, func() int { mu.Lock(); defer mu.Unlock(); return downloads }
}

func allZip(t *testing.T, records ...string) []byte {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i, r := range records {
		f, _ := zw.Create(string(rune('a'+i)) + ".json")
		f.Write([]byte(r))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

const zlibRecord = `{"id":"DEBIAN-CVE-2026-0001","modified":"2026-01-01T00:00:00Z",
  "severity":[{"type":"CVSS_V3","score":"CVSS:3.1/AV:N/AC:L/PR:N/UI:N/S:U/C:H/I:H/A:H"}],
  "affected":[{"package":{"ecosystem":"Debian:12","name":"zlib"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"1:1.2.13.dfsg-1+deb12u1"}]}]}]}`

// pushDebian pushes the Debian 12 fixture to alice/app:deb and an index of
// it to alice/app:multi.
func pushDebian(t *testing.T, host, password string) {
	t.Helper()
	fixture, err := os.ReadFile("../../internal/scan/index/testdata/debian-layer.tar.gz")
	if err != nil {
		t.Fatal(err)
	}
	img, _ := mutate.AppendLayers(empty.Image, static.NewLayer(fixture, types.DockerLayer))
	creds := remote.WithAuth(&authn.Basic{Username: "alice", Password: password})
	ref, _ := name.ParseReference(host+"/alice/app:deb", name.Insecure)
	if err := remote.Write(ref, img, creds); err != nil {
		t.Fatal(err)
	}
	idx := mutate.AppendManifests(empty.Index, mutate.IndexAddendum{Add: img})
	ref, _ = name.ParseReference(host+"/alice/app:multi", name.Insecure)
	if err := remote.WriteIndex(ref, idx, creds); err != nil {
		t.Fatal(err)
	}
}

// TestVulnsWithoutData: before any data is imported, `berth vulns` on a
// Debian image exits 4 with a one-line reason instead of printing a
// clean report, --allow-missing-data accepts that with a warning; after
// `berth admin vulndb fetch` from a local stand-in for OSV's bucket the
// gate works, on the image and on an index of it; a second fetch
// downloads nothing.
func TestVulnsWithoutData(t *testing.T) {
	dir := t.TempDir()
	out, err := runIn(t, "", "admin", "user", "create", "alice", "--superuser", "--data-dir", dir)
	if err != nil {
		t.Fatal(err, out)
	}
	password := regexp.MustCompile(`password: (\S+)`).FindStringSubmatch(out)[1]
	cfg := config.Default()
	cfg.DataDir = dir
	host, logs, _ := serveFor(t, cfg)
	waitLog(t, logs, "the vulnerability database is empty")
	pushDebian(t, host, password)
	vulns := func(args ...string) (string, error) {
		return runIn(t, password+"\n", append([]string{"vulns", "--insecure", "-u", "alice", "--password-stdin", "--wait", "30s"}, args...)...)
	}
	var ec *exitCodeError

	out, err = vulns(host+"/alice/app:deb", "--fail-on", "low")
	if !errors.As(err, &ec) || ec.code != exitMissingData || strings.Contains(ec.msg, "\n") ||
		!strings.Contains(ec.msg, "no vulnerability data for Debian:12 (4 packages: no advisories imported for Debian)") ||
		!strings.Contains(ec.msg, "berth admin vulndb fetch Debian") || !strings.Contains(ec.msg, "--allow-missing-data") {
		t.Fatalf("no data: %v\n%s", err, out)
	}
	if !strings.Contains(out, "4 packages, 0 vulnerabilities: none (INCOMPLETE: no vulnerability data for Debian:12)") {
		t.Fatalf("table without data:\n%s", out)
	}
	if !regexp.MustCompile(`level=WARN msg="image scanned without current vulnerability data.*missing=\[Debian:12\]`).MatchString(logs.String()) {
		t.Fatalf("no warning on the scan:\n%s", logs)
	}
	out, err = vulns(host+"/alice/app:deb", "--fail-on", "low", "--allow-missing-data")
	if err != nil || !strings.Contains(out, "warning: no vulnerability data for Debian:12") {
		t.Fatalf("--allow-missing-data: %v\n%s", err, out)
	}
	out, err = vulns(host+"/alice/app:multi", "--json")
	if !errors.As(err, &ec) || ec.code != exitMissingData || !strings.Contains(out, `"vulnerability_data": {`) || !strings.Contains(out, `"complete": false`) {
		t.Fatalf("an index, as JSON: %v\n%s", err, out)
	}

	bucket, downloads := osvBucket(t, map[string][]byte{"/Debian/all.zip": allZip(t, zlibRecord)})
	out, err = runIn(t, "", "admin", "vulndb", "fetch", "--data-dir", dir, "--base-url", bucket.URL)
	if err != nil || !strings.Contains(out, "Debian: downloaded") || !strings.Contains(out, "1 records: 1 applied") || strings.Contains(out, "\r") {
		t.Fatalf("fetch: %v\n%s", err, out)
	}
	out, err = runIn(t, "", "admin", "vulndb", "fetch", "Debian", "--data-dir", dir, "--base-url", bucket.URL)
	if err != nil || !strings.Contains(out, "Debian: unchanged since the last fetch (not downloaded)") || downloads() != 1 {
		t.Fatalf("fetch again: %v (%d downloads)\n%s", err, downloads(), out)
	}
	out, err = runIn(t, "", "admin", "vulndb", "fetch", "Nonesuch", "--data-dir", dir, "--base-url", bucket.URL)
	if err == nil || !strings.Contains(out, "Nonesuch: FAILED") || !strings.Contains(err.Error(), "404") {
		t.Fatalf("an unknown ecosystem: %v\n%s", err, out)
	}

	for _, image := range []string{"alice/app:deb", "alice/app:multi"} {
		out, err = vulns(host+"/"+image, "--fail-on", "high")
		if !errors.As(err, &ec) || ec.code != exitThreshold || !strings.Contains(out, "DEBIAN-CVE-2026-0001") {
			t.Fatalf("%s with data: %v\n%s", image, err, out)
		}
	}
	if out, err = vulns(host + "/alice/app:deb"); err != nil || strings.Contains(out, "INCOMPLETE") {
		t.Fatalf("without --fail-on: %v\n%s", err, out)
	}
	out, err = vulns(host+"/alice/app:deb", "--max-data-age", "1ns")
	if !errors.As(err, &ec) || ec.code != exitMissingData || !strings.Contains(ec.msg, "older than --max-data-age 1ns") {
		t.Fatalf("--max-data-age: %v\n%s", err, out)
	}
}

// TestServeScheduledUpdate: with scan.vulndb.updateInterval the server
// fetches by itself at start, through the SSRF guard: a loopback bucket
// is refused with the setting that allows it, then fetched once allowed.
func TestServeScheduledUpdate(t *testing.T) {
	dir := t.TempDir()
	out, err := runIn(t, "", "admin", "user", "create", "alice", "--superuser", "--data-dir", dir)
	if err != nil {
		t.Fatal(err, out)
	}
	password := regexp.MustCompile(`password: (\S+)`).FindStringSubmatch(out)[1]
	cfg := config.Default()
	cfg.DataDir = dir
	host, _, stop := serveFor(t, cfg)
	pushDebian(t, host, password)
	out, err = runIn(t, password+"\n", "vulns", host+"/alice/app:deb", "--insecure", "-u", "alice", "--password-stdin", "--wait", "30s", "--allow-missing-data")
	if err != nil {
		t.Fatal(err, out)
	}
	stop()

	bucket, downloads := osvBucket(t, map[string][]byte{"/Debian/all.zip": allZip(t, zlibRecord)})
	cfg.Scan.VulnDB.UpdateInterval = time.Hour
	cfg.Scan.VulnDB.BaseURL = bucket.URL
	_, logs, stop := serveFor(t, cfg)
	waitLog(t, logs, "the vulnerability database is empty")
	if !strings.Contains(logs.String(), "ecosystems=[Debian]") {
		t.Fatalf("start warning:\n%s", logs)
	}
	waitLog(t, logs, "vulnerability database update: Debian: FAILED")
	if !strings.Contains(logs.String(), "refusing to connect") || downloads() != 0 {
		t.Fatalf("the guard let it through:\n%s", logs)
	}
	stop()

	cfg.Notifications.AllowedHosts = []string{"loopback"}
	host, logs, _ = serveFor(t, cfg)
	waitLog(t, logs, "vulnerability database update: Debian: downloaded")
	var ec *exitCodeError
	out, err = runIn(t, password+"\n", "vulns", host+"/alice/app:deb", "--insecure", "-u", "alice", "--password-stdin", "--fail-on", "critical")
	if !errors.As(err, &ec) || ec.code != exitThreshold {
		t.Fatalf("after the scheduled update: %v\n%s", err, out)
	}
}
