package scan

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"
	"unicode"

	"github.com/berth-dev/berth/internal/redact"
	"github.com/berth-dev/berth/internal/scan/osv"
	"github.com/berth-dev/berth/internal/storage"
)

// Where advisories and Red Hat's content-set mapping are fetched from by
// default (scan.vulndb.baseURL, scan.vulndb.cpeMappingURL).
const (
	DefaultOSVBaseURL    = "https://osv-vulnerabilities.storage.googleapis.com"
	DefaultCPEMappingURL = "https://security.access.redhat.com/data/meta/v1/repository-to-cpe.json"
)

// Fetch outcomes (FetchResult.Status).
const (
	FetchUpdated   = "updated"   // downloaded and imported
	FetchUnchanged = "unchanged" // the server said it has not changed: nothing downloaded
	FetchFailed    = "failed"    // see Error; nothing remembered, the next fetch downloads again
)

// CPEMappingName names Red Hat's content-set mapping in fetch results.
const CPEMappingName = "Red Hat CPE mapping"

const (
	// maxFetchBytes bounds one download (osv.dev's largest all.zip is a
	// few hundred MiB).
	maxFetchBytes = 4 << 30
	// fetchStallTimeout cuts a download that delivers nothing for this long.
	fetchStallTimeout = 2 * time.Minute
)

// FetchOptions tune a Fetcher. Zero values mean the defaults.
type FetchOptions struct {
	// BaseURL serves <BaseURL>/<Ecosystem>/all.zip (DefaultOSVBaseURL): OSV's
	// public bucket, or an internal mirror of it.
	BaseURL string
	// CPEMappingURL serves Red Hat's repository-to-cpe.json
	// (DefaultCPEMappingURL).
	CPEMappingURL string
	// Client makes the requests; the server's goes through its SSRF guard.
	// Default: proxies from the environment, no overall timeout.
	Client *http.Client
	// StateDir remembers each download's ETag and Last-Modified, so that an
	// unchanged file is not downloaded again, and holds downloads while
	// they are imported. Empty: nothing is remembered.
	StateDir string
	// UserAgent of the requests ("berth").
	UserAgent string
	// Progress, if set, hears each step: at most one download or import
	// step per ProgressEvery (2s) for each file, and every start and end.
	Progress      func(FetchProgress)
	ProgressEvery time.Duration
}

// FetchRequest says what to fetch.
type FetchRequest struct {
	// Ecosystems are OSV base names ("Debian", "Red Hat", "PyPI"). Empty
	// (and CPEMapping false): the ecosystems of the stored images'
	// packages and every ecosystem imported before.
	Ecosystems []string
	// CPEMapping fetches Red Hat's content-set mapping even when no
	// ecosystem fetched is "Red Hat"; with no Ecosystems, it alone.
	CPEMapping bool
	// Force downloads even what the server would say has not changed.
	Force bool
}

// FetchResult is the outcome of one file.
type FetchResult struct {
	Name   string `json:"name"` // the ecosystem, or CPEMappingName
	URL    string `json:"url"`
	Status string `json:"status"`
	Bytes  int64  `json:"bytes"`
	// Import is what the import of an updated all.zip did.
	Import *ImportStats `json:"import,omitempty"`
	// ContentSets counts the content sets of an updated mapping.
	ContentSets int    `json:"content_sets,omitempty"`
	Error       string `json:"error,omitempty"`
}

// Fetch progress phases.
const (
	PhaseRequest  = "request"  // asking the server (conditionally when it can)
	PhaseDownload = "download" // Bytes of Total (Total -1 when unknown) received
	PhaseImport   = "import"   // Import so far
	PhaseDone     = "done"     // Result is set
)

// FetchProgress is one step of a fetch.
type FetchProgress struct {
	Name   string
	Phase  string
	Bytes  int64
	Total  int64
	Import ImportStats
	Result *FetchResult
}

// Fetcher downloads OSV's per-ecosystem all.zip files and Red Hat's
// content-set mapping, with conditional requests, and imports them.
type Fetcher struct {
	db   VulnData
	opts FetchOptions
}

