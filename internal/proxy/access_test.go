package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/proxy"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/testenv"
)

// authedHub is a Berth with token authentication whose organization hub
// (owned by "owner") caches pc's upstream.
func authedHub(t *testing.T, dialect string, pc meta.ProxyCache, password string) *testenv.Env {
	t.Helper()
	e := testenv.New(t, testenv.Options{Dialect: dialect, Proxy: &proxy.Options{ManifestTimeout: 8 * time.Second}})
	e.User("owner", false)
	e.Org("hub", "owner")
	pc.Namespace, pc.ExpirationS, pc.Insecure = "hub", 3600, true
	if password != "" {
		pc.PasswordSealed = e.Proxy.SealPassword(password)
	}
	if err := e.DB.ProxyCaches().SetProxyCache(context.Background(), pc); err != nil {
		t.Fatal(err)
	}
	e.Proxy.Invalidate()
	return e
}

// basicPull pulls repo:tag from e as user with Basic credentials on every
// request (the manifest, then its config and layers), as a client that
// does not use registry tokens does, and returns the first failure.
func basicPull(t *testing.T, e *testenv.Env, user, repo, tag string) error {
	t.Helper()
	res, body := e.Do(user, "GET", "/v2/"+repo+"/manifests/"+tag, nil, "Accept",
		"application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json")
	if res.StatusCode != http.StatusOK {
		return fmt.Errorf("manifest: %d %.200s", res.StatusCode, body)
	}
	var m struct {
		Config struct{ Digest string }
		Layers []struct{ Digest string }
	}
	if err := json.Unmarshal(body, &m); err != nil {
		return fmt.Errorf("manifest: %w", err)
	}
	blobs := []string{m.Config.Digest}
	for _, l := range m.Layers {
		blobs = append(blobs, l.Digest)
	}
	for _, d := range blobs {
		if res, body := e.Do(user, "GET", "/v2/"+repo+"/blobs/"+d, nil); res.StatusCode != http.StatusOK {
			return fmt.Errorf("blob %s: %d %.200s", d, res.StatusCode, body)
		}
	}
	return nil
}

// TestProxyCreatorPullsAgain: the member of a creator team who pulls a
// repository of the cache organization first (which creates it)
// administers it, as the creator of a pushed repository does, so that the
// pulls that follow (the blobs right after the manifest, the next pull, the
// next registry token) are allowed. Before, the repository was created
// private with nobody's permission: the creator's blobs were refused.
func TestProxyCreatorPullsAgain(t *testing.T) {
	up := startUpstream(t)
	img, err := random.Image(512, 2)
	if err != nil {
		t.Fatal(err)
	}
	up.push(t, "library/app", img)
	up.push(t, "library/tokened", img)
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := authedHub(t, dialect, meta.ProxyCache{Upstream: up.host, Username: "up"}, "secret")
			carol := e.User("carol", false)
			team, err := e.DB.Organizations().PutTeam(ctx, "hub", meta.Team{Name: "builders", Role: "creator"})
			if err != nil {
				t.Fatal(err)
			}
			if err := e.DB.Organizations().AddTeamMember(ctx, team.ID, carol.ID); err != nil {
				t.Fatal(err)
			}
			for i := range 2 {
				if err := basicPull(t, e, "carol", "hub/library/app", "latest"); err != nil {
					t.Fatalf("pull %d by the creator with Basic credentials: %v", i+1, err)
				}
			}
			// The token flow: a registry token for each pull.
			for i := range 2 {
				ref, err := name.ParseReference(e.Host+"/hub/library/tokened:latest", name.Insecure)
				if err != nil {
					t.Fatal(err)
				}
				pulled, err := remote.Image(ref, remote.WithAuth(&authn.Basic{Username: "carol", Password: e.Secret("carol")}))
				if err == nil {
					_, err = pulled.RawConfigFile()
				}
				if err != nil {
					t.Fatalf("pull %d by the creator with a registry token: %v", i+1, err)
				}
			}
			// Nobody else gained anything: another user may not pull.
			e.User("mallory", false)
			if err := basicPull(t, e, "mallory", "hub/library/app", "latest"); err == nil {
				t.Error("a user outside the organization pulled its private cached repository")
			}
		})
	}
}

// possessionUpstream serves one manifest under every repository; its
// layer is served only under /v2/secret/ (counted), as a registry serves
// blobs per repository. gate, if not nil, holds the layer's download until
// it is closed (after started receives).
type possessionUpstream struct {
	srv      *httptest.Server
	layer    []byte
	layerGet atomic.Int64
	started  chan struct{}
	gate     chan struct{}
}

func startPossessionUpstream(t *testing.T, gated bool) *possessionUpstream {
	t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	p := &possessionUpstream{layer: []byte("the secret repository's layer")}
	if gated {
		p.started, p.gate = make(chan struct{}, 1), make(chan struct{})
	}
	m := imageManifest(cfg, p.layer)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/":
		case strings.HasSuffix(r.URL.Path, "/manifests/latest"):
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", digest.FromString(m).String())
			io.WriteString(w, m)
		case strings.HasSuffix(r.URL.Path, "/blobs/"+digest.FromBytes(cfg).String()):
			w.Write(cfg)
		case strings.HasSuffix(r.URL.Path, "/blobs/"+digest.FromBytes(p.layer).String()):
			p.layerGet.Add(1)
			if !strings.HasPrefix(r.URL.Path, "/v2/secret/") {
				w.WriteHeader(http.StatusNotFound)
				return
			}
			if p.gate != nil && r.Method == http.MethodGet {
				p.started <- struct{}{}
				<-p.gate
			}
			w.Write(p.layer)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(p.srv.Close)
	return p
}

