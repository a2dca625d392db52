package proxy_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
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

// skewClock is a clock the test moves forward.
type skewClock struct{ skew atomic.Int64 }

func (c *skewClock) now() time.Time          { return time.Now().Add(time.Duration(c.skew.Load())) }
func (c *skewClock) add(d time.Duration)     { c.skew.Add(int64(d)) }
func (c *skewClock) opt(o *proxy.Options)    { o.Now = c.now }
func noStoreChange(db *meta.DB) proxy.Stores { return wire.ProxyStores(db) }

// cacheWithStores is hubCache (organization hub caching upURL, an hour's
// expiration) with the cache's stores made by stores.
func cacheWithStores(t *testing.T, dialect, upURL string, stores func(*meta.DB) proxy.Stores, opts ...func(*proxy.Options)) (*meta.DB, *httptest.Server) {
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
	po := proxy.Options{Transport: &http.Transport{DialContext: guard.DialContext}, Policy: policy, Logger: quiet,
		ManifestTimeout: 8 * time.Second, BlobStall: time.Second}
	for _, o := range opts {
		o(&po)
	}
	svc := proxy.New(stores(db), driver, sealer, po)
	srv := httptest.NewServer(registry.New(wire.RegistryStores(db), driver, registry.Options{Proxy: svc, Policy: policy, Logger: quiet}))
	t.Cleanup(srv.Close)
	owner, _ := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: "x"})
	if _, err := db.Organizations().CreateOrganization(ctx, "hub", owner.ID); err != nil {
		t.Fatal(err)
	}
	pc := meta.ProxyCache{Namespace: "hub", Upstream: strings.TrimPrefix(upURL, "http://"), ExpirationS: 3600, Insecure: true}
	if err := db.ProxyCaches().SetProxyCache(ctx, pc); err != nil {
		t.Fatal(err)
	}
	return db, srv
}

// noDigestOnHead answers HEADs without Docker-Content-Digest, as some
// registries do (the header is optional in the distribution spec).
type noDigestOnHead struct{ http.ResponseWriter }

func (w noDigestOnHead) WriteHeader(code int) {
	w.Header().Del("Docker-Content-Digest")
	w.ResponseWriter.WriteHeader(code)
}

func (w noDigestOnHead) Write(b []byte) (int, error) {
	w.Header().Del("Docker-Content-Digest")
	return w.ResponseWriter.Write(b)
}

// TestProxyCheckWithoutDigestHeader: an upstream whose HEAD of a manifest
// answers 200 without Docker-Content-Digest (registry.access.redhat.com
// and public.ecr.aws have) is asked with a GET instead, as containerd
// does: an expired cached tag the upstream moved is served at its new
// digest, and one it did not move is confirmed (no upstream request for
// the next hour). Before, go-containerregistry's HEAD failed on the
// missing header, every check took the "upstream failed" branch, and the
// old digest was served for ever.
func TestProxyCheckWithoutDigestHeader(t *testing.T) {
	var manifestRequests atomic.Int64
	inner := ggcrregistry.New(ggcrregistry.Logger(log.New(io.Discard, "", 0)))
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/manifests/") {
			manifestRequests.Add(1)
		}
		if r.Method == http.MethodHead && strings.Contains(r.UserAgent(), "berth-proxy-cache") {
			w = noDigestOnHead{w}
		}
		inner.ServeHTTP(w, r)
	}))
	defer up.Close()
	push := func(t *testing.T, repo string) digest.Digest {
		t.Helper()
		img, _ := random.Image(256, 1)
		ref, err := name.ParseReference(strings.TrimPrefix(up.URL, "http://")+"/"+repo+":latest", name.Insecure)
		if err != nil {
			t.Fatal(err)
		}
		if err := remote.Write(ref, img); err != nil {
			t.Fatal(err)
		}
		d, _ := img.Digest()
		return digest.Digest(d.String())
	}
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			repo := "library/" + dialect
			var clock skewClock
			_, srv := cacheWithStores(t, dialect, up.URL, noStoreChange, clock.opt)
			pull := func(when string) digest.Digest {
				t.Helper()
				st, body := httpGet(t, srv.URL+"/v2/hub/"+repo+"/manifests/latest")
				if st != http.StatusOK {
					t.Fatalf("%s: pull of the tag: %d %.300s", when, st, body)
				}
				return digest.FromString(body)
			}
			first := push(t, repo)
			if got := pull("first pull"); got != first {
				t.Fatalf("first pull: %s, want %s", got, first)
			}

			// Expired, unchanged upstream: confirmed, then not asked again
			// within the expiration.
			clock.add(2 * time.Hour)
			if got := pull("unchanged upstream"); got != first {
				t.Fatalf("expired tag the upstream did not move: %s, want %s", got, first)
			}
			clock.add(30 * time.Minute)
			manifestRequests.Store(0)
			if got := pull("within the expiration of the check"); got != first {
				t.Fatalf("after the check: %s, want %s", got, first)
			}
			if n := manifestRequests.Load(); n != 0 {
				t.Errorf("a pull half an hour after the tag was confirmed asked the upstream %d times, want none", n)
			}

			// Moved upstream: the next check past the expiration finds it.
			second := push(t, repo)
			clock.add(2 * time.Hour)
			if got := pull("moved upstream"); got != second {
				t.Errorf("expired tag moved upstream to %s (its HEAD without Docker-Content-Digest): served %s", second, got)
			}
		})
	}
}

