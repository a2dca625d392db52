package proxy_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/proxy"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/testenv"
)

// countingAuthz is the token authorizer, counting the questions the
// registry asks of it: the blob requests it decides per repository, and
// the questions about a repository other than the request's (a link's
// source), by Decide or by Authorize.
type countingAuthz struct {
	a *authz.Authorizer

	mu           sync.Mutex
	blobRequests map[string]int // repository → blob requests decided
	sourceAsks   map[string]int // repository → questions as a link's source
}

func (c *countingAuthz) Authorize(r *http.Request, res registry.Resource) (authz.Decision, error) {
	c.mu.Lock()
	switch {
	case res.Type != "repository":
	case !strings.HasPrefix(r.URL.Path, "/v2/"+res.Name+"/"):
		c.sourceAsks[res.Name]++
	case strings.Contains(r.URL.Path, "/blobs/"):
		c.blobRequests[res.Name]++
	}
	c.mu.Unlock()
	return c.a.Authorize(r, res)
}

func (c *countingAuthz) Decide(ctx context.Context, id auth.Identity, repo, action string) (bool, error) {
	c.mu.Lock()
	c.sourceAsks[repo]++
	c.mu.Unlock()
	return c.a.Decide(ctx, id, repo, action)
}

func (c *countingAuthz) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.blobRequests, c.sourceAsks = map[string]int{}, map[string]int{}
}

// checkAsks fails the test when a source was asked about more than once
// per blob request of repo.
func (c *countingAuthz) checkAsks(t *testing.T, repo string) {
	t.Helper()
	c.mu.Lock()
	defer c.mu.Unlock()
	for src, n := range c.sourceAsks {
		if n > c.blobRequests[repo] {
			t.Errorf("the pull of %s asked about %s %d times in %d blob requests, want at most one a request", repo, src, n, c.blobRequests[repo])
		}
	}
}

// layerUpstream serves one image (a config and a layer) under every
// repository, and counts the layer's GETs.
type layerUpstream struct {
	srv      *httptest.Server
	layer    []byte
	layerGet atomic.Int64
}

func startLayerUpstream(t *testing.T) *layerUpstream {
	t.Helper()
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	u := &layerUpstream{layer: []byte("a layer every repository of the upstream has")}
	m := imageManifest(cfg, u.layer)
	u.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet && strings.HasSuffix(r.URL.Path, "/blobs/"+digest.FromBytes(u.layer).String()) {
			u.layerGet.Add(1)
		}
		if !serveImage(w, r, m, cfg, u.layer) {
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	t.Cleanup(u.srv.Close)
	return u
}

// tokenLinkHub is a Berth with token authentication (through a
// countingAuthz) whose organization hub, owned by "owner", caches up.
func tokenLinkHub(t *testing.T, dialect string, up *layerUpstream) (*testenv.Env, *countingAuthz) {
	t.Helper()
	c := &countingAuthz{}
	c.reset()
	e := testenv.New(t, testenv.Options{Dialect: dialect, Proxy: &proxy.Options{ManifestTimeout: 8 * time.Second},
		Registry: registry.Options{Auth: c}})
	c.a = e.Authz
	e.User("owner", false)
	e.Org("hub", "owner")
	pc := meta.ProxyCache{Upstream: strings.TrimPrefix(up.srv.URL, "http://"), Namespace: "hub", ExpirationS: 3600, Insecure: true}
	if err := e.DB.ProxyCaches().SetProxyCache(context.Background(), pc); err != nil {
		t.Fatal(err)
	}
	e.Proxy.Invalidate()
	return e, c
}

// tokenPull pulls repo:latest from e as user ("" for anonymous) through
// the token flow, as docker does: a registry token scoped to repo alone.
// It reads the config and the layer, and returns the layer.
func tokenPull(t *testing.T, e *testenv.Env, user, repo string) ([]byte, error) {
	t.Helper()
	ref, err := name.ParseReference(e.Host+"/"+repo+":latest", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	var who authn.Authenticator = authn.Anonymous
	if user != "" {
		who = &authn.Basic{Username: user, Password: e.Secret(user)}
	}
	img, err := remote.Image(ref, remote.WithAuth(who))
	if err != nil {
		return nil, err
	}
	if _, err := img.RawConfigFile(); err != nil {
		return nil, err
	}
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		return nil, err
	}
	rc, err := layers[0].Compressed()
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	return io.ReadAll(rc)
}

// cachedPublic makes repo a public repository of the cache (its manifest
// pulled by the owner).
func cachedPublic(t *testing.T, e *testenv.Env, repo string) {
	t.Helper()
	if res, body := e.Do("owner", "GET", "/v2/"+repo+"/manifests/latest", nil); res.StatusCode != http.StatusOK {
		t.Fatalf("the owner's manifest of %s: %d %.200s", repo, res.StatusCode, body)
	}
	public := "public"
	if err := e.DB.Repositories().UpdateRepository(context.Background(), repo, &public, nil, nil, nil); err != nil {
		t.Fatal(err)
	}
}

// TestProxyLinksForTokenPulls: a blob another repository of the cache
// organization has is linked without a download for a client that pulls
// with a registry token (docker, podman, containerd: a token scoped to the
// repository pulled alone) when its identity may pull that repository, and
// the source is asked about at most once a request. Before, the source was
// decided on the request's registry token, which never names it: every
// such pull downloaded the layer again, after a challenge per source. A
// puller who may not pull the source still downloads; so does an
// anonymous one, except from a public source.
func TestProxyLinksForTokenPulls(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			up := startLayerUpstream(t)
			e, c := tokenLinkHub(t, dialect, up)
			pull := func(user, repo string, wantGets int64, why string) {
				t.Helper()
				up.layerGet.Store(0)
				c.reset()
				got, err := tokenPull(t, e, user, repo)
				if err != nil || !bytes.Equal(got, up.layer) {
					t.Fatalf("%q's pull of %s: %v (layer %.100q)", user, repo, err, got)
				}
				if n := up.layerGet.Load(); n != wantGets {
					t.Errorf("%q's pull of %s: %d upstream layer downloads, want %d (%s)", user, repo, n, wantGets, why)
				}
				c.checkAsks(t, repo)
			}
			pull("owner", "hub/secret", 1, "nothing has the layer yet")
			pull("owner", "hub/mine", 0, "the owner may pull hub/secret, which has it")

			// mallory may pull hub/open (public), not hub/secret nor
			// hub/mine (private).
			e.User("mallory", false)
			cachedPublic(t, e, "hub/open")
			pull("mallory", "hub/open", 1, "mallory may pull no repository that has the layer")
			// Anonymous: hub/open is public now, and has the layer.
			cachedPublic(t, e, "hub/open2")
			pull("", "hub/open2", 0, "anyone may pull hub/open, which has it")
		})
	}
}

