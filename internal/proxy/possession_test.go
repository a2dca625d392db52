package proxy_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/proxy"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// TestProxyDoesNotLinkOtherTenantsBlobs: a cached manifest that names a
// layer Berth stores for another namespace only does not make that layer
// readable in the cache organization: the layer is downloaded from the
// upstream like any other, so an upstream without its bytes gets
// BLOB_UNKNOWN (before, the victim's private layer was linked and served
// to whoever pointed a cache organization at an upstream naming its
// digest). A layer the organization links already is linked without a
// download.
func TestProxyDoesNotLinkOtherTenantsBlobs(t *testing.T) {
	secretLayer := []byte("victim's private layer")
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	manifest := func(layer digest.Digest, size int) string {
		return fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}`,
			digest.FromBytes(cfg), len(cfg), layer, size)
	}
	stolen := manifest(digest.FromBytes(secretLayer), len(secretLayer))
	var blobGets atomic.Int64
	// The upstream names the victim's layer but does not have it.
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
		case strings.HasSuffix(r.URL.Path, "/manifests/latest"):
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", digest.FromString(stolen).String())
			io.WriteString(w, stolen)
		case strings.Contains(r.URL.Path, "/blobs/"):
			blobGets.Add(1)
			if strings.HasSuffix(r.URL.Path, digest.FromBytes(cfg).String()) {
				w.Write(cfg)
				return
			}
			w.WriteHeader(http.StatusNotFound)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer up.Close()
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			_, srv := hubCache(t, dialect, up.URL)
			// The victim's layer, pushed to its own repository.
			resp, err := http.Post(srv.URL+"/v2/victim/app/blobs/uploads/?digest="+digest.FromBytes(secretLayer).String(), "application/octet-stream", bytes.NewReader(secretLayer))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("push the victim's layer: %d", resp.StatusCode)
			}
			get := func(path string) (int, string) { return httpGet(t, srv.URL+path) }
			if st, body := get("/v2/hub/library/app/manifests/latest"); st != 200 {
				t.Fatalf("pull the manifest through the cache: %d %s", st, body)
			}
			blobGets.Store(0)
			st, body := get("/v2/hub/library/app/blobs/" + digest.FromBytes(secretLayer).String())
			if st == 200 || strings.Contains(body, string(secretLayer)) {
				t.Fatalf("the cache served another namespace's layer the upstream does not have: %d %q", st, body)
			}
			if st != 404 || !strings.Contains(body, registry.CodeBlobUnknown) {
				t.Errorf("the layer the upstream does not have: %d %s, want 404 BLOB_UNKNOWN", st, body)
			}
			if blobGets.Load() == 0 {
				t.Error("the upstream was not asked for the layer")
			}
			// The config, fetched once into hub/library/app, is linked
			// into another repository of the organization without a
			// download.
			if st, _ := get("/v2/hub/library/app/blobs/" + digest.FromBytes(cfg).String()); st != 200 {
				t.Fatalf("the config: %d", st)
			}
			if st, body := get("/v2/hub/library/other/manifests/latest"); st != 200 {
				t.Fatalf("pull another repository's manifest through the cache: %d %s", st, body)
			}
			blobGets.Store(0)
			if st, body := get("/v2/hub/library/other/blobs/" + digest.FromBytes(cfg).String()); st != 200 || body != string(cfg) {
				t.Fatalf("the organization's config in another of its repositories: %d %q", st, body)
			}
			if n := blobGets.Load(); n != 0 {
				t.Errorf("a blob the organization links already was downloaded again (%d requests)", n)
			}
		})
	}
}

// hubCache is a registry whose organization hub caches the upstream at
// upURL (a loopback httptest server).
func hubCache(t *testing.T, dialect, upURL string, opts ...func(*proxy.Options)) (*meta.DB, *httptest.Server) {
	t.Helper()
	return hubCacheOf(t, dialect, meta.ProxyCache{Namespace: "hub", Upstream: strings.TrimPrefix(upURL, "http://"), ExpirationS: 3600, Insecure: true}, "", opts...)
}

// imageManifest is an OCI image manifest of the config and of gzip
// layers, as an upstream serves it.
func imageManifest(cfg []byte, layers ...[]byte) string {
	ls := make([]string, len(layers))
	for i, l := range layers {
		ls[i] = fmt.Sprintf(`{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}`, digest.FromBytes(l), len(l))
	}
	return fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[%s]}`,
		digest.FromBytes(cfg), len(cfg), strings.Join(ls, ","))
}

