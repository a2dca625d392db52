package scan_test

import (
	"archive/zip"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/scan"
	"github.com/berth-dev/berth/internal/scan/index"
)

// osvServer stands in for OSV's bucket (and Red Hat's metadata site): it
// serves files with an ETag and a Last-Modified time, answers conditional
// requests with 304, and counts what it did.
type osvServer struct {
	*httptest.Server
	mu          sync.Mutex
	files       map[string]served
	noETag      bool
	requests    int
	conditional int // requests carrying If-None-Match or If-Modified-Since
	full        int // 200 answers with a body
	truncate    map[string]bool
}

type served struct {
	body []byte
	etag string
	mod  time.Time
}

func newOSVServer(t *testing.T) *osvServer {
	s := &osvServer{files: map[string]served{}, truncate: map[string]bool{}}
	s.Server = httptest.NewServer(http.HandlerFunc(s.serve))
	t.Cleanup(s.Close)
	return s
}

func (s *osvServer) put(path string, body []byte, etag string, mod time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.files[path] = served{body: body, etag: etag, mod: mod}
}

func (s *osvServer) counts() (requests, conditional, full int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requests, s.conditional, s.full
}

func (s *osvServer) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	s.requests++
	if r.Header.Get("If-None-Match") != "" || r.Header.Get("If-Modified-Since") != "" {
		s.conditional++
	}
	f, ok := s.files[r.URL.Path]
	noETag, truncate := s.noETag, s.truncate[r.URL.Path]
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	if !noETag {
		w.Header().Set("ETag", f.etag)
	}
	if truncate {
		// Promise the whole file, send half, and hang up.
		w.Header().Set("Content-Length", fmt.Sprint(len(f.body)))
		w.WriteHeader(http.StatusOK)
		w.Write(f.body[:len(f.body)/2])
		w.(http.Flusher).Flush()
		s.mu.Lock()
		s.full++
		s.mu.Unlock()
		panic(http.ErrAbortHandler)
	}
	rec := &statusRecorder{ResponseWriter: w}
	http.ServeContent(rec, r, "all.zip", f.mod, bytes.NewReader(f.body))
	if rec.status == http.StatusOK {
		s.mu.Lock()
		s.full++
		s.mu.Unlock()
	}
}

type statusRecorder struct {
	http.ResponseWriter
	status int
}

func (r *statusRecorder) WriteHeader(code int) {
	r.status = code
	r.ResponseWriter.WriteHeader(code)
}

func (r *statusRecorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	return r.ResponseWriter.Write(b)
}