// NewFetcher returns a fetcher into db.
func NewFetcher(db VulnData, opts FetchOptions) *Fetcher {
	if opts.BaseURL == "" {
		opts.BaseURL = DefaultOSVBaseURL
	}
	opts.BaseURL = strings.TrimRight(opts.BaseURL, "/")
	if opts.CPEMappingURL == "" {
		opts.CPEMappingURL = DefaultCPEMappingURL
	}
	if opts.Client == nil {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.ResponseHeaderTimeout = time.Minute
		opts.Client = &http.Client{Transport: tr}
	}
	if opts.UserAgent == "" {
		opts.UserAgent = "berth"
	}
	if opts.ProgressEvery <= 0 {
		opts.ProgressEvery = 2 * time.Second
	}
	return &Fetcher{db: db, opts: opts}
}

// knownEcosystems spells OSV's ecosystem names as its bucket does, so
// that "debian" or "red hat" on a command line finds "Debian", "Red Hat".
var knownEcosystems = []string{"AlmaLinux", "Alpine", "Bitnami", "Chainguard", "crates.io", "Debian", "GitHub Actions", "Go",
	"Hex", "Mageia", "Maven", "npm", "NuGet", "openEuler", "openSUSE", "Packagist", "Photon OS", "Pub", "PyPI", "Red Hat",
	"Rocky Linux", "RubyGems", "SUSE", "Ubuntu", "Wolfi"}

