package proxy_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
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

// TestProxyUpstreamFailures: what the upstream answers reaches the
// client as the spec's error it acts on, never a 500: a refusal (Docker
// Hub answers 401 for a repository that does not exist) is unknown
// content, rate limiting is 429 with Retry-After, an upstream failing or
// out of reach or silent past the fetch's bound is 503 UNAVAILABLE with
// Retry-After, and content the
// allow-list refuses is MANIFEST_INVALID. Nothing is cached.
func TestProxyUpstreamFailures(t *testing.T) {
	schema1 := `{"schemaVersion":1,"name":"library/app","tag":"latest","architecture":"amd64","fsLayers":[],"history":[]}`
	// library/liar's manifest declares a 1 KiB layer whose blob is
	// streamed without end (no Content-Length).
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	endless := digest.FromString("the layer it claims")
	liar := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":1024}]}`,
		digest.FromBytes(cfg), len(cfg), endless)
	var streamed atomic.Int64
	// library/stall's layer sends 100 bytes of its 1 KiB, then nothing.
	stalled := digest.FromString("the layer that stops")
	stall := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":1024}]}`,
		digest.FromBytes(cfg), len(cfg), stalled)
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case r.URL.Path == "/v2/library/liar/manifests/latest":
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", digest.FromString(liar).String())
			io.WriteString(w, liar)
		case r.URL.Path == "/v2/library/liar/blobs/"+endless.String():
			chunk := make([]byte, 64<<10)
			for range 4096 { // 256 MiB, unless the reader stops
				n, err := w.Write(chunk)
				streamed.Add(int64(n))
				if err != nil {
					return
				}
				w.(http.Flusher).Flush()
			}
		case r.URL.Path == "/v2/":
			w.WriteHeader(http.StatusOK)
		case strings.HasPrefix(r.URL.Path, "/v2/library/denied/"):
			w.Header().Set("WWW-Authenticate", `Basic realm="upstream"`)
			w.WriteHeader(http.StatusUnauthorized)
			io.WriteString(w, `{"errors":[{"code":"UNAUTHORIZED","message":"authentication required"}]}`)
		case strings.HasPrefix(r.URL.Path, "/v2/library/limited/"):
			w.WriteHeader(http.StatusTooManyRequests)
			io.WriteString(w, `{"errors":[{"code":"TOOMANYREQUESTS","message":"You have reached your pull rate limit."}]}`)
		case r.URL.Path == "/v2/library/stall/manifests/latest":
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", digest.FromString(stall).String())
			io.WriteString(w, stall)
		case r.URL.Path == "/v2/library/stall/blobs/"+stalled.String():
			w.Write(make([]byte, 100)) // then nothing
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		case strings.HasPrefix(r.URL.Path, "/v2/library/hang/"):
			<-r.Context().Done() // accepts, never answers
		case strings.HasPrefix(r.URL.Path, "/v2/library/broken/"):
			w.WriteHeader(http.StatusInternalServerError)
		case strings.HasPrefix(r.URL.Path, "/v2/library/schema1/manifests/"):
			w.Header().Set("Content-Type", "application/vnd.docker.distribution.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", "sha256:"+strings.Repeat("0", 64))
			io.WriteString(w, schema1)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer up.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gone := ln.Addr().String()
	ln.Close() // nothing listens there

	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
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
			svc := proxy.New(wire.ProxyStores(db), driver, sealer, proxy.Options{Transport: &http.Transport{DialContext: guard.DialContext},
				Policy: policy, Logger: quiet, ManifestTimeout: 8 * time.Second, BlobStall: time.Second})
			srv := httptest.NewServer(registry.New(wire.RegistryStores(db), driver, registry.Options{Proxy: svc, Policy: policy, Logger: quiet}))
			t.Cleanup(srv.Close)
			owner, _ := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: "x"})
			for ns, host := range map[string]string{"hub": strings.TrimPrefix(up.URL, "http://"), "gone": gone} {
				if _, err := db.Organizations().CreateOrganization(ctx, ns, owner.ID); err != nil {
					t.Fatal(err)
				}
				if err := db.ProxyCaches().SetProxyCache(ctx, meta.ProxyCache{Namespace: ns, Upstream: host, ExpirationS: 3600, Insecure: true}); err != nil {
					t.Fatal(err)
				}
			}
			for _, c := range []struct {
				path, code string
				status     int
				retry      bool
			}{
				{"/v2/hub/library/denied/manifests/latest", registry.CodeManifestUnknown, 404, false},
				{"/v2/hub/library/missing/manifests/latest", registry.CodeManifestUnknown, 404, false},
				{"/v2/hub/library/limited/manifests/latest", registry.CodeTooManyRequests, 429, true},
				{"/v2/hub/library/broken/manifests/latest", registry.CodeUnavailable, 503, true},
				{"/v2/gone/library/app/manifests/latest", registry.CodeUnavailable, 503, true},
				{"/v2/hub/library/hang/manifests/latest", registry.CodeUnavailable, 503, true},
				{"/v2/hub/library/schema1/manifests/latest", registry.CodeManifestInvalid, 400, false},
			} {
				methods := []string{"GET", "HEAD"}
				if c.retry {
					methods = methods[:1] // the upstream client retries these for seconds: once is enough
				}
				for _, method := range methods {
					req, _ := http.NewRequest(method, srv.URL+c.path, nil)
					req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.v1+json")
					resp, err := http.DefaultClient.Do(req)
					if err != nil {
						t.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != c.status || c.retry != (resp.Header.Get("Retry-After") != "") {
						t.Errorf("%s %s: %d (Retry-After %q) %s, want %d", method, c.path, resp.StatusCode, resp.Header.Get("Retry-After"), body, c.status)
						continue
					}
					if method == "HEAD" {
						continue
					}
					var e struct {
						Errors []struct{ Code, Message string }
					}
					if json.Unmarshal(body, &e) != nil || len(e.Errors) != 1 || e.Errors[0].Code != c.code || e.Errors[0].Message == "" {
						t.Errorf("GET %s: %s, want one %s with a message", c.path, body, c.code)
					}
				}
			}
			// An upstream blob longer than its manifest declares: refused
			// after about what was declared, not read to its end.
			streamed.Store(0)
			if _, err := http.Get(srv.URL + "/v2/hub/library/liar/manifests/latest"); err != nil {
				t.Fatal(err)
			}
			resp, err := http.Get(srv.URL + "/v2/hub/library/liar/blobs/" + endless.String())
			if err != nil {
				t.Fatal(err)
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 503 || !strings.Contains(string(body), "do not match") || streamed.Load() > 32<<20 {
				t.Errorf("endless upstream blob: %d %s after %d bytes streamed, want 503 after about 1 KiB", resp.StatusCode, body, streamed.Load())
			}
			if _, err := db.Blobs().StoredBlob(ctx, endless); err == nil {
				t.Error("the endless blob was stored")
			}
			// An upstream blob that stops coming: cut after the stall bound.
			if _, err := http.Get(srv.URL + "/v2/hub/library/stall/manifests/latest"); err != nil {
				t.Fatal(err)
			}
			resp, err = http.Get(srv.URL + "/v2/hub/library/stall/blobs/" + stalled.String())
			if err != nil {
				t.Fatal(err)
			}
			body, _ = io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 503 || !strings.Contains(string(body), "stopped sending") {
				t.Errorf("stalled upstream blob: %d %s, want 503", resp.StatusCode, body)
			}
			for _, repo := range []string{"hub/library/denied", "hub/library/limited", "hub/library/broken", "hub/library/schema1", "gone/library/app"} {
				if tags, _ := db.Manifests().ListTags(ctx, repo, "", 10); len(tags) != 0 {
					t.Errorf("%s: a failed upstream left tags %v", repo, tags)
				}
			}
		})
	}
}

