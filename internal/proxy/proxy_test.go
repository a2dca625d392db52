package proxy_test

import (
	"context"
	"fmt"
	"github.com/berth-dev/berth/internal/wire"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/proxy"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
)

// upstream is an in-memory registry behind Basic auth that counts
// requests by "METHOD kind" (kind: manifests, blobs, other).
type upstream struct {
	host   string
	mu     sync.Mutex
	counts map[string]int
	// blobDelay slows blob GETs (to overlap concurrent pulls).
	blobDelay time.Duration
}

func (u *upstream) count(key string) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.counts[key]
}

func (u *upstream) total() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, c := range u.counts {
		n += c
	}
	return n
}

func startUpstream(t *testing.T) *upstream {
	t.Helper()
	u := &upstream{counts: map[string]int{}}
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)), ggcrregistry.WithReferrersSupport(false))
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pw, ok := r.BasicAuth(); !ok || user != "up" || pw != "secret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="upstream"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		kind := "other"
		switch {
		case strings.Contains(r.URL.Path, "/manifests/"):
			kind = "manifests"
		case strings.Contains(r.URL.Path, "/blobs/") && !strings.Contains(r.URL.Path, "/uploads"):
			kind = "blobs"
		}
		u.mu.Lock()
		u.counts[r.Method+" "+kind]++
		u.mu.Unlock()
		if kind == "blobs" && r.Method == http.MethodGet && u.blobDelay > 0 {
			time.Sleep(u.blobDelay)
		}
		inner.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	u.host = strings.TrimPrefix(srv.URL, "http://")
	return u
}

func (u *upstream) reset() {
	u.mu.Lock()
	u.counts = map[string]int{}
	u.mu.Unlock()
}

var upAuth = remote.WithAuth(&authn.Basic{Username: "up", Password: "secret"})