// FetchEcosystemName is the base OSV ecosystem a name asks for: the
// release suffix dropped ("Debian:12" → "Debian"), known names in OSV's
// spelling. Names that could not be a path component are refused.
func FetchEcosystemName(s string) (string, error) {
	base := strings.TrimSpace(osv.BaseEcosystem(strings.TrimSpace(s)))
	if base == "" || base == "." || base == ".." || strings.ContainsAny(base, `/\`) ||
		strings.IndexFunc(base, func(r rune) bool { return unicode.IsControl(r) }) >= 0 {
		return "", fmt.Errorf("ecosystem %q: want an OSV ecosystem name such as Debian, Alpine, \"Red Hat\" or PyPI", s)
	}
	for _, k := range knownEcosystems {
		if strings.EqualFold(k, base) {
			return k, nil
		}
	}
	return base, nil
}

// DefaultEcosystems are the ecosystems a fetch with none named covers:
// those of the stored images' packages, and those imported before.
func DefaultEcosystems(ctx context.Context, db VulnData) ([]string, error) {
	set := map[string]bool{}
	ecos, err := db.PackageEcosystems(ctx)
	if err != nil {
		return nil, err
	}
	for _, e := range ecos {
		set[osv.BaseEcosystem(e)] = true
	}
	srcs, err := db.VulnSources(ctx)
	if err != nil {
		return nil, err
	}
	for _, s := range srcs {
		set[s.Ecosystem] = true
	}
	out := make([]string, 0, len(set))
	for e := range set {
		out = append(out, e)
	}
	sort.Strings(out)
	return out, nil
}

// Fetch fetches and imports what req asks for, one file after the other.
// A file that fails does not stop the others: their results say what
// happened, and the error joins every failure.
func (f *Fetcher) Fetch(ctx context.Context, req FetchRequest) ([]FetchResult, error) {
	f.removeLeftovers()
	ecos := make([]string, 0, len(req.Ecosystems))
	seen := map[string]bool{}
	for _, e := range req.Ecosystems {
		name, err := FetchEcosystemName(e)
		if err != nil {
			return nil, err
		}
		if !seen[name] {
			seen[name] = true
			ecos = append(ecos, name)
		}
	}
	if len(req.Ecosystems) == 0 && !req.CPEMapping {
		var err error
		if ecos, err = DefaultEcosystems(ctx, f.db); err != nil {
			return nil, err
		}
	}
	srcs, err := f.db.VulnSources(ctx)
	if err != nil {
		return nil, err
	}
	imported := map[string]bool{}
	for _, s := range srcs {
		imported[s.Ecosystem] = s.Records > 0
	}
	var results []FetchResult
	var errs []error
	note := func(r FetchResult) {
		results = append(results, r)
		if r.Status == FetchFailed {
			errs = append(errs, fmt.Errorf("%s: %s", r.Name, r.Error))
		}
		f.progress(FetchProgress{Name: r.Name, Phase: PhaseDone, Bytes: r.Bytes, Result: &r})
	}
	mapping := req.CPEMapping
	for _, eco := range ecos {
		if err := ctx.Err(); err != nil {
			return results, err
		}
		note(f.fetchEcosystem(ctx, eco, req.Force || !imported[eco]))
		mapping = mapping || eco == "Red Hat"
	}
	if mapping {
		if err := ctx.Err(); err != nil {
			return results, err
		}
		note(f.fetchCPEMapping(ctx, req.Force))
	}
	if err := ctx.Err(); err != nil {
		return results, err
	}
	return results, errors.Join(errs...)
}

// fetchEcosystem downloads and imports one all.zip. unconditional skips
// the remembered validators (nothing of it is in the database).
func (f *Fetcher) fetchEcosystem(ctx context.Context, eco string, unconditional bool) FetchResult {
	u := f.opts.BaseURL + "/" + url.PathEscape(eco) + "/all.zip"
	res := FetchResult{Name: eco, URL: redact.Userinfo(u)}
	key := "osv-" + url.PathEscape(eco)
	tmp, size, state, status, err := f.download(ctx, eco, u, key, unconditional, maxFetchBytes)
	if err != nil {
		return failed(res, err)
	}
	res.Bytes = size
	if status == http.StatusNotModified {
		// Confirmed current: the ecosystem's data is as fresh as now.
		if err := f.db.TouchVulnSource(ctx, eco); err != nil {
			return failed(res, err)
		}
		res.Status = FetchUnchanged
		return res
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	last := time.Time{}
	im := NewImporter(f.db, func(s ImportStats) {
		if time.Since(last) >= f.opts.ProgressEvery {
			last = time.Now()
			f.progress(FetchProgress{Name: eco, Phase: PhaseImport, Import: s})
		}
	})
	// The file holds eco in full, and only eco: the other ecosystems its
	// records name are not recorded as imported. A file that names eco
	// nowhere (an empty zip of a mirror's failed sync, another
	// ecosystem's file) fails: neither eco's update time nor the
	// download's validators are recorded, so stale data stays stale and
	// the next fetch downloads again.
	if err := im.Cover(eco); err != nil {
		return failed(res, err)
	}
	notAllZip := func(err error) FetchResult {
		return failed(res, fmt.Errorf("the download is not %s's all.zip (an empty zip, or another file), nothing of it is recorded: %w", eco, err))
	}
	if err := im.Zip(ctx, tmp, size, eco+"/all.zip"); err != nil {
		switch {
		case errors.Is(err, osv.ErrBadZip):
			return failed(res, fmt.Errorf("the download is not a readable zip (corrupt or not an all.zip): %w", err))
		case errors.Is(err, ErrNoAdvisories):
			return notAllZip(err)
		}
		return failed(res, err)
	}
	if st := im.stats; st.Read == 0 && st.Rejected > 0 {
		res.Import = &st
		return failed(res, fmt.Errorf("none of the %d records of the download could be read (first: %s)", st.Rejected, st.Errors[0]))
	}
	st, err := im.Finish(ctx)
	res.Import = &st
	if errors.Is(err, ErrNoAdvisories) {
		return notAllZip(err)
	}
	if err != nil {
		return failed(res, err)
	}
	if err := f.saveState(key, state); err != nil {
		return failed(res, err)
	}
	res.Status = FetchUpdated
	return res
}

// fetchCPEMapping downloads Red Hat's repository-to-cpe.json and imports
// it.
func (f *Fetcher) fetchCPEMapping(ctx context.Context, force bool) FetchResult {
	res := FetchResult{Name: CPEMappingName, URL: redact.Userinfo(f.opts.CPEMappingURL)}
	_, stored, err := f.db.CPEMappingState(ctx)
	if err != nil {
		return failed(res, err)
	}
	key := "redhat-repository-to-cpe"
	tmp, size, state, status, err := f.download(ctx, CPEMappingName, f.opts.CPEMappingURL, key, force || !stored, maxCPEMappingBytes)
	if err != nil {
		return failed(res, err)
	}
	res.Bytes = size
	if status == http.StatusNotModified {
		res.Status = FetchUnchanged
		return res
	}
	defer os.Remove(tmp.Name())
	defer tmp.Close()
	f.progress(FetchProgress{Name: CPEMappingName, Phase: PhaseImport})
	n, err := ImportCPEMapping(ctx, f.db, tmp)
	if err != nil {
		return failed(res, fmt.Errorf("import: %w", err))
	}
	res.ContentSets = n
	if err := f.saveState(key, state); err != nil {
		return failed(res, err)
	}
	res.Status = FetchUpdated
	return res
}

func failed(r FetchResult, err error) FetchResult {
	r.Status, r.Error = FetchFailed, err.Error()
	return r
}

// hideURL takes the user information out of the URL an error of the HTTP
// client names (a *url.Error: the client hides the password but not the
// user, a parse error neither).
func hideURL(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		ue.URL = redact.Userinfo(ue.URL)
	}
	return err
}

func (f *Fetcher) progress(p FetchProgress) {
	if f.opts.Progress != nil {
		f.opts.Progress(p)
	}
}

// leftoverAge is how old a temporary file of the fetcher's own in
// StateDir must be for removeLeftovers to take it for a killed fetch's: a
// download under way writes its file at least every fetchStallTimeout.
const leftoverAge = time.Hour

// leftoverPatterns are the names of the fetcher's temporary files in
// StateDir (download's spooled downloads, saveState's state being
// written), and of no other file.
var leftoverPatterns = []string{"osv-*.*.download", "osv-*.*.tmp", "redhat-repository-to-cpe.*.download", "redhat-repository-to-cpe.*.tmp"}

// removeLeftovers removes from StateDir the fetcher's temporary files
// last written more than leftoverAge ago: a fetch killed midway (SIGKILL,
// a power cut) leaves its spooled download, up to maxFetchBytes, which
// only its own deferred removal would have taken. (An import still
// reading an older file keeps it open: the removal only unlinks it.) A
// file it cannot remove is left for the next fetch: the clean-up never
// fails a fetch.
func (f *Fetcher) removeLeftovers() {
	if f.opts.StateDir == "" {
		return // os.TempDir(): not the fetcher's to sweep
	}
	entries, err := os.ReadDir(f.opts.StateDir)
	if err != nil {
		return // none yet
	}
	before := time.Now().Add(-leftoverAge)
	for _, e := range entries {
		if !e.Type().IsRegular() || !leftoverName(e.Name()) {
			continue
		}
		if fi, err := e.Info(); err == nil && fi.ModTime().Before(before) {
			_ = os.Remove(filepath.Join(f.opts.StateDir, e.Name()))
		}
	}
}

// leftoverName reports whether name is one of the fetcher's temporary
// files' (leftoverPatterns).
func leftoverName(name string) bool {
	for _, p := range leftoverPatterns {
		if ok, _ := filepath.Match(p, name); ok {
			return true
		}
	}
	return false
}

// fetchState is what is remembered of a download: the validators to send
// next time, for the URL they came from.
type fetchState struct {
	URL          string    `json:"url"`
	ETag         string    `json:"etag,omitempty"`
	LastModified string    `json:"last_modified,omitempty"`
	Bytes        int64     `json:"bytes"`
	FetchedAt    time.Time `json:"fetched_at"`
}

func (f *Fetcher) statePath(key string) string {
	return filepath.Join(f.opts.StateDir, key+".json")
}

func (f *Fetcher) loadState(key string) fetchState {
	var st fetchState
	if f.opts.StateDir == "" {
		return st
	}
	b, err := os.ReadFile(f.statePath(key))
	if err == nil {
		_ = json.Unmarshal(b, &st) // an unreadable state only costs a download
	}
	return st
}

// saveState remembers a download's validators, atomically.
func (f *Fetcher) saveState(key string, st fetchState) error {
	if f.opts.StateDir == "" || (st.ETag == "" && st.LastModified == "") {
		return nil
	}
	b, _ := json.MarshalIndent(st, "", "  ")
	tmp, err := os.CreateTemp(f.opts.StateDir, key+".*.tmp")
	if err != nil {
		return fmt.Errorf("remember the download: %w", err)
	}
	_, err = tmp.Write(append(b, '\n'))
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), f.statePath(key))
	}
	if err != nil {
		os.Remove(tmp.Name())
		return fmt.Errorf("remember the download: %w", err)
	}
	return nil
}

// download GETs u, conditionally unless unconditional, into a temporary
// file. It returns the file (nil on 304, rewound), its size, the state to
// remember once the file is imported, and the HTTP status (200 or 304).
// Its errors name u without user information (redact.Userinfo).
func (f *Fetcher) download(ctx context.Context, name, u, key string, unconditional bool, limit int64) (*os.File, int64, fetchState, int, error) {
	shown := redact.Userinfo(u)
	prev := f.loadState(key)
	conditional := !unconditional && prev.URL == u && (prev.ETag != "" || prev.LastModified != "")
	f.progress(FetchProgress{Name: name, Phase: PhaseRequest, Total: -1})
	rctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	req, err := http.NewRequestWithContext(rctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, 0, fetchState{}, 0, fmt.Errorf("request: %w", hideURL(err))
	}
	req.Header.Set("User-Agent", f.opts.UserAgent)
	if conditional {
		if prev.ETag != "" {
			req.Header.Set("If-None-Match", prev.ETag)
		}
		if prev.LastModified != "" {
			req.Header.Set("If-Modified-Since", prev.LastModified)
		}
	}
	resp, err := f.opts.Client.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return nil, 0, fetchState{}, 0, ctx.Err()
		}
		return nil, 0, fetchState{}, 0, fmt.Errorf("unreachable: %w", hideURL(err))
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusNotModified && conditional:
		return nil, prev.Bytes, prev, http.StatusNotModified, nil
	case resp.StatusCode == http.StatusNotFound:
		return nil, 0, fetchState{}, 0, fmt.Errorf("%s answered 404 Not Found (is %q published there?)", shown, name)
	case resp.StatusCode != http.StatusOK:
		return nil, 0, fetchState{}, 0, fmt.Errorf("%s answered %s", shown, resp.Status)
	}
	if resp.ContentLength > limit {
		return nil, 0, fetchState{}, 0, fmt.Errorf("%s is %d bytes, over the %d-byte limit", shown, resp.ContentLength, int64(limit))
	}
	if f.opts.StateDir != "" {
		if err := os.MkdirAll(f.opts.StateDir, 0o700); err != nil {
			return nil, 0, fetchState{}, 0, fmt.Errorf("state directory: %w", err)
		}
	}
	tmp, err := os.CreateTemp(f.opts.StateDir, key+".*.download")
	if err != nil {
		return nil, 0, fetchState{}, 0, fmt.Errorf("spool the download: %w", err)
	}
	body := &storage.StallReader{R: resp.Body, Idle: fetchStallTimeout, Stalled: func() { cancel(errStalled) }}
	defer body.Stop()
	w := &progressWriter{w: tmp, every: f.opts.ProgressEvery, fn: func(n int64) {
		f.progress(FetchProgress{Name: name, Phase: PhaseDownload, Bytes: n, Total: resp.ContentLength})
	}}
	n, err := io.Copy(w, io.LimitReader(body, limit+1))
	if err == nil && n > limit {
		err = fmt.Errorf("the download exceeds the %d-byte limit", int64(limit))
	}
	if err == nil {
		_, err = tmp.Seek(0, io.SeekStart)
	}
	if err != nil {
		tmp.Close()
		os.Remove(tmp.Name())
		if ctx.Err() != nil {
			return nil, 0, fetchState{}, 0, ctx.Err()
		}
		if c := context.Cause(rctx); c != nil {
			err = c
		}
		return nil, 0, fetchState{}, 0, fmt.Errorf("download interrupted after %d bytes: %w", n, hideURL(err))
	}
	f.progress(FetchProgress{Name: name, Phase: PhaseDownload, Bytes: n, Total: n})
	st := fetchState{URL: u, ETag: resp.Header.Get("ETag"), LastModified: resp.Header.Get("Last-Modified"), Bytes: n, FetchedAt: time.Now().UTC()}
	return tmp, n, st, http.StatusOK, nil
}

// progressWriter reports the bytes written at most once per every.
type progressWriter struct {
	w     io.Writer
	n     int64
	every time.Duration
	last  time.Time
	fn    func(int64)
}

func (p *progressWriter) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	p.n += int64(n)
	if time.Since(p.last) >= p.every {
		p.last = time.Now()
		p.fn(p.n)
	}
	return n, err
}

// errStalled is the cause of a download cut for delivering nothing.
var errStalled = errors.New("the server sent nothing for too long")

// FetchSummary is one line about a result, for logs and the CLI.
func FetchSummary(r FetchResult) string {
	switch r.Status {
	case FetchUnchanged:
		return fmt.Sprintf("%s: unchanged since the last fetch (not downloaded)", r.Name)
	case FetchFailed:
		return fmt.Sprintf("%s: FAILED: %s", r.Name, r.Error)
	}
	if r.Import != nil {
		s := r.Import
		return fmt.Sprintf("%s: downloaded %s, %d records: %d applied (%d withdrawn), %d unchanged, %d rejected", r.Name, humanBytes(r.Bytes),
			s.Read, s.Applied, s.Withdrawn, s.Unchanged, s.Rejected)
	}
	return fmt.Sprintf("%s: downloaded %s, %d content sets", r.Name, humanBytes(r.Bytes), r.ContentSets)
}

func humanBytes(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d bytes", n)
}