// serveImage answers r as an upstream holding one image does: its
// manifest m, tagged latest, and its blobs. It reports false, having
// answered nothing, when r asks for something else.
func serveImage(w http.ResponseWriter, r *http.Request, m string, blobs ...[]byte) bool {
	switch {
	case r.URL.Path == "/v2/":
		return true
	case strings.HasSuffix(r.URL.Path, "/manifests/latest"):
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Docker-Content-Digest", digest.FromString(m).String())
		io.WriteString(w, m)
		return true
	}
	for _, b := range blobs {
		if strings.HasSuffix(r.URL.Path, "/blobs/"+digest.FromBytes(b).String()) {
			w.Write(b)
			return true
		}
	}
	return false
}

// hubCacheOf is hubCache with the cache's configuration pc and upstream
// password (sealed by the service; "": none).
func hubCacheOf(t *testing.T, dialect string, pc meta.ProxyCache, password string, opts ...func(*proxy.Options)) (*meta.DB, *httptest.Server) {
	t.Helper()
	ctx := context.Background()
	db := metatest.Open(t, dialect)
	driver, _ := fs.New(t.TempDir(), fs.Options{})
	sealer, _ := auth.NewSealer(make([]byte, 32))
	guard, err := events.NewGuard([]string{"loopback"})
	if err != nil {
		t.Fatal(err)
	}
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	po := proxy.Options{Transport: &http.Transport{DialContext: guard.DialContext},
		Policy: policy, Logger: quiet, ManifestTimeout: 8 * time.Second, BlobStall: time.Second}
	for _, o := range opts {
		o(&po)
	}
	svc := proxy.New(wire.ProxyStores(db), driver, sealer, po)
	srv := httptest.NewServer(registry.New(wire.RegistryStores(db), driver, registry.Options{Proxy: svc, Policy: policy, Logger: quiet}))
	t.Cleanup(srv.Close)
	owner, _ := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: "x"})
	if _, err := db.Organizations().CreateOrganization(ctx, "hub", owner.ID); err != nil {
		t.Fatal(err)
	}
	if password != "" {
		pc.PasswordSealed = svc.SealPassword(password)
	}
	if err := db.ProxyCaches().SetProxyCache(ctx, pc); err != nil {
		t.Fatal(err)
	}
	return db, srv
}

// httpGet answers a GET's status and body.
func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// TestProxyCacheHeldToTheQuota: content the cache stores is held to its
// organization's Reject limit, as a push is: a blob whose download would
// bring the usage past it is refused with 403 DENIED and not stored, and
// the usage stays under the limit (before, the cache was counted but never
// refused, so an organization's admins could get past a superuser's limit
// by pulling through an upstream of their own).
func TestProxyCacheHeldToTheQuota(t *testing.T) {
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	big := bytes.Repeat([]byte("x"), 4096)
	m := imageManifest(cfg, big)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !serveImage(w, r, m, cfg, big) {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer up.Close()
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db, srv := hubCache(t, dialect, up.URL)
			q, err := db.Quotas().CreateQuota(ctx, "hub", 1024, "root")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Quotas().CreateQuotaLimit(ctx, "hub", q.ID, meta.QuotaReject, 100); err != nil {
				t.Fatal(err)
			}
			if st, body := httpGet(t, srv.URL+"/v2/hub/library/app/manifests/latest"); st != 200 {
				t.Fatalf("the manifest: %d %s", st, body)
			}
			if st, body := httpGet(t, srv.URL+"/v2/hub/library/app/blobs/"+digest.FromBytes(cfg).String()); st != 200 {
				t.Fatalf("the config, within the quota: %d %s", st, body)
			}
			st, body := httpGet(t, srv.URL+"/v2/hub/library/app/blobs/"+digest.FromBytes(big).String())
			if st != 403 || !strings.Contains(body, registry.CodeDenied) || !strings.Contains(body, "quota") {
				t.Errorf("a layer past the organization's quota: %d %.200s, want 403 DENIED", st, body)
			}
			if usage, _ := db.Quotas().NamespaceUsage(ctx, "hub"); usage > 1024 {
				t.Errorf("the organization uses %d bytes of its 1024-byte quota", usage)
			}
			if _, err := db.Blobs().StoredBlob(ctx, digest.FromBytes(big)); err == nil {
				t.Error("the refused layer was stored")
			}
			// Once another namespace stores the layer, the cache's manifest
			// counts it already (the organization is past its limit now,
			// as a lowered quota leaves it): its download adds nothing and
			// is not refused.
			resp, err := http.Post(srv.URL+"/v2/other/app/blobs/uploads/?digest="+digest.FromBytes(big).String(), "application/octet-stream", bytes.NewReader(big))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			usage, _ := db.Quotas().NamespaceUsage(ctx, "hub")
			if st, body := httpGet(t, srv.URL+"/v2/hub/library/app/blobs/"+digest.FromBytes(big).String()); st != 200 || body != string(big) {
				t.Errorf("a layer the organization's usage counts already: %d %.200s, want 200", st, body)
			}
			if after, _ := db.Quotas().NamespaceUsage(ctx, "hub"); after != usage {
				t.Errorf("its download changed the usage from %d to %d", usage, after)
			}
		})
	}
}