func (u *upstream) push(t *testing.T, repo string, img v1.Image) v1.Hash {
	t.Helper()
	ref, err := name.ParseReference(u.host+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(ref, img, upAuth); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d
}

type env struct {
	db    *meta.DB
	svc   *proxy.Service
	host  string
	clock *clock
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

func newEnv(t *testing.T) *env {
	t.Helper()
	ctx := context.Background()
	db := metatest.Open(t, "sqlite")
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	key := make([]byte, 32)
	sealer, err := auth.NewSealer(key)
	if err != nil {
		t.Fatal(err)
	}
	c := &clock{t: time.Now()}
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	svc := proxy.New(wire.ProxyStores(db), driver, sealer, proxy.Options{Now: c.now, Policy: policy, Logger: quiet})
	reg := registry.New(wire.RegistryStores(db), driver, registry.Options{Proxy: svc, Policy: policy, Logger: quiet})
	srv := httptest.NewServer(reg)
	t.Cleanup(srv.Close)
	owner, err := db.Users().CreateUser(ctx, meta.User{Username: "owner", Kind: meta.UserKindUser, SecretHash: "x"})
	if err != nil {
		t.Fatal(err)
	}
	for _, org := range []string{"hub", "quay", "plain"} {
		if _, err := db.Organizations().CreateOrganization(ctx, org, owner.ID); err != nil {
			t.Fatal(err)
		}
	}
	return &env{db: db, svc: svc, host: strings.TrimPrefix(srv.URL, "http://"), clock: c}
}

func (e *env) configure(t *testing.T, org string, up *upstream, prefix string, expiration int64) {
	t.Helper()
	target := up.host
	if prefix != "" {
		target += "/" + prefix
	}
	err := e.db.ProxyCaches().SetProxyCache(context.Background(), meta.ProxyCache{Namespace: org, Upstream: target, Username: "up",
		PasswordSealed: e.svc.SealPassword("secret"), ExpirationS: expiration, Insecure: true})
	if err != nil {
		t.Fatal(err)
	}
	e.svc.Invalidate()
}

// pull fetches an image from Berth and reads every layer, returning its
// digest.
func (e *env) pull(t *testing.T, ref string) v1.Hash {
	t.Helper()
	r, err := name.ParseReference(e.host+"/"+ref, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := remote.Image(r)
	if err != nil {
		t.Fatalf("pull %s: %v", ref, err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			t.Fatalf("pull %s layer: %v", ref, err)
		}
		if _, err := io.Copy(io.Discard, rc); err != nil {
			t.Fatalf("read %s layer: %v", ref, err)
		}
		rc.Close()
	}
	if _, err := img.RawConfigFile(); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d
}

func TestMissHitRevalidate(t *testing.T) {
	up := startUpstream(t)
	e := newEnv(t)
	e.configure(t, "hub", up, "library", 60)
	img, _ := random.Image(2048, 2)
	want := up.push(t, "library/alpine:3", img)
	up.reset()

	// Miss: fetched upstream.
	if got := e.pull(t, "hub/alpine:3"); got != want {
		t.Fatalf("miss: digest %s, want %s", got, want)
	}
	if up.count("GET manifests") != 1 || up.count("GET blobs") != 3 {
		t.Fatalf("miss: upstream counts %v", up.counts)
	}
	// Hit: no upstream request at all.
	up.reset()
	if got := e.pull(t, "hub/alpine:3"); got != want {
		t.Fatalf("hit: digest %s", got)
	}
	if n := up.total(); n != 0 {
		t.Fatalf("hit: %d upstream requests %v", n, up.counts)
	}
	// Expired, unchanged upstream: one HEAD, nothing fetched.
	e.clock.add(61 * time.Second)
	if got := e.pull(t, "hub/alpine:3"); got != want {
		t.Fatalf("revalidate: digest %s", got)
	}
	if up.count("HEAD manifests") != 1 || up.count("GET manifests") != 0 || up.count("GET blobs") != 0 {
		t.Fatalf("revalidate unchanged: upstream counts %v", up.counts)
	}
	// Checked again just now: no request.
	up.reset()
	e.pull(t, "hub/alpine:3")
	if n := up.total(); n != 0 {
		t.Fatalf("after revalidation: %d upstream requests", n)
	}
	// Upstream retag: served after expiration, not before.
	img2, _ := random.Image(1024, 1)
	want2 := up.push(t, "library/alpine:3", img2)
	if got := e.pull(t, "hub/alpine:3"); got != want {
		t.Fatalf("before expiration: digest %s, want the cached %s", got, want)
	}
	e.clock.add(61 * time.Second)
	if got := e.pull(t, "hub/alpine:3"); got != want2 {
		t.Fatalf("after retag: digest %s, want %s", got, want2)
	}
	// The old image by digest is still served.
	if got := e.pull(t, "hub/alpine@"+want.String()); got != want {
		t.Fatalf("old digest: %s", got)
	}
	// Repositories created by the cache are private.
	ri, err := e.db.Repositories().Repository(context.Background(), "hub/alpine")
	if err != nil || ri.Visibility != "private" {
		t.Fatalf("repository %+v, %v", ri, err)
	}
}

func TestDigestPullOutlivesUpstream(t *testing.T) {
	up := startUpstream(t)
	e := newEnv(t)
	e.configure(t, "hub", up, "", 1)
	img, _ := random.Image(1024, 2)
	want := up.push(t, "team/app:v1", img)
	if got := e.pull(t, "hub/team/app@"+want.String()); got != want {
		t.Fatalf("by digest: %s", got)
	}
	// Delete upstream.
	ref, _ := name.ParseReference(up.host+"/team/app@"+want.String(), name.Insecure)
	if err := remote.Delete(ref, upAuth); err != nil {
		t.Fatal(err)
	}
	e.clock.add(time.Hour)
	up.reset()
	if got := e.pull(t, "hub/team/app@"+want.String()); got != want {
		t.Fatalf("by digest after upstream delete: %s", got)
	}
	if n := up.total(); n != 0 {
		t.Fatalf("digest pull asked upstream %d times", n)
	}
	// A missing tag is a 404 (manifest unknown).
	r, _ := name.ParseReference(e.host+"/hub/team/app:nope", name.Insecure)
	if _, err := remote.Get(r); err == nil || !strings.Contains(err.Error(), "MANIFEST_UNKNOWN") {
		t.Fatalf("missing tag: %v", err)
	}
}

func TestTwoUpstreams(t *testing.T) {
	up1, up2 := startUpstream(t), startUpstream(t)
	e := newEnv(t)
	e.configure(t, "hub", up1, "", 60)
	e.configure(t, "quay", up2, "mirror", 60)
	a, _ := random.Image(512, 1)
	b, _ := random.Image(512, 1)
	da := up1.push(t, "lib/x:1", a)
	db := up2.push(t, "mirror/lib/x:1", b)
	if got := e.pull(t, "hub/lib/x:1"); got != da {
		t.Fatalf("hub: %s want %s", got, da)
	}
	if got := e.pull(t, "quay/lib/x:1"); got != db {
		t.Fatalf("quay: %s want %s", got, db)
	}
	// An ordinary organization is not proxied.
	r, _ := name.ParseReference(e.host+"/plain/lib/x:1", name.Insecure)
	if _, err := remote.Get(r); err == nil {
		t.Fatal("plain organization served a missing image")
	}
	// Pushes to a proxy organization are refused.
	dst, _ := name.ParseReference(e.host+"/hub/mine:1", name.Insecure)
	if err := remote.Write(dst, a); err == nil || !strings.Contains(err.Error(), "DENIED") {
		t.Fatalf("push to proxy org: %v", err)
	}
	// Pushes to an ordinary organization still work.
	dst, _ = name.ParseReference(e.host+"/plain/mine:1", name.Insecure)
	if err := remote.Write(dst, a); err != nil {
		t.Fatalf("push to plain org: %v", err)
	}
}

func TestConcurrentBlobPullsDownloadOnce(t *testing.T) {
	up := startUpstream(t)
	up.blobDelay = 200 * time.Millisecond
	e := newEnv(t)
	e.configure(t, "hub", up, "", 60)
	img, _ := random.Image(1<<20, 1)
	want := up.push(t, "big:1", img)
	// Cache the manifest only.
	r, _ := name.ParseReference(e.host+"/hub/big:1", name.Insecure)
	desc, err := remote.Get(r)
	if err != nil || desc.Digest != want {
		t.Fatalf("manifest: %v %v", desc, err)
	}
	got, _ := desc.Image()
	layers, _ := got.Layers()
	ld, _ := layers[0].Digest()
	size, _ := layers[0].Size()
	up.reset()
	var wg sync.WaitGroup
	var failures atomic.Int32
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := http.Get(fmt.Sprintf("http://%s/v2/hub/big/blobs/%s", e.host, ld))
			if err != nil {
				failures.Add(1)
				return
			}
			defer resp.Body.Close()
			n, _ := io.Copy(io.Discard, resp.Body)
			if resp.StatusCode != 200 || n != size {
				t.Logf("status %d, %d bytes", resp.StatusCode, n)
				failures.Add(1)
			}
		}()
	}
	wg.Wait()
	if failures.Load() != 0 {
		t.Fatalf("%d pulls failed", failures.Load())
	}
	if n := up.count("GET blobs"); n != 1 {
		t.Fatalf("%d upstream blob GETs, want 1", n)
	}
	// A blob no cached manifest names is not fetched.
	resp, _ := http.Get(fmt.Sprintf("http://%s/v2/hub/big/blobs/sha256:%064d", e.host, 0))
	resp.Body.Close()
	if resp.StatusCode != 404 {
		t.Fatalf("unreferenced blob: %d", resp.StatusCode)
	}
}

func TestIndexChildrenOnDemand(t *testing.T) {
	up := startUpstream(t)
	e := newEnv(t)
	e.configure(t, "hub", up, "", 60)
	idx, _ := random.Index(512, 1, 2)
	ref, _ := name.ParseReference(up.host+"/multi:1", name.Insecure)
	if err := remote.WriteIndex(ref, idx, upAuth); err != nil {
		t.Fatal(err)
	}
	want, _ := idx.Digest()
	r, _ := name.ParseReference(e.host+"/hub/multi:1", name.Insecure)
	got, err := remote.Index(r)
	if err != nil {
		t.Fatal(err)
	}
	if d, _ := got.Digest(); d != want {
		t.Fatalf("index digest %s want %s", d, want)
	}
	im, _ := idx.IndexManifest()
	for _, m := range im.Manifests {
		if d := e.pull(t, "hub/multi@"+m.Digest.String()); d != m.Digest {
			t.Fatalf("child %s: %s", m.Digest, d)
		}
	}
}