// zipOf is an all.zip of the records.
func zipOf(t *testing.T, records ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	for i, r := range records {
		f, err := zw.Create(fmt.Sprintf("REC-%d.json", i))
		if err != nil {
			t.Fatal(err)
		}
		f.Write([]byte(r))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func debRecord(id, modified, name string) string {
	return record(id, modified, `{"package":{"ecosystem":"Debian:12","name":"`+name+`"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"}]}]}`)
}

// rematchJobs counts the re-match jobs ever queued: an import that applies
// nothing queues none.
func rematchJobs(t *testing.T, db *meta.DB) int {
	t.Helper()
	n := 0
	for _, status := range []string{meta.JobPending, meta.JobDone} {
		js, err := db.Jobs().Jobs(context.Background(), meta.ScanQueue, status, 10000)
		if err != nil {
			t.Fatal(err)
		}
		for _, j := range js {
			if strings.Contains(string(j.Payload), `"rematch"`) {
				n++
			}
		}
	}
	return n
}

func only(t *testing.T, rs []scan.FetchResult) scan.FetchResult {
	t.Helper()
	if len(rs) != 1 {
		t.Fatalf("results: %+v", rs)
	}
	return rs[0]
}

// TestFetch drives `vulndb fetch` against a local stand-in for OSV's
// bucket: the first download imports; an unchanged file is answered 304
// and neither downloaded nor imported; a changed file imports only what
// changed; a corrupt or truncated download fails without touching the
// data or what is remembered; an unreachable server and an unknown
// ecosystem fail with a reason, without stopping the other files.
func TestFetch(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, index.Limits{})
			ctx := context.Background()
			srv := newOSVServer(t)
			t1 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			v1 := zipOf(t, debRecord("DEBIAN-CVE-2026-0100", modifiedBase, "zlib"), debRecord("DEBIAN-CVE-2026-0101", modifiedBase, "xz-utils"))
			srv.put("/Debian/all.zip", v1, `"v1"`, t1)
			state := filepath.Join(t.TempDir(), "vulndb")
			var mu sync.Mutex
			phases := map[string]int{}
			f := scan.NewFetcher(e.db.VulnDB(), scan.FetchOptions{BaseURL: srv.URL + "/", StateDir: state, Progress: func(p scan.FetchProgress) {
				mu.Lock()
				phases[p.Phase]++
				mu.Unlock()
			}})

			// First download, named in any case.
			rs, err := f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"debian"}})
			r := only(t, rs)
			if err != nil || r.Name != "Debian" || r.Status != scan.FetchUpdated || r.Bytes != int64(len(v1)) || r.URL != srv.URL+"/Debian/all.zip" ||
				r.Import == nil || r.Import.Applied != 2 || r.Import.Read != 2 {
				t.Fatalf("first fetch: %+v %v", r, err)
			}
			if phases[scan.PhaseRequest] != 1 || phases[scan.PhaseDownload] == 0 || phases[scan.PhaseImport] == 0 || phases[scan.PhaseDone] != 1 {
				t.Fatalf("progress: %v", phases)
			}
			srcs, _ := e.db.VulnDB().VulnSources(ctx)
			if len(srcs) != 1 || srcs[0].Ecosystem != "Debian" || srcs[0].Records != 2 {
				t.Fatalf("sources: %+v", srcs)
			}
			if b, err := os.ReadFile(filepath.Join(state, "osv-Debian.json")); err != nil || !strings.Contains(string(b), `"etag": "\"v1\""`) {
				t.Fatalf("remembered: %s %v", b, err)
			}
			entries, _ := os.ReadDir(state)
			if len(entries) != 1 {
				t.Fatalf("the download is not left behind: %v", entries)
			}
			version, _ := e.db.VulnDB().VulnDBVersion(ctx)
			rematches := rematchJobs(t, e.db)
			before := srcs[0].UpdatedAt

			// Unchanged: a conditional request answered 304; nothing is
			// downloaded or imported, but the data is confirmed current.
			time.Sleep(2 * time.Millisecond)
			rs, err = f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"Debian"}})
			if r := only(t, rs); err != nil || r.Status != scan.FetchUnchanged || r.Import != nil {
				t.Fatalf("unchanged: %+v %v", r, err)
			}
			if req, cond, full := srv.counts(); req != 2 || cond != 1 || full != 1 {
				t.Fatalf("server saw %d requests, %d conditional, %d full downloads", req, cond, full)
			}
			if v, _ := e.db.VulnDB().VulnDBVersion(ctx); v != version || rematchJobs(t, e.db) != rematches {
				t.Fatalf("an unchanged file was imported again")
			}
			if srcs, _ = e.db.VulnDB().VulnSources(ctx); !srcs[0].UpdatedAt.After(before) {
				t.Fatalf("a 304 does not confirm the data current: %v then %v", before, srcs[0].UpdatedAt)
			}

			// Changed: one record modified, one new; one unchanged.
			t2 := t1.Add(time.Hour)
			v2 := zipOf(t, debRecord("DEBIAN-CVE-2026-0100", "2026-02-01T00:00:00Z", "zlib"), debRecord("DEBIAN-CVE-2026-0101", modifiedBase, "xz-utils"),
				debRecord("DEBIAN-CVE-2026-0102", modifiedBase, "bzip2"))
			srv.put("/Debian/all.zip", v2, `"v2"`, t2)
			rs, err = f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"Debian"}})
			if r := only(t, rs); err != nil || r.Status != scan.FetchUpdated || r.Import.Applied != 2 || r.Import.Unchanged != 1 {
				t.Fatalf("changed: %+v %v", r, err)
			}
			if rematchJobs(t, e.db) != rematches+1 {
				t.Fatalf("the changed records were not re-matched")
			}

			// Corrupt, then truncated: failed, data and memory untouched.
			srv.put("/Debian/all.zip", []byte("PK\x03\x04 this is no zip"), `"v3"`, t2.Add(time.Hour))
			rs, err = f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"Debian"}})
			if r := only(t, rs); err == nil || r.Status != scan.FetchFailed || !strings.Contains(r.Error, "not a readable zip") ||
				!strings.Contains(err.Error(), "Debian: ") {
				t.Fatalf("corrupt: %+v %v", r, err)
			}
			srv.put("/Debian/all.zip", zipOf(t, debRecord("DEBIAN-CVE-2026-0103", modifiedBase, "perl")), `"v4"`, t2.Add(2*time.Hour))
			srv.mu.Lock()
			srv.truncate["/Debian/all.zip"] = true
			srv.mu.Unlock()
			rs, err = f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"Debian"}})
			if r := only(t, rs); err == nil || r.Status != scan.FetchFailed || !strings.Contains(r.Error, "download interrupted") {
				t.Fatalf("truncated: %+v %v", r, err)
			}
			if srcs, _ = e.db.VulnDB().VulnSources(ctx); srcs[0].Records != 3 {
				t.Fatalf("data after failed downloads: %+v", srcs)
			}
			if b, _ := os.ReadFile(filepath.Join(state, "osv-Debian.json")); !strings.Contains(string(b), `"etag": "\"v2\""`) {
				t.Fatalf("a failed download was remembered: %s", b)
			}
			if entries, _ := os.ReadDir(state); len(entries) != 1 {
				t.Fatalf("failed downloads left behind: %v", entries)
			}
			srv.mu.Lock()
			srv.truncate["/Debian/all.zip"] = false
			srv.mu.Unlock()
			rs, err = f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"Debian"}})
			if r := only(t, rs); err != nil || r.Status != scan.FetchUpdated || r.Import.Applied != 1 {
				t.Fatalf("after the failures: %+v %v", r, err)
			}

			// An ecosystem the server does not have fails on its own.
			rs, err = f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"Debian", "Nonesuch"}})
			if len(rs) != 2 || rs[0].Status != scan.FetchUnchanged || rs[1].Status != scan.FetchFailed || !strings.Contains(rs[1].Error, "404") ||
				err == nil || !strings.Contains(err.Error(), "Nonesuch") {
				t.Fatalf("unknown ecosystem: %+v %v", rs, err)
			}
			// --force downloads what has not changed (and applies nothing).
			rs, err = f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"Debian"}, Force: true})
			if r := only(t, rs); err != nil || r.Status != scan.FetchUpdated || r.Import.Applied != 0 || r.Import.Unchanged != 1 {
				t.Fatalf("force: %+v %v", r, err)
			}
			if _, err := f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"../etc"}}); err == nil {
				t.Fatal("a path as an ecosystem name was accepted")
			}

			// Unreachable.
			ln, _ := net.Listen("tcp", "127.0.0.1:0")
			dead := "http://" + ln.Addr().String()
			ln.Close()
			rs, err = scan.NewFetcher(e.db.VulnDB(), scan.FetchOptions{BaseURL: dead, StateDir: state}).Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"Debian"}})
			if r := only(t, rs); err == nil || r.Status != scan.FetchFailed || !strings.Contains(r.Error, "unreachable") {
				t.Fatalf("unreachable: %+v %v", r, err)
			}
		})
	}
}

