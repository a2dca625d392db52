package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/proxy"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// readCounter is a transport that counts the body bytes read through it.
type readCounter struct {
	next http.RoundTripper
	n    atomic.Int64
}

func (c *readCounter) RoundTrip(r *http.Request) (*http.Response, error) {
	resp, err := c.next.RoundTrip(r)
	if err != nil {
		return nil, err
	}
	resp.Body = countedBody{ReadCloser: resp.Body, n: &c.n}
	return resp, nil
}

type countedBody struct {
	io.ReadCloser
	n *atomic.Int64
}

func (b countedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	return n, err
}

// limitsEnv is a proxy cache of organization "hub" for the upstream
// handler, reading it through a readCounter.
func limitsEnv(t *testing.T, upstream http.Handler, opts proxy.Options) (berth string, read *readCounter) {
	t.Helper()
	ctx := context.Background()
	up := httptest.NewServer(upstream)
	t.Cleanup(up.Close)
	db := metatest.Open(t, "sqlite")
	driver, _ := fs.New(t.TempDir(), fs.Options{})
	sealer, _ := auth.NewSealer(make([]byte, 32))
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	read = &readCounter{next: &http.Transport{}}
	opts.Transport, opts.Policy, opts.Logger = read, policy, quiet
	svc := proxy.New(wire.ProxyStores(db), driver, sealer, opts)
	srv := httptest.NewServer(registry.New(wire.RegistryStores(db), driver, registry.Options{Proxy: svc, Policy: policy, Logger: quiet}))
	t.Cleanup(srv.Close)
	owner, _ := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: "x"})
	if _, err := db.Organizations().CreateOrganization(ctx, "hub", owner.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.ProxyCaches().SetProxyCache(ctx, meta.ProxyCache{Namespace: "hub", Upstream: strings.TrimPrefix(up.URL, "http://"),
		ExpirationS: 3600, Insecure: true}); err != nil {
		t.Fatal(err)
	}
	return srv.URL, read
}

// getManifest pulls a manifest through Berth: its status, error code and
// message, and Retry-After.
func getManifest(t *testing.T, url string) (status int, code, msg, retryAfter string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var e struct {
		Errors []struct{ Code, Message string }
	}
	json.Unmarshal(body, &e)
	if len(e.Errors) != 1 {
		return resp.StatusCode, "", string(body), resp.Header.Get("Retry-After")
	}
	return resp.StatusCode, e.Errors[0].Code, e.Errors[0].Message, resp.Header.Get("Retry-After")
}

// TestProxyManifestOverCapIsNotRead: an upstream manifest over
// registry.maxManifestBytes (4 MiB by default) is refused as it is read:
// the pull is answered MANIFEST_INVALID saying the upstream's manifest
// exceeds the limit, after Berth read no more than the limit and a byte
// of it (go-containerregistry alone reads up to 100 MiB), with or without
// a Content-Length. Nothing is cached.
func TestProxyManifestOverCapIsNotRead(t *testing.T) {
	const size = 10 << 20
	body := make([]byte, size)
	d := digest.FromBytes(body)
	berth, read := limitsEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Docker-Content-Digest", d.String())
		if strings.HasPrefix(r.URL.Path, "/v2/library/declared/") {
			w.Header().Set("Content-Length", fmt.Sprint(size))
		}
		for off := 0; off < size; off += 64 << 10 {
			if _, err := w.Write(body[off : off+64<<10]); err != nil {
				return
			}
		}
	}), proxy.Options{})
	for _, repo := range []string{"streamed", "declared"} {
		read.n.Store(0)
		status, code, msg, _ := getManifest(t, berth+"/v2/hub/library/"+repo+"/manifests/latest")
		if status != http.StatusRequestEntityTooLarge || code != registry.CodeManifestInvalid || !strings.Contains(msg, "exceeds the limit of 4194304 bytes") {
			t.Errorf("%s 10 MiB manifest: %d %s %q, want 413 MANIFEST_INVALID saying it exceeds the limit", repo, status, code, msg)
		}
		if n := read.n.Load(); n > 4<<20+1 {
			t.Errorf("%s 10 MiB manifest: Berth read %d bytes of it, past the 4 MiB limit", repo, n)
		}
		t.Logf("%s: %d %s %q after reading %d bytes", repo, status, code, msg, read.n.Load())
	}
}