// TestProxyFailedCheckIsRemembered: once a cached tag's upstream check
// fails (here the tag moved upstream to a manifest Berth refuses), the
// pulls of the next minute serve the cached manifest without asking the
// upstream again; after that the upstream is checked once more. Before,
// every pull after the expiration fetched the upstream's manifest again
// (each one counted against a rate limit, or waiting on an upstream that
// hangs).
func TestProxyFailedCheckIsRemembered(t *testing.T) {
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	good := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[]}`,
		digest.FromBytes(cfg), len(cfg))
	schema1 := `{"schemaVersion":1,"name":"library/app","tag":"latest","architecture":"amd64","fsLayers":[],"history":[]}`
	var moved atomic.Bool
	var requests atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
		case strings.HasSuffix(r.URL.Path, "/manifests/latest"):
			requests.Add(1)
			if moved.Load() {
				w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v1+json")
				w.Header().Set("Docker-Content-Digest", digest.FromString(schema1).String())
				io.WriteString(w, schema1)
				return
			}
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", digest.FromString(good).String())
			io.WriteString(w, good)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer up.Close()
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			var skew atomic.Int64
			now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
			_, srv := hubCache(t, dialect, up.URL, func(o *proxy.Options) { o.Now = now })
			moved.Store(false)
			get := func() {
				t.Helper()
				if st, body := httpGet(t, srv.URL+"/v2/hub/library/app/manifests/latest"); st != 200 || body != good {
					t.Fatalf("pull of the cached tag: %d %.200s", st, body)
				}
			}
			get()
			moved.Store(true)
			skew.Store(int64(2 * time.Hour)) // past the hour's expiration
			requests.Store(0)
			for range 10 {
				get()
			}
			if n := requests.Load(); n > 2 {
				t.Errorf("10 pulls after a failed check asked the upstream %d times, want one check (a HEAD and a GET)", n)
			}
			skew.Store(int64(2*time.Hour + 2*time.Minute))
			requests.Store(0)
			get()
			if n := requests.Load(); n == 0 {
				t.Error("a minute after the failed check, the upstream was not checked again")
			}
		})
	}
}

// TestProxyCacheWithoutInsecureIsHTTPSOnly: a cache organization whose
// upstream is not marked insecure reaches it over HTTPS only, even on a
// loopback address where go-containerregistry would fall back to plain
// HTTP by itself and send the upstream credentials in clear text (as it
// did before): the pull fails and the upstream never sees them.
func TestProxyCacheWithoutInsecureIsHTTPSOnly(t *testing.T) {
	var creds atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, _, ok := r.BasicAuth(); ok {
			creds.Add(1)
		}
		w.Header().Set("WWW-Authenticate", `Basic realm="upstream"`)
		w.WriteHeader(http.StatusUnauthorized)
	}))
	defer up.Close()
	_, srv := hubCacheOf(t, "sqlite", meta.ProxyCache{Namespace: "hub", Upstream: strings.TrimPrefix(up.URL, "http://"), ExpirationS: 3600,
		Username: "up"}, "secret")
	if st, body := httpGet(t, srv.URL+"/v2/hub/library/app/manifests/latest"); st == 200 {
		t.Fatalf("a pull over plain HTTP without insecure: %d %.200s", st, body)
	}
	if n := creds.Load(); n != 0 {
		t.Fatalf("the upstream got the credentials over plain HTTP %d times", n)
	}
}