// TestFetchLastModifiedAndFreshDatabase: a server without ETags is asked
// with If-Modified-Since; a database that lost its data (a new one next
// to the same data directory) downloads again whatever was remembered.
func TestFetchLastModifiedAndFreshDatabase(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	ctx := context.Background()
	srv := newOSVServer(t)
	srv.noETag = true
	srv.put("/Alpine/all.zip", zipOf(t, record("ALPINE-CVE-2026-1", modifiedBase, `{"package":{"ecosystem":"Alpine:v3.19","name":"musl"},"versions":["0"]}`)),
		"", time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC))
	state := t.TempDir()
	f := scan.NewFetcher(e.db.VulnDB(), scan.FetchOptions{BaseURL: srv.URL, StateDir: state})
	for i, want := range []string{scan.FetchUpdated, scan.FetchUnchanged} {
		rs, err := f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"Alpine"}})
		if r := only(t, rs); err != nil || r.Status != want {
			t.Fatalf("fetch %d: %+v %v", i, r, err)
		}
	}
	if _, cond, full := srv.counts(); cond != 1 || full != 1 {
		t.Fatalf("%d conditional, %d full", cond, full)
	}
	fresh := metatest.Open(t, "sqlite")
	rs, err := scan.NewFetcher(fresh.VulnDB(), scan.FetchOptions{BaseURL: srv.URL, StateDir: state}).Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"Alpine"}})
	if r := only(t, rs); err != nil || r.Status != scan.FetchUpdated || r.Import.Applied != 1 {
		t.Fatalf("a fresh database: %+v %v", r, err)
	}
	if _, cond, full := srv.counts(); cond != 1 || full != 2 {
		t.Fatalf("a fresh database sent a conditional request: %d conditional, %d full", cond, full)
	}
}

