package proxy_test

import (
	"context"
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
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/proxy"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// TestProxyHangingUpstreamCheckIsRemembered: a cached tag whose upstream
// check times out (the upstream accepts and sends nothing) is served stale,
// and the failed check is recorded although the check's own time ran out:
// the next pull is served from the cache without asking the upstream.
// Before, the record was written with the check's expired context and
// failed, so every pull waited the whole ManifestTimeout again.
func TestProxyHangingUpstreamCheckIsRemembered(t *testing.T) {
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	good := imageManifest(cfg)
	var hang atomic.Bool
	var requests atomic.Int64
	stop := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
		case strings.HasSuffix(r.URL.Path, "/manifests/latest"):
			requests.Add(1)
			if hang.Load() {
				select { // accepts, sends nothing
				case <-r.Context().Done():
				case <-stop:
				}
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
	defer close(stop)
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			var skew atomic.Int64
			now := func() time.Time { return time.Now().Add(time.Duration(skew.Load())) }
			_, srv := hubCache(t, dialect, up.URL, func(o *proxy.Options) {
				o.Now = now
				o.ManifestTimeout = 300 * time.Millisecond
			})
			hang.Store(false)
			get := func() {
				t.Helper()
				if st, body := httpGet(t, srv.URL+"/v2/hub/library/app/manifests/latest"); st != 200 || body != good {
					t.Fatalf("pull of the cached tag: %d %.200s", st, body)
				}
			}
			get()
			hang.Store(true)
			skew.Store(int64(2 * time.Hour)) // past the hour's expiration
			requests.Store(0)
			get() // checked upstream: times out, served stale
			if n := requests.Load(); n == 0 {
				t.Fatal("the expired tag was not checked upstream")
			}
			requests.Store(0)
			get()
			if n := requests.Load(); n != 0 {
				t.Errorf("the pull after a timed-out check asked the upstream again (%d requests), want none for a minute", n)
			}
		})
	}
}

// deletedBeforeStore is the blob store with the repository deleted (by an
// administrator) while the cache downloaded a blob for it, just before the
// blob is stored.
type deletedBeforeStore struct {
	proxy.BlobStore
	db     *meta.DB
	strike *atomic.Bool
}

func (s deletedBeforeStore) StoreBlob(ctx context.Context, repo string, b meta.Blob, up meta.UploadClaim, w meta.Writer, bytes meta.BlobBytes) (bool, error) {
	if s.strike.CompareAndSwap(true, false) {
		if err := s.db.Repositories().DeleteRepository(ctx, repo, "admin"); err != nil {
			return false, err
		}
	}
	return s.BlobStore.StoreBlob(ctx, repo, b, up, w, bytes)
}

// TestProxyBlobFillDoesNotRecreateDeletedRepository: a repository deleted
// while the cache downloads one of its blobs stays deleted: the blob is
// answered BLOB_UNKNOWN and nothing is created. Before, the fill created
// the repository again, private, empty and with nobody's permission (and
// a repo_created event without an actor).
func TestProxyBlobFillDoesNotRecreateDeletedRepository(t *testing.T) {
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	m := imageManifest(cfg)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !serveImage(w, r, m, cfg) {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer up.Close()
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			driver, _ := fs.New(t.TempDir(), fs.Options{})
			sealer, _ := auth.NewSealer(make([]byte, 32))
			policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
			quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
			var strike atomic.Bool
			svc := proxy.New(proxy.Stores{Caches: db.ProxyCaches(), Blobs: deletedBeforeStore{db.Blobs(), db, &strike}}, driver, sealer,
				proxy.Options{Policy: policy, Logger: quiet})
			srv := httptest.NewServer(registry.New(wire.RegistryStores(db), driver, registry.Options{Proxy: svc, Policy: policy, Logger: quiet}))
			t.Cleanup(srv.Close)
			owner, _ := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: "x"})
			if _, err := db.Organizations().CreateOrganization(ctx, "hub", owner.ID); err != nil {
				t.Fatal(err)
			}
			if err := db.ProxyCaches().SetProxyCache(ctx, meta.ProxyCache{Namespace: "hub", Upstream: strings.TrimPrefix(up.URL, "http://"), ExpirationS: 3600, Insecure: true}); err != nil {
				t.Fatal(err)
			}
			if st, body := httpGet(t, srv.URL+"/v2/hub/library/app/manifests/latest"); st != 200 {
				t.Fatalf("pull the manifest through the cache: %d %s", st, body)
			}
			strike.Store(true)
			st, body := httpGet(t, srv.URL+"/v2/hub/library/app/blobs/"+digest.FromBytes(cfg).String())
			if st != http.StatusNotFound || !strings.Contains(body, registry.CodeBlobUnknown) {
				t.Errorf("a blob of a repository deleted during its download: %d %.200s, want 404 BLOB_UNKNOWN", st, body)
			}
			if ri, err := db.Repositories().Repository(ctx, "hub/library/app"); err != nil || ri.Exists {
				t.Errorf("the deleted repository exists again after the blob's download (%+v, %v)", ri, err)
			}
		})
	}
}
