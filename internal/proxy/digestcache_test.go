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
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/gc"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/proxy"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// TestProxyPullByDigestStaysCached: an image pulled through the cache by
// digest only (no tag keeps it) is kept for the organization's expiration
// after its last pull, not only gc.delay: a collection pass later than
// the delay leaves it, and with the upstream gone it is still pulled from
// the cache, manifest and blobs. Once nobody pulled it for the
// expiration (and the delay), a pass collects it. Before, the first pass
// collected it and the pull failed with the upstream down.
func TestProxyPullByDigestStaysCached(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) { testProxyPullByDigestStaysCached(t, dialect) })
	}
}

func testProxyPullByDigestStaysCached(t *testing.T, dialect string) {
	const delay = time.Second
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	layer := []byte("a layer pulled by digest")
	m := imageManifest(cfg, layer)
	md := digest.FromString(m)
	var gone atomic.Bool
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case gone.Load():
			w.WriteHeader(http.StatusServiceUnavailable)
		case strings.HasSuffix(r.URL.Path, "/manifests/"+md.String()):
			w.Header().Set("Content-Type", oci.MediaTypeImageManifest)
			w.Header().Set("Docker-Content-Digest", md.String())
			io.WriteString(w, m)
		case !serveImage(w, r, m, cfg, layer):
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer up.Close()
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
	svc := proxy.New(wire.ProxyStores(db), driver, sealer,
		proxy.Options{Transport: &http.Transport{DialContext: guard.DialContext}, Policy: policy, Logger: quiet})
	srv := httptest.NewServer(registry.New(wire.RegistryStores(db), driver, registry.Options{Proxy: svc, Policy: policy, Logger: quiet, GCDelay: delay}))
	t.Cleanup(srv.Close)
	collector := gc.New(wire.GCStores(db, 0), driver, gc.Options{Delay: delay, UploadExpiry: time.Hour, Logger: quiet})
	owner, _ := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: "x"})
	if _, err := db.Organizations().CreateOrganization(ctx, "hub", owner.ID); err != nil {
		t.Fatal(err)
	}
	pc := meta.ProxyCache{Namespace: "hub", Upstream: strings.TrimPrefix(up.URL, "http://"), ExpirationS: 3600, Insecure: true}
	if err := db.ProxyCaches().SetProxyCache(ctx, pc); err != nil {
		t.Fatal(err)
	}
	pull := func(when string) {
		t.Helper()
		if st, body := httpGet(t, srv.URL+"/v2/hub/library/app/manifests/"+md.String()); st != 200 || body != m {
			t.Fatalf("%s: pull by digest: %d %s", when, st, body)
		}
		for _, b := range [][]byte{cfg, layer} {
			if st, body := httpGet(t, srv.URL+"/v2/hub/library/app/blobs/"+digest.FromBytes(b).String()); st != 200 || body != string(b) {
				t.Fatalf("%s: blob %s: %d %q", when, digest.FromBytes(b), st, body)
			}
		}
	}
	pass := func() gc.Collected {
		t.Helper()
		rep, err := collector.Pass(ctx, false)
		if err != nil {
			t.Fatal(err)
		}
		return rep.Collected
	}
	pull("first pull")
	time.Sleep(delay + 300*time.Millisecond)
	if got := pass(); got != (gc.Collected{}) {
		t.Errorf("a pass after gc.delay, within the expiration, collected %+v of the image pulled by digest", got)
	}
	gone.Store(true)
	pull("upstream gone, after a pass")

	// Nobody pulls it for longer than the expiration (and the delay).
	pc.ExpirationS = 1
	if err := db.ProxyCaches().SetProxyCache(ctx, pc); err != nil {
		t.Fatal(err)
	}
	time.Sleep(delay + 300*time.Millisecond)
	if got := pass(); got.Manifests != 1 {
		t.Errorf("a pass after the expiration since the last pull collected %+v, want the manifest", got)
	}
	if st, _ := httpGet(t, srv.URL+"/v2/hub/library/app/manifests/"+md.String()); st == 200 {
		t.Errorf("the collected manifest, upstream gone: %d", st)
	}
}