// TestFetchDefaultsAndCPEMapping: with no ecosystem named, a fetch covers
// those of the stored images' packages and those imported before; a Red
// Hat fetch brings Red Hat's content-set mapping along, conditionally too.
func TestFetchDefaultsAndCPEMapping(t *testing.T) {
	e := newEnv(t, "sqlite", index.Limits{})
	ctx := context.Background()
	srv := newOSVServer(t)
	mod := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	srv.put("/Debian/all.zip", zipOf(t, debRecord("DEBIAN-CVE-2026-0100", modifiedBase, "zlib")), `"d1"`, mod)
	srv.put("/Go/all.zip", zipOf(t, record("GO-2026-1", modifiedBase, `{"package":{"ecosystem":"Go","name":"example.com/x"},"versions":["1.0.0"]}`)), `"g1"`, mod)
	srv.put("/Red Hat/all.zip", zipOf(t, record("RHSA-2026:0001", modifiedBase, `{"package":{"ecosystem":"Red Hat:enterprise_linux:8::baseos","name":"zlib"},"versions":["1"]}`)), `"r1"`, mod)
	mapping, _ := json.Marshal(map[string]any{"data": map[string]any{"rhel-8-for-x86_64-baseos-rpms": map[string]any{"cpes": []string{"cpe:/o:redhat:enterprise_linux:8::baseos"}}}})
	srv.put("/meta/repository-to-cpe.json", mapping, `"m1"`, mod)
	f := scan.NewFetcher(e.db.VulnDB(), scan.FetchOptions{BaseURL: srv.URL, CPEMappingURL: srv.URL + "/meta/repository-to-cpe.json", StateDir: t.TempDir()})

	if rs, err := f.Fetch(ctx, scan.FetchRequest{}); err != nil || len(rs) != 0 {
		t.Fatalf("nothing stored, nothing imported: %+v %v", rs, err)
	}
	e.push("acme/app", "1", debianLayer(t))
	e.drain()
	e.importJSON(record("GO-2026-0", modifiedBase, `{"package":{"ecosystem":"Go","name":"example.com/y"},"versions":["1.0.0"]}`))
	if ecos, err := scan.DefaultEcosystems(ctx, e.db.VulnDB()); err != nil || !slices.Equal(ecos, []string{"Debian", "Go"}) {
		t.Fatalf("default ecosystems: %v %v", ecos, err)
	}
	rs, err := f.Fetch(ctx, scan.FetchRequest{})
	if err != nil || len(rs) != 2 || rs[0].Name != "Debian" || rs[1].Name != "Go" || rs[0].Status != scan.FetchUpdated || rs[1].Status != scan.FetchUpdated {
		t.Fatalf("defaults: %+v %v", rs, err)
	}

	rs, err = f.Fetch(ctx, scan.FetchRequest{Ecosystems: []string{"red hat"}})
	if err != nil || len(rs) != 2 || rs[0].Name != "Red Hat" || rs[0].URL != srv.URL+"/Red%20Hat/all.zip" || rs[0].Status != scan.FetchUpdated ||
		rs[1].Name != scan.CPEMappingName || rs[1].Status != scan.FetchUpdated || rs[1].ContentSets != 1 {
		t.Fatalf("Red Hat: %+v %v", rs, err)
	}
	if _, ok, err := e.db.VulnDB().CPEMappingState(ctx); err != nil || !ok {
		t.Fatalf("mapping state: %v %v", ok, err)
	}
	rs, err = f.Fetch(ctx, scan.FetchRequest{CPEMapping: true, Ecosystems: []string{"Go"}})
	if err != nil || len(rs) != 2 || rs[0].Status != scan.FetchUnchanged || rs[1].Status != scan.FetchUnchanged {
		t.Fatalf("again: %+v %v", rs, err)
	}
	if rs, err = f.Fetch(ctx, scan.FetchRequest{CPEMapping: true}); err != nil || len(rs) != 1 || rs[0].Name != scan.CPEMappingName {
		t.Fatalf("the mapping alone: %+v %v", rs, err)
	}
	srv.put("/meta/repository-to-cpe.json", []byte("<html>captive portal</html>"), `"m2"`, mod.Add(time.Hour))
	rs, err = f.Fetch(ctx, scan.FetchRequest{CPEMapping: true, Ecosystems: []string{"Go"}})
	if err == nil || len(rs) != 2 || rs[1].Status != scan.FetchFailed || !strings.Contains(rs[1].Error, "repository-to-cpe.json") {
		t.Fatalf("a corrupt mapping: %+v %v", rs, err)
	}
}