// TestProxyUpstreamCorruptContent: upstream bytes that do not match their
// digest are an upstream failure, 503 UNAVAILABLE with Retry-After, never
// a 500, and nothing is cached: a layer of the right size with other
// bytes, a layer whose body ends before its Content-Length, and a
// manifest pulled by digest that the upstream answers with another one.
// Once the upstream serves the right bytes, the same pulls are served.
// Before, go-containerregistry's own errors for these (its verifying
// reader's, an unexpected EOF, its digest check of a manifest) were
// answered 500 INTERNAL_ERROR.
func TestProxyUpstreamCorruptContent(t *testing.T) {
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	layer := []byte("the layer its digest names, as the manifest declares it")
	ld := digest.FromBytes(layer)
	m := imageManifest(cfg, layer)
	md := digest.FromString(m)
	other := imageManifest(cfg, []byte("another layer"))
	var broken atomic.Bool
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch p := r.URL.Path; {
		case p == "/v2/":
		case strings.HasSuffix(p, "/manifests/latest") || strings.HasSuffix(p, "/manifests/"+md.String()):
			body := m
			if broken.Load() && strings.HasPrefix(p, "/v2/library/other/") {
				body = other // for the digest of m
			}
			w.Header().Set("Content-Type", "application/vnd.oci.image.manifest.v1+json")
			w.Header().Set("Docker-Content-Digest", md.String())
			io.WriteString(w, body)
		case p == "/v2/library/wrong/blobs/"+ld.String() && broken.Load():
			w.Write([]byte(strings.Repeat("x", len(layer)))) // the right size, other bytes
		case p == "/v2/library/short/blobs/"+ld.String() && broken.Load():
			w.Header().Set("Content-Length", fmt.Sprint(len(layer)))
			w.Write(layer[:len(layer)/2]) // then the connection closes
		case strings.HasSuffix(p, "/blobs/"+ld.String()):
			w.Write(layer)
		default:
			w.WriteHeader(http.StatusNotFound)
		}
	}))
	defer up.Close()
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db, srv := hubCache(t, dialect, up.URL)
			broken.Store(true)
			unavailable := func(path string) {
				t.Helper()
				resp, err := http.Get(srv.URL + path)
				if err != nil {
					t.Fatal(err)
				}
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				var e struct {
					Errors []struct{ Code, Message string }
				}
				if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" ||
					json.Unmarshal(body, &e) != nil || len(e.Errors) != 1 || e.Errors[0].Code != registry.CodeUnavailable || e.Errors[0].Message == "" {
					t.Errorf("GET %s: %d (Retry-After %q) %.300s, want 503 UNAVAILABLE with Retry-After", path, resp.StatusCode, resp.Header.Get("Retry-After"), body)
				}
			}
			for _, repo := range []string{"wrong", "short"} {
				if st, body := httpGet(t, srv.URL+"/v2/hub/library/"+repo+"/manifests/latest"); st != http.StatusOK {
					t.Fatalf("the manifest of hub/library/%s: %d %.200s", repo, st, body)
				}
				unavailable("/v2/hub/library/" + repo + "/blobs/" + ld.String())
			}
			if _, err := db.Blobs().StoredBlob(ctx, ld); !errors.Is(err, meta.ErrBlobNotFound) {
				t.Errorf("a layer the upstream served broken was stored (%v)", err)
			}
			unavailable("/v2/hub/library/other/manifests/" + md.String())
			if _, err := db.Manifests().GetManifest(ctx, "hub/library/other", "", md, false); !errors.Is(err, meta.ErrManifestNotFound) {
				t.Errorf("a manifest the upstream answered with other bytes was cached (%v)", err)
			}

			broken.Store(false)
			for _, repo := range []string{"short", "wrong"} {
				if st, body := httpGet(t, srv.URL+"/v2/hub/library/"+repo+"/blobs/"+ld.String()); st != http.StatusOK || body != string(layer) {
					t.Errorf("the layer of hub/library/%s once the upstream serves it whole: %d %.200s", repo, st, body)
				}
			}
			if st, body := httpGet(t, srv.URL+"/v2/hub/library/other/manifests/"+md.String()); st != http.StatusOK || body != m {
				t.Errorf("the manifest by digest once the upstream serves it: %d %.200s", st, body)
			}
		})
	}
}
