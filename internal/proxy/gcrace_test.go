package proxy_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

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

// collectedBeforeLink is the blob store with garbage collection striking
// once between the cache finding a blob linked in another repository of
// its organization and linking it: the next link finds the blob gone.
type collectedBeforeLink struct {
	proxy.BlobStore
	strike *atomic.Bool
}

func (s collectedBeforeLink) LinkBlob(ctx context.Context, repo string, b meta.Blob, up meta.UploadClaim, w meta.Writer) error {
	if s.strike.CompareAndSwap(true, false) {
		return fmt.Errorf("link %s: %w", b.Digest, meta.ErrBlobNotFound)
	}
	return s.BlobStore.LinkBlob(ctx, repo, b, up, w)
}

// TestProxyBlobCollectedBeforeItsLinkIsDownloaded: a blob the cache found
// linked in another repository of its organization, then collected
// before its link in this one, is downloaded from the upstream (the
// manifest cached here names it, and the upstream has it). Before, the
// pull answered 404 BLOB_UNKNOWN.
func TestProxyBlobCollectedBeforeItsLinkIsDownloaded(t *testing.T) {
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	m := imageManifest(cfg)
	var blobGets atomic.Int64
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasSuffix(r.URL.Path, "/blobs/"+digest.FromBytes(cfg).String()) {
			blobGets.Add(1)
		}
		if !serveImage(w, r, m, cfg) {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer up.Close()
	ctx := context.Background()
	db := metatest.Open(t, "sqlite")
	driver, _ := fs.New(t.TempDir(), fs.Options{})
	sealer, _ := auth.NewSealer(make([]byte, 32))
	guard, err := events.NewGuard([]string{"loopback"})
	if err != nil {
		t.Fatal(err)
	}
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
	var strike atomic.Bool
	svc := proxy.New(proxy.Stores{Caches: db.ProxyCaches(), Blobs: collectedBeforeLink{db.Blobs(), &strike}}, driver, sealer,
		proxy.Options{Transport: &http.Transport{DialContext: guard.DialContext}, Policy: policy, Logger: quiet})
	srv := httptest.NewServer(registry.New(wire.RegistryStores(db), driver, registry.Options{Proxy: svc, Policy: policy, Logger: quiet}))
	t.Cleanup(srv.Close)
	owner, _ := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: "x"})
	if _, err := db.Organizations().CreateOrganization(ctx, "hub", owner.ID); err != nil {
		t.Fatal(err)
	}
	if err := db.ProxyCaches().SetProxyCache(ctx, meta.ProxyCache{Namespace: "hub", Upstream: strings.TrimPrefix(up.URL, "http://"), ExpirationS: 3600, Insecure: true}); err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) { return httpGet(t, srv.URL+path) }
	for _, repo := range []string{"hub/library/first", "hub/library/second"} {
		if st, body := get("/v2/" + repo + "/manifests/latest"); st != 200 {
			t.Fatalf("pull %s's manifest through the cache: %d %s", repo, st, body)
		}
	}
	if st, body := get("/v2/hub/library/first/blobs/" + digest.FromBytes(cfg).String()); st != 200 || body != string(cfg) {
		t.Fatalf("the config in the first repository: %d %q", st, body)
	}
	strike.Store(true)
	blobGets.Store(0)
	if st, body := get("/v2/hub/library/second/blobs/" + digest.FromBytes(cfg).String()); st != 200 || body != string(cfg) {
		t.Fatalf("the config collected between its lookup and its link: %d %q, want it downloaded", st, body)
	}
	if blobGets.Load() != 1 {
		t.Errorf("the upstream was asked for the config %d times, want once", blobGets.Load())
	}
}