// TestProxyManifestFetchesPerOrganization: the upstream manifest fetches
// of one proxy organization are bounded (MaxManifestFetches at once): a
// pull that needs one more while they all hang waits for a turn
// (ManifestWait), then is answered 429 TOOMANYREQUESTS with Retry-After
// without reaching the upstream; once the upstream answers, pulls go on.
func TestProxyManifestFetchesPerOrganization(t *testing.T) {
	const limit = 3
	var inflight atomic.Int64
	release := make(chan struct{})
	berth, _ := limitsEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/v2/" {
			return
		}
		if inflight.Add(1) > limit {
			// Past the bound: answered at once, so that a pull Berth let
			// through is told apart (404, not 429).
			inflight.Add(-1)
			http.NotFound(w, r)
			return
		}
		defer inflight.Add(-1)
		select {
		case <-release:
		case <-r.Context().Done():
		}
		http.NotFound(w, r)
	}), proxy.Options{MaxManifestFetches: limit, ManifestWait: 300 * time.Millisecond, ManifestTimeout: time.Minute})
	var wg sync.WaitGroup
	answers := make(chan int, limit)
	for i := range limit {
		wg.Add(1)
		go func() {
			defer wg.Done()
			status, _, _, _ := getManifest(t, fmt.Sprintf("%s/v2/hub/library/app/manifests/hang%d", berth, i))
			answers <- status
		}()
	}
	for inflight.Load() < limit {
		time.Sleep(5 * time.Millisecond) // poll: the fetches reach the upstream
	}
	status, code, msg, retry := getManifest(t, berth+"/v2/hub/library/app/manifests/one-more")
	if status != http.StatusTooManyRequests || code != registry.CodeTooManyRequests || retry == "" {
		t.Errorf("pull past the organization's fetches: %d %s %q (Retry-After %q), want 429 TOOMANYREQUESTS with Retry-After", status, code, msg, retry)
	}
	t.Logf("one more: %d %s %q", status, code, msg)
	close(release)
	wg.Wait()
	close(answers)
	for status := range answers {
		if status != http.StatusNotFound {
			t.Errorf("a pull let through: %d, want the upstream's 404", status)
		}
	}
	if status, _, msg, _ := getManifest(t, berth+"/v2/hub/library/app/manifests/after"); status != http.StatusNotFound {
		t.Errorf("pull once the upstream answered: %d %q, want the upstream's 404", status, msg)
	}
}

// TestProxyStaleTagNotHeldBehindBusyFetches: a cached tag due for its
// upstream check, pulled while the organization's upstream fetches are
// all taken, is served from the cache at once; before, it waited for a
// turn (up to ManifestWait, 2 minutes by default) on every pull.
func TestProxyStaleTagNotHeldBehindBusyFetches(t *testing.T) {
	const limit = 2
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	m := imageManifest(cfg)
	var inflight atomic.Int64
	release := make(chan struct{})
	var mu sync.Mutex
	now := time.Now()
	clock := func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	berth, _ := limitsEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
		case strings.HasSuffix(r.URL.Path, "/manifests/cached"):
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", digest.FromString(m).String())
			io.WriteString(w, m)
		default: // hangs until released, holding a fetch turn
			inflight.Add(1)
			defer inflight.Add(-1)
			select {
			case <-release:
			case <-r.Context().Done():
			}
			http.NotFound(w, r)
		}
	}), proxy.Options{MaxManifestFetches: limit, ManifestWait: time.Minute, ManifestTimeout: time.Minute, Now: clock})
	if status, _, msg, _ := getManifest(t, berth+"/v2/hub/library/app/manifests/cached"); status != http.StatusOK {
		t.Fatalf("first pull of the tag: %d %q", status, msg)
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer close(release)
	for i := range limit {
		wg.Add(1)
		go func() {
			defer wg.Done()
			getManifest(t, fmt.Sprintf("%s/v2/hub/library/app/manifests/hang%d", berth, i))
		}()
	}
	for inflight.Load() < limit {
		time.Sleep(5 * time.Millisecond) // poll: every turn is taken
	}
	mu.Lock()
	now = now.Add(2 * time.Hour) // past the organization's expiration (1 h)
	mu.Unlock()
	got := make(chan int, 1)
	go func() {
		status, _, _, _ := getManifest(t, berth+"/v2/hub/library/app/manifests/cached")
		got <- status
	}()
	select {
	case status := <-got:
		if status != http.StatusOK {
			t.Fatalf("the cached tag while every fetch turn is taken: %d, want it served from the cache", status)
		}
	case <-time.After(20 * time.Second): // far below ManifestWait
		t.Fatal("the cached tag waited for a fetch turn instead of being served from the cache")
	}
}