// TestProxyLinksOnlyFromReadableRepositories: a blob another repository
// of the cache organization links is linked without a download only for a
// puller who may pull that repository; for another it is downloaded from
// the upstream repository the puller asked for (which here does not have
// it: BLOB_UNKNOWN). Before, any puller of any repository of the
// organization got the blob of a private repository it may not read, by
// naming its digest in a manifest of an upstream repository it controls.
func TestProxyLinksOnlyFromReadableRepositories(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			up := startPossessionUpstream(t, false)
			layer := digest.FromBytes(up.layer).String()
			e := authedHub(t, dialect, meta.ProxyCache{Upstream: strings.TrimPrefix(up.srv.URL, "http://")}, "")
			if err := basicPull(t, e, "owner", "hub/secret", "latest"); err != nil {
				t.Fatalf("the owner's pull of the private repository: %v", err)
			}
			// The owner may read hub/secret: its layer is linked into
			// hub/mine without a download.
			if res, body := e.Do("owner", "GET", "/v2/hub/mine/manifests/latest", nil); res.StatusCode != 200 {
				t.Fatalf("the owner's manifest of hub/mine: %d %.200s", res.StatusCode, body)
			}
			up.layerGet.Store(0)
			if res, body := e.Do("owner", "GET", "/v2/hub/mine/blobs/"+layer, nil); res.StatusCode != 200 || string(body) != string(up.layer) {
				t.Fatalf("the owner's layer in hub/mine: %d %.200s", res.StatusCode, body)
			}
			if n := up.layerGet.Load(); n != 0 {
				t.Errorf("a layer the puller may read in another repository was downloaded again (%d requests)", n)
			}
			// hub/open is public; an anonymous puller may not read
			// hub/secret: the layer comes from upstream open, which does
			// not have it.
			if res, body := e.Do("owner", "GET", "/v2/hub/open/manifests/latest", nil); res.StatusCode != 200 {
				t.Fatalf("the owner's manifest of hub/open: %d %.200s", res.StatusCode, body)
			}
			public := "public"
			if err := e.DB.Repositories().UpdateRepository(ctx, "hub/open", &public, nil, nil, nil); err != nil {
				t.Fatal(err)
			}
			if res, body := e.Do("", "GET", "/v2/hub/open/blobs/"+digest.FromBytes([]byte(`{"architecture":"amd64","os":"linux"}`)).String(), nil); res.StatusCode != 200 {
				t.Fatalf("anonymous pull of hub/open's config: %d %.200s", res.StatusCode, body)
			}
			up.layerGet.Store(0)
			res, body := e.Do("", "GET", "/v2/hub/open/blobs/"+layer, nil)
			if res.StatusCode == 200 || strings.Contains(string(body), string(up.layer)) {
				t.Fatalf("an anonymous puller got hub/secret's layer through hub/open: %d %.200s", res.StatusCode, body)
			}
			if res.StatusCode != 404 || !strings.Contains(string(body), registry.CodeBlobUnknown) {
				t.Errorf("the layer upstream open does not have: %d %.200s, want 404 BLOB_UNKNOWN", res.StatusCode, body)
			}
			if up.layerGet.Load() == 0 {
				t.Error("the upstream was not asked for the layer")
			}
		})
	}
}

// TestProxySharedDownloadServesOnlyItsRepository: a blob download in
// flight for one repository of the organization does not answer a pull of
// the same digest in another: that puller neither may read the first
// repository nor has its upstream repository proved it has the bytes.
// Before, the download was shared by organization and digest, and its blob
// linked into the second repository.
func TestProxySharedDownloadServesOnlyItsRepository(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			up := startPossessionUpstream(t, true)
			layer := digest.FromBytes(up.layer).String()
			e := authedHub(t, dialect, meta.ProxyCache{Upstream: strings.TrimPrefix(up.srv.URL, "http://")}, "")
			for _, repo := range []string{"hub/secret", "hub/open"} {
				if res, body := e.Do("owner", "GET", "/v2/"+repo+"/manifests/latest", nil); res.StatusCode != 200 {
					t.Fatalf("the owner's manifest of %s: %d %.200s", repo, res.StatusCode, body)
				}
			}
			public := "public"
			if err := e.DB.Repositories().UpdateRepository(ctx, "hub/open", &public, nil, nil, nil); err != nil {
				t.Fatal(err)
			}
			type answer struct {
				status int
				body   string
			}
			owner, anon := make(chan answer, 1), make(chan answer, 1)
			go func() {
				res, body := e.Do("owner", "GET", "/v2/hub/secret/blobs/"+layer, nil)
				owner <- answer{res.StatusCode, string(body)}
			}()
			select {
			case <-up.started: // the owner's download is under way
			case a := <-owner:
				close(up.gate)
				t.Fatalf("the owner's download did not reach the upstream: %d %.200s", a.status, a.body)
			}
			go func() {
				res, body := e.Do("", "GET", "/v2/hub/open/blobs/"+layer, nil)
				anon <- answer{res.StatusCode, string(body)}
			}()
			time.Sleep(200 * time.Millisecond) // let the anonymous pull reach the cache
			close(up.gate)
			if a := <-owner; a.status != 200 {
				t.Errorf("the owner's download: %d %.200s", a.status, a.body)
			}
			if a := <-anon; a.status == 200 || strings.Contains(a.body, string(up.layer)) {
				t.Errorf("an anonymous puller of hub/open got the layer downloaded for hub/secret: %d %.200s", a.status, a.body)
			}
		})
	}
}
