package proxy_test

import (
	"context"
	"github.com/berth-dev/berth/internal/wire"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/proxy"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
)

// TestProxyUpstreamRefusedBySSRFGuard: a pull through a proxy cache whose
// upstream the SSRF guard refuses (here a registry on loopback) answers
// the spec's DENIED with the guard's reason, which names
// notifications.allowedHosts and the keyword that allows it, as a client
// prints it, instead of an internal error; nothing is cached. With
// "loopback" allowed, the same pull works.
func TestProxyUpstreamRefusedBySSRFGuard(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			up := startUpstream(t)
			img, _ := random.Image(512, 1)
			up.push(t, "library/app", img)
			for _, allow := range [][]string{nil, {"loopback"}} {
				ctx := context.Background()
				db := metatest.Open(t, dialect)
				driver, _ := fs.New(t.TempDir(), fs.Options{})
				sealer, _ := auth.NewSealer(make([]byte, 32))
				guard, err := events.NewGuard(allow)
				if err != nil {
					t.Fatal(err)
				}
				policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
				quiet := slog.New(slog.NewTextHandler(io.Discard, nil))
				svc := proxy.New(wire.ProxyStores(db), driver, sealer, proxy.Options{Transport: &http.Transport{DialContext: guard.DialContext},
					Policy: policy, Logger: quiet})
				srv := httptest.NewServer(registry.New(wire.RegistryStores(db), driver, registry.Options{Proxy: svc, Policy: policy, Logger: quiet}))
				t.Cleanup(srv.Close)
				owner, _ := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: "x"})
				if _, err := db.Organizations().CreateOrganization(ctx, "hub", owner.ID); err != nil {
					t.Fatal(err)
				}
				if err := db.ProxyCaches().SetProxyCache(ctx, meta.ProxyCache{Namespace: "hub", Upstream: up.host, Username: "up",
					PasswordSealed: svc.SealPassword("secret"), ExpirationS: 3600, Insecure: true}); err != nil {
					t.Fatal(err)
				}
				ref, _ := name.ParseReference(strings.TrimPrefix(srv.URL, "http://")+"/hub/library/app:latest", name.Insecure)
				_, err = remote.Image(ref)
				if allow != nil {
					if err != nil {
						t.Fatalf("pull with allowedHosts %v: %v", allow, err)
					}
					continue
				}
				for _, want := range []string{"DENIED", "the proxy cache's upstream registry is not allowed", "a loopback address",
					`add "loopback" to notifications.allowedHosts`, `keywords "loopback" and "private"`} {
					if err == nil || !strings.Contains(err.Error(), want) {
						t.Fatalf("pull through a refused upstream: %v, want it to say %q", err, want)
					}
				}
				t.Logf("client error: %v", err)
				if tags, _ := db.Manifests().ListTags(ctx, "hub/library/app", "", 10); len(tags) != 0 {
					t.Fatalf("a refused upstream left tags %v", tags)
				}
			}
		})
	}
}