// touchFails is the cache store with TouchProxyTag failing (a database
// busy or failing), or with the repository deleted just before it.
type touchFails struct {
	proxy.CacheStore
	db            *meta.DB
	fail, deleted *atomic.Bool
}

func (s touchFails) TouchProxyTag(ctx context.Context, repo, tag string, d digest.Digest, at time.Time) error {
	if s.fail.Load() {
		return errors.New("record proxy tag: database is locked")
	}
	if s.deleted.CompareAndSwap(true, false) {
		if err := s.db.Repositories().DeleteRepository(ctx, repo, "admin"); err != nil {
			return err
		}
	}
	return s.CacheStore.TouchProxyTag(ctx, repo, tag, d, at)
}

// TestProxyConfirmedTagServedWhenRecordFails: a cached tag the upstream
// confirms is served although recording the check fails (the database
// busy, or the repository deleted meanwhile): the cached manifest is
// known good. Before, the pull was answered 500.
func TestProxyConfirmedTagServedWhenRecordFails(t *testing.T) {
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	m := imageManifest(cfg)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !serveImage(w, r, m, cfg) {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer up.Close()
	for _, dialect := range metatest.Dialects() {
		for _, c := range []string{"failing", "deleted"} {
			t.Run(dialect+"/"+c, func(t *testing.T) {
				var fail, deleted atomic.Bool
				var clock skewClock
				_, srv := cacheWithStores(t, dialect, up.URL, func(db *meta.DB) proxy.Stores {
					return proxy.Stores{Caches: touchFails{db.ProxyCaches(), db, &fail, &deleted}, Blobs: db.Blobs()}
				}, clock.opt)
				if st, body := httpGet(t, srv.URL+"/v2/hub/library/app/manifests/latest"); st != 200 || body != m {
					t.Fatalf("first pull: %d %.300s", st, body)
				}
				clock.add(2 * time.Hour)
				fail.Store(c == "failing")
				deleted.Store(c == "deleted")
				if st, body := httpGet(t, srv.URL+"/v2/hub/library/app/manifests/latest"); st != 200 || body != m {
					t.Errorf("an expired tag the upstream confirmed, its record %s: %d %.300s, want the cached manifest", c, st, body)
				}
			})
		}
	}
}

// sizeUnknown is the cache store answering every reference's size as
// unknown (-1).
type sizeUnknown struct{ proxy.CacheStore }

func (s sizeUnknown) ProxyBlobReferenced(ctx context.Context, repo string, d digest.Digest) (int64, bool, error) {
	_, ok, err := s.CacheStore.ProxyBlobReferenced(ctx, repo, d)
	return -1, ok, err
}

// TestProxyManifestsAreNotBlobs: what a cached manifest names as a
// manifest is not a blob of its repository: an index's child, and the
// subject of an OCI 1.1 referrer, pulled as blobs (neither cached) are 404
// BLOB_UNKNOWN without an upstream request, as in a repository that is
// not a cache, and the child is still pulled as a manifest. Before, the
// cache downloaded an index's child manifest through the upstream's blob
// endpoint and linked it as a blob, which the organization's quota does
// not count. A blob whose size the cached manifest does not give is not
// downloaded either (nothing would hold the download to a size).
func TestProxyManifestsAreNotBlobs(t *testing.T) {
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	layer := []byte("a signature's layer")
	subject := imageManifest(cfg, []byte("the signed image's layer"))
	sd := digest.FromString(subject)
	referrer := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json",`+
		`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},`+
		`"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}],`+
		`"subject":{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%d}}`,
		digest.FromBytes(cfg), len(cfg), digest.FromBytes(layer), len(layer), sd, len(subject))
	child := imageManifest(cfg, layer)
	cd := digest.FromString(child)
	index := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[`+
		`{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%d,"platform":{"architecture":"amd64","os":"linux"}}]}`,
		cd, len(child))
	var blobRequests atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.Contains(r.URL.Path, "/blobs/") {
			blobRequests.Add(1)
		}
		// The upstream serves its manifests through its blob endpoint too,
		// as registries that keep manifests among blobs do.
		switch p := r.URL.Path; {
		case p == "/v2/library/multi/manifests/latest":
			w.Header().Set("Content-Type", oci.MediaTypeImageIndex)
			w.Header().Set("Docker-Content-Digest", digest.FromString(index).String())
			io.WriteString(w, index)
		case p == "/v2/library/multi/manifests/"+cd.String():
			w.Header().Set("Content-Type", oci.MediaTypeImageManifest)
			w.Header().Set("Docker-Content-Digest", cd.String())
			io.WriteString(w, child)
		case !serveImage(w, r, referrer, cfg, layer, []byte(subject), []byte(child)):
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer up.Close()
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db, srv := cacheWithStores(t, dialect, up.URL, noStoreChange)
			if st, body := httpGet(t, srv.URL+"/v2/hub/library/app/manifests/latest"); st != 200 || body != referrer {
				t.Fatalf("pull of the referrer: %d %.300s", st, body)
			}
			blobRequests.Store(0)
			st, body := httpGet(t, srv.URL+"/v2/hub/library/app/blobs/"+sd.String())
			if st != http.StatusNotFound || !strings.Contains(body, registry.CodeBlobUnknown) {
				t.Errorf("the referrer's subject pulled as a blob: %d %.200s, want 404 BLOB_UNKNOWN", st, body)
			}
			if n := blobRequests.Load(); n != 0 {
				t.Errorf("the subject pulled as a blob asked the upstream %d times, want none", n)
			}
			if _, err := db.Blobs().StoredBlob(ctx, sd); !errors.Is(err, meta.ErrBlobNotFound) {
				t.Errorf("the subject was stored as a blob (%v)", err)
			}
			if st, body := httpGet(t, srv.URL+"/v2/hub/library/app/blobs/"+digest.FromBytes(layer).String()); st != 200 || body != string(layer) {
				t.Errorf("the referrer's layer: %d %.200s", st, body)
			}

			if st, body := httpGet(t, srv.URL+"/v2/hub/library/multi/manifests/latest"); st != 200 || body != index {
				t.Fatalf("pull of the index: %d %.300s", st, body)
			}
			blobRequests.Store(0)
			st, body = httpGet(t, srv.URL+"/v2/hub/library/multi/blobs/"+cd.String())
			if st != http.StatusNotFound || !strings.Contains(body, registry.CodeBlobUnknown) {
				t.Errorf("the index's child pulled as a blob: %d %.200s, want 404 BLOB_UNKNOWN", st, body)
			}
			if n := blobRequests.Load(); n != 0 {
				t.Errorf("the index's child pulled as a blob asked the upstream %d times, want none", n)
			}
			if _, err := db.Blobs().StoredBlob(ctx, cd); !errors.Is(err, meta.ErrBlobNotFound) {
				t.Errorf("the index's child was stored as a blob (%v)", err)
			}
			if st, body := httpGet(t, srv.URL+"/v2/hub/library/multi/manifests/"+cd.String()); st != 200 || body != child {
				t.Errorf("the index's child pulled as a manifest: %d %.200s", st, body)
			}
		})
		t.Run(dialect+"/size unknown", func(t *testing.T) {
			_, srv := cacheWithStores(t, dialect, up.URL, func(db *meta.DB) proxy.Stores {
				return proxy.Stores{Caches: sizeUnknown{db.ProxyCaches()}, Blobs: db.Blobs()}
			})
			if st, body := httpGet(t, srv.URL+"/v2/hub/library/app/manifests/latest"); st != 200 || body != referrer {
				t.Fatalf("pull of the referrer: %d %.300s", st, body)
			}
			blobRequests.Store(0)
			st, body := httpGet(t, srv.URL+"/v2/hub/library/app/blobs/"+digest.FromBytes(layer).String())
			if st != http.StatusNotFound || !strings.Contains(body, registry.CodeBlobUnknown) {
				t.Errorf("a blob of unknown size: %d %.200s, want 404 BLOB_UNKNOWN", st, body)
			}
			if n := blobRequests.Load(); n != 0 {
				t.Errorf("a blob of unknown size asked the upstream %d times, want none", n)
			}
		})
	}
}