// TestProxyBlobDownloadsPerOrganization: the upstream blob downloads of
// one proxy organization are bounded (MaxBlobFetches at once): a pull of
// one more blob while they all trickle waits for a turn (BlobWait), then
// is answered 429 TOOMANYREQUESTS with Retry-After without reaching the
// upstream; once the downloads end, the pulls let through get their
// blobs, and so does the refused one pulled again.
func TestProxyBlobDownloadsPerOrganization(t *testing.T) {
	const limit = 2
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	var blobs [limit + 1][]byte
	layers := make([]string, len(blobs))
	for i := range blobs {
		blobs[i] = []byte(strings.Repeat(fmt.Sprintf("layer %d;", i), 1000))
		layers[i] = fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar","digest":"%s","size":%d}`, digest.FromBytes(blobs[i]), len(blobs[i]))
	}
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[%s]}`,
		digest.FromBytes(cfg), len(cfg), strings.Join(layers, ","))
	var inflight, most atomic.Int64
	release := make(chan struct{})
	berth, _ := limitsEnv(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.Contains(r.URL.Path, "/manifests/"):
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", digest.FromString(m).String())
			io.WriteString(w, m)
		case strings.Contains(r.URL.Path, "/blobs/") && r.Method == http.MethodGet:
			n := inflight.Add(1)
			defer inflight.Add(-1)
			for cur := most.Load(); n > cur && !most.CompareAndSwap(cur, n); cur = most.Load() {
			}
			if n > limit {
				// Past the bound: answered at once, so that a pull Berth
				// let through is told apart (404, not 429).
				http.NotFound(w, r)
				return
			}
			for _, b := range blobs {
				if strings.HasSuffix(r.URL.Path, digest.FromBytes(b).String()) {
					// A byte, then the rest once released: a slow
					// upstream, not a stalled one.
					w.Header().Set("Content-Length", fmt.Sprint(len(b)))
					w.Write(b[:1])
					w.(http.Flusher).Flush()
					select {
					case <-release:
					case <-r.Context().Done():
						return
					}
					w.Write(b[1:])
					return
				}
			}
			http.NotFound(w, r)
		}
	}), proxy.Options{MaxBlobFetches: limit, BlobWait: 300 * time.Millisecond})
	if status, _, msg, _ := getManifest(t, berth+"/v2/hub/library/app/manifests/latest"); status != http.StatusOK {
		t.Fatalf("pull of the manifest: %d %q", status, msg)
	}
	getBlob := func(i int) (status int, code, retry string, body []byte) {
		resp, err := http.Get(fmt.Sprintf("%s/v2/hub/library/app/blobs/%s", berth, digest.FromBytes(blobs[i])))
		if err != nil {
			t.Error(err)
			return 0, "", "", nil
		}
		defer resp.Body.Close()
		body, _ = io.ReadAll(resp.Body)
		var e struct{ Errors []struct{ Code string } }
		if json.Unmarshal(body, &e) == nil && len(e.Errors) == 1 {
			code = e.Errors[0].Code
		}
		return resp.StatusCode, code, resp.Header.Get("Retry-After"), body
	}
	var wg sync.WaitGroup
	for i := range limit {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if status, _, _, body := getBlob(i); status != http.StatusOK || digest.FromBytes(body) != digest.FromBytes(blobs[i]) {
				t.Errorf("blob %d let through: %d, %d bytes; want 200 and the blob", i, status, len(body))
			}
		}()
	}
	for inflight.Load() < limit {
		time.Sleep(5 * time.Millisecond) // poll: the downloads reach the upstream
	}
	status, code, retry, body := getBlob(limit)
	if status != http.StatusTooManyRequests || code != "TOOMANYREQUESTS" || retry == "" {
		t.Errorf("blob past the organization's downloads: %d %s (Retry-After %q) %s, want 429 TOOMANYREQUESTS with Retry-After", status, code, retry, body)
	}
	t.Logf("one more: %d %s", status, body)
	close(release)
	wg.Wait()
	if n := most.Load(); n > limit {
		t.Errorf("the upstream saw %d blob downloads at once, want at most %d", n, limit)
	}
	if status, _, _, body := getBlob(limit); status != http.StatusOK || digest.FromBytes(body) != digest.FromBytes(blobs[limit]) {
		t.Errorf("blob pulled again once the downloads ended: %d, %d bytes; want 200 and the blob", status, len(body))
	}
}