// TestScheduledUpdate: two replicas run the scheduler on one database;
// a fetch runs at once, then one more as soon as a stored image has an
// ecosystem without data (here after 200ms instead of 15 minutes), and
// none again before the interval: each by one replica only.
func TestScheduledUpdate(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, index.Limits{})
			ctx, cancel := context.WithCancel(context.Background())
			srv := newOSVServer(t)
			srv.put("/Debian/all.zip", zipOf(t, debRecord("DEBIAN-CVE-2026-0100", modifiedBase, "zlib")), `"v1"`, time.Now())
			var wg sync.WaitGroup
			for range 2 {
				f := scan.NewFetcher(e.db.VulnDB(), scan.FetchOptions{BaseURL: srv.URL, StateDir: t.TempDir()})
				u := scan.NewUpdater(e.db.VulnDB(), e.db.Jobs(), f, scan.UpdaterOptions{Every: time.Hour, RetryMissing: 200 * time.Millisecond, Tick: 20 * time.Millisecond,
					Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
				wg.Go(func() { u.Run(ctx) })
			}
			defer func() { cancel(); wg.Wait() }()
			jobs := func(status string) int {
				js, err := e.db.Jobs().Jobs(ctx, meta.VulnDBQueue, status, 100)
				if err != nil {
					t.Fatal(err)
				}
				return len(js)
			}
			waitFor := func(what string, cond func() bool) {
				t.Helper()
				for deadline := time.Now().Add(20 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
					if time.Now().After(deadline) {
						t.Fatalf("waited in vain for %s", what)
					}
				}
			}
			waitFor("the first update", func() bool { return jobs(meta.JobDone) == 1 })
			if req, _, _ := srv.counts(); req != 0 {
				t.Fatalf("nothing to fetch, yet %d requests", req)
			}
			e.push("acme/app", "1", debianLayer(t))
			e.drain()
			waitFor("Debian's data", func() bool {
				srcs, _ := e.db.VulnDB().VulnSources(ctx)
				return len(srcs) == 1 && srcs[0].Records == 1
			})
			waitFor("the second job's end", func() bool { return jobs(meta.JobDone) == 2 })
			time.Sleep(500 * time.Millisecond)
			if req, _, full := srv.counts(); req != 1 || full != 1 || jobs(meta.JobDone) != 2 || jobs(meta.JobPending) != 0 || jobs(meta.JobDead) != 0 {
				t.Fatalf("%d requests, %d downloads; jobs: %d done, %d pending, %d dead", req, full, jobs(meta.JobDone), jobs(meta.JobPending), jobs(meta.JobDead))
			}
		})
	}
}