// TestProxyLinksForAccessTokens: an access token's pull links from the
// repositories its scopes let it pull as they are bounded now by its
// creator's rights, never from one its creator no longer may grant, with
// Basic credentials on every request as through a registry token.
func TestProxyLinksForAccessTokens(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			up := startLayerUpstream(t)
			e, c := tokenLinkHub(t, dialect, up)
			if _, err := tokenPull(t, e, "owner", "hub/secret"); err != nil {
				t.Fatal(err)
			}
			read := []auth.TokenScope{{Repository: "hub/*", Actions: []string{auth.TokenContentRead}}}
			e.AccessToken("ci+reader", "owner", read)
			// Made by mallory, who does not administer hub: its scope
			// grants nothing (a token made before mallory lost the role).
			e.User("mallory", false)
			e.AccessToken("ci+stale", "mallory", read)

			basic := func(user, repo string, wantGets int64, why string) {
				t.Helper()
				up.layerGet.Store(0)
				c.reset()
				if err := basicPull(t, e, user, repo, "latest"); err != nil {
					t.Fatalf("%s's pull of %s with Basic credentials: %v", user, repo, err)
				}
				if n := up.layerGet.Load(); n != wantGets {
					t.Errorf("%s's pull of %s with Basic credentials: %d upstream layer downloads, want %d (%s)", user, repo, n, wantGets, why)
				}
				c.checkAsks(t, repo)
			}
			basic("ci+reader", "hub/reader", 0, "its scope hub/* lets it pull hub/secret")
			cachedPublic(t, e, "hub/stale")
			basic("ci+stale", "hub/stale", 1, "its creator may not grant hub/*")
			private := "private"
			if err := e.DB.Repositories().UpdateRepository(context.Background(), "hub/stale", &private, nil, nil, nil); err != nil {
				t.Fatal(err)
			}

			// Through registry tokens: never from hub/secret for the
			// stale token (its registry token's scopes are not bounded
			// by its creator's rights yet).
			cachedPublic(t, e, "hub/stale2")
			up.layerGet.Store(0)
			c.reset()
			if got, err := tokenPull(t, e, "ci+stale", "hub/stale2"); err != nil || !bytes.Equal(got, up.layer) {
				t.Fatalf("ci+stale's pull of hub/stale2 through a registry token: %v", err)
			}
			if n := up.layerGet.Load(); n != 1 {
				t.Errorf("ci+stale's pull of hub/stale2 through a registry token: %d upstream layer downloads, want 1 (a link from a repository its creator may not grant)", n)
			}
			c.checkAsks(t, "hub/stale2")
		})
	}
}
