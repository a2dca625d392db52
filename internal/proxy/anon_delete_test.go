package proxy_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/proxy"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/testenv"
)

// TestProxyAnonymousPullDoesNotRecreateDeletedRepository: an anonymous
// pull of a public cached repository whose tag is not cached yet fetches
// the tag upstream; a repository an administrator deletes during that
// fetch stays deleted, and the pull answers 404 MANIFEST_UNKNOWN. Before,
// the fetch created it again, private and with nobody's permission. So
// does an access token whose scopes do not reach the repository; a puller
// who may create it (the organization's owner, a token whose scopes let it
// pull there) still creates it again through the same race.
func TestProxyAnonymousPullDoesNotRecreateDeletedRepository(t *testing.T) {
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	first := imageManifest(cfg)
	second := imageManifest(cfg, []byte("the second tag's layer"))
	started := make(chan struct{}, 1)
	release := make(chan struct{})
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var m string
		switch {
		case r.URL.Path == "/v2/":
			return
		case strings.HasSuffix(r.URL.Path, "/manifests/first"):
			m = first
		case strings.HasSuffix(r.URL.Path, "/manifests/second"):
			started <- struct{}{}
			select {
			case <-release:
			case <-r.Context().Done():
				return
			}
			m = second
		default:
			w.WriteHeader(http.StatusNotFound)
			return
		}
		w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
		w.Header().Set("Docker-Content-Digest", digest.FromString(m).String())
		io.WriteString(w, m)
	}))
	defer up.Close()
	const repo = "hub/library/app"
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := testenv.New(t, testenv.Options{Dialect: dialect, Proxy: &proxy.Options{ManifestTimeout: 8 * time.Second}})
			e.User("owner", false)
			e.Org("hub", "owner")
			pc := meta.ProxyCache{Namespace: "hub", Upstream: strings.TrimPrefix(up.URL, "http://"), ExpirationS: 3600, Insecure: true}
			if err := e.DB.ProxyCaches().SetProxyCache(ctx, pc); err != nil {
				t.Fatal(err)
			}
			e.Proxy.Invalidate()

			// race pulls the uncached tag as user ("" for anonymous) of the
			// public cached repository (which the owner's pull of the first
			// tag creates, or creates again), deleting the repository while
			// the upstream fetch is under way.
			race := func(user string) (int, []byte) {
				t.Helper()
				if res, body := e.Do("owner", "GET", "/v2/"+repo+"/manifests/first", nil); res.StatusCode != http.StatusOK {
					t.Fatalf("the owner's pull of the first tag: %d %.200s", res.StatusCode, body)
				}
				public := "public"
				if err := e.DB.Repositories().UpdateRepository(ctx, repo, &public, nil, nil, nil); err != nil {
					t.Fatal(err)
				}
				type answer struct {
					status int
					body   []byte
				}
				done := make(chan answer, 1)
				go func() {
					req := e.Request(user, "GET", "/v2/"+repo+"/manifests/second", nil)
					res, err := http.DefaultClient.Do(req)
					if err != nil {
						done <- answer{status: -1, body: []byte(err.Error())}
						return
					}
					defer res.Body.Close()
					body, _ := io.ReadAll(res.Body)
					done <- answer{res.StatusCode, body}
				}()
				select {
				case <-started:
				case a := <-done:
					t.Fatalf("the pull of the second tag ended before the upstream was asked: %d %.200s", a.status, a.body)
				case <-time.After(10 * time.Second):
					t.Fatal("the upstream was not asked for the second tag")
				}
				if err := e.DB.Repositories().DeleteRepository(ctx, repo, "owner"); err != nil {
					t.Fatal(err)
				}
				release <- struct{}{}
				a := <-done
				return a.status, a.body
			}

			status, body := race("")
			var errs struct{ Errors []struct{ Code string } }
			if status != http.StatusNotFound || json.Unmarshal(body, &errs) != nil || len(errs.Errors) != 1 ||
				errs.Errors[0].Code != registry.CodeManifestUnknown {
				t.Errorf("anonymous pull of a repository deleted during the fetch: %d %.200s, want 404 MANIFEST_UNKNOWN", status, body)
			}
			if ri, err := e.DB.Repositories().Repository(ctx, repo); err != nil || ri.Exists {
				t.Errorf("the anonymous pull created the deleted repository again (%+v, %v)", ri, err)
			}

			// Nor does an access token whose scopes do not reach it (a
			// public repository let it in).
			e.AccessToken("ci+elsewhere", "owner", []auth.TokenScope{{Repository: "hub/elsewhere", Actions: []string{auth.TokenContentRead}}})
			if status, _ := race("ci+elsewhere"); status != http.StatusNotFound {
				t.Errorf("an access token's pull outside its scopes of a repository deleted during the fetch: %d, want 404", status)
			}
			if ri, err := e.DB.Repositories().Repository(ctx, repo); err != nil || ri.Exists {
				t.Errorf("an access token's pull outside its scopes created the deleted repository again (%+v, %v)", ri, err)
			}

			// Those who may create it create it again: the owner, and an
			// access token whose scopes let it pull there (as its first
			// pull would).
			e.AccessToken("ci+reader", "owner", []auth.TokenScope{{Repository: "hub/*", Actions: []string{auth.TokenContentRead}}})
			for _, user := range []string{"owner", "ci+reader"} {
				if status, body := race(user); status != http.StatusOK {
					t.Errorf("%s's pull of a repository deleted during the fetch: %d %.200s, want 200", user, status, body)
				}
				if ri, err := e.DB.Repositories().Repository(ctx, repo); err != nil || !ri.Exists {
					t.Errorf("%s's pull did not create the deleted repository again (%+v, %v)", user, ri, err)
				}
				if err := e.DB.Repositories().DeleteRepository(ctx, repo, "owner"); err != nil {
					t.Fatal(err)
				}
			}
		})
	}
}
