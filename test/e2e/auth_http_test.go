package e2e

import (
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

// Checks of the token-mode berth with net/http and a few clients: the
// challenges and error codes of /v2 and of the token endpoint, public
// repositories, revoked tokens and wrong passwords.

// TestAuthRegistryHTTP checks the answers of /v2 and of the token endpoint
// with net/http: challenges, error codes, and what tokens grant.
func TestAuthRegistryHTTP(t *testing.T) {
	begin(t)
	s := startAuthServer(t)
	manifestPath := "/v2/bob/private/manifests/v1"
	accept := map[string]string{"Accept": acceptAll}

	t.Run("anonymous-private-pull", func(t *testing.T) {
		r := s.do(t, nil, http.MethodGet, manifestPath, accept, nil)
		requireStatusCode(t, "anonymous GET "+manifestPath, r, http.StatusUnauthorized, "UNAUTHORIZED")
		h := r.Header.Get("WWW-Authenticate")
		ch := parseChallenge(h)
		if !strings.HasPrefix(h, "Bearer realm=") || ch["realm"] != s.realm || ch["service"] != s.service ||
			ch["scope"] != "repository:bob/private:pull" {
			t.Fatalf("anonymous GET %s: WWW-Authenticate %q; want Bearer realm=%q,service=%q,scope=\"repository:bob/private:pull\"",
				manifestPath, h, s.realm, s.service)
		}
		if strings.Contains(string(r.Body), s.bobDigest) {
			t.Fatalf("the 401 answer reveals the manifest digest: %s", r.Body)
		}
		// The token endpoint gives an anonymous caller a token that grants
		// nothing on the private repository, and /v2 refuses it.
		tok, access := s.registryToken(t, nil, "repository:bob/private:pull")
		if acts := granted(access, "bob/private"); len(acts) != 0 {
			t.Fatalf("anonymous token grants %v on bob/private", acts)
		}
		r = s.do(t, nil, http.MethodGet, manifestPath, bearer(tok), nil)
		requireStatusCode(t, "GET "+manifestPath+" with an anonymous token", r, http.StatusUnauthorized, "UNAUTHORIZED")
		if ch := parseChallenge(r.Header.Get("WWW-Authenticate")); ch["error"] != "insufficient_scope" {
			t.Fatalf("GET %s with an anonymous token: WWW-Authenticate %q, want error=\"insufficient_scope\"", manifestPath, r.Header.Get("WWW-Authenticate"))
		}
	})

	t.Run("owner-and-superuser-pull", func(t *testing.T) {
		for _, id := range []*authIdentity{&s.bob, &s.admin} {
			if r := s.do(t, id, http.MethodGet, manifestPath, accept, nil); r.Status != http.StatusOK || sha256Digest(r.Body) != s.bobDigest {
				t.Fatalf("GET %s with Basic %s: %s, want the manifest %s", manifestPath, id.user, r, s.bobDigest)
			}
			tok, access := s.registryToken(t, id, "repository:bob/private:pull,push")
			if acts := granted(access, "bob/private"); !slices.Equal(acts, []string{"pull", "push"}) {
				t.Fatalf("token of %s grants %v on bob/private, want [pull push]", id.user, acts)
			}
			if r := s.do(t, nil, http.MethodGet, manifestPath, bearer(tok), nil); r.Status != http.StatusOK || sha256Digest(r.Body) != s.bobDigest {
				t.Fatalf("GET %s with the token of %s: %s", manifestPath, id.user, r)
			}
		}
	})

	t.Run("user-foreign-repository", func(t *testing.T) {
		// Basic credentials of a known identity without the right: 403 DENIED.
		r := s.do(t, &s.alice, http.MethodGet, manifestPath, accept, nil)
		requireStatusCode(t, "GET "+manifestPath+" with Basic alice", r, http.StatusForbidden, "DENIED")
		upload := "/v2/bob/private/blobs/uploads/"
		r = s.do(t, &s.alice, http.MethodPost, upload, nil, nil)
		requireStatusCode(t, "POST "+upload+" with Basic alice", r, http.StatusForbidden, "DENIED")
		// A token: granted nothing, and refused like Basic credentials (403
		// DENIED with the reason): a new token could not grant more, so a
		// challenge would only loop.
		tok, access := s.registryToken(t, &s.alice, "repository:bob/private:pull,push")
		if acts := granted(access, "bob/private"); len(acts) != 0 {
			t.Fatalf("alice's token grants %v on bob/private", acts)
		}
		r = s.do(t, nil, http.MethodPost, upload, bearer(tok), nil)
		requireStatusCode(t, "POST "+upload+" with alice's token", r, http.StatusForbidden, "DENIED")
		if tags := s.tags(t, "bob/private"); !slices.Equal(tags, []string{"v1"}) {
			t.Fatalf("bob/private tags %v after refused pushes, want [v1]", tags)
		}
	})

	t.Run("access-token-scope", func(t *testing.T) {
		tok, access := s.registryToken(t, &s.token, "repository:alice/ci/raw:pull,push", "repository:alice/other:pull,push")
		if acts := granted(access, "alice/ci/raw"); !slices.Equal(acts, []string{"pull", "push"}) {
			t.Fatalf("ci-token's registry token grants %v on alice/ci/raw, want [pull push]", acts)
		}
		if acts := granted(access, "alice/other"); len(acts) != 0 {
			t.Fatalf("ci-token's registry token grants %v on alice/other, outside its scope alice/ci/*", acts)
		}
		if r := s.do(t, nil, http.MethodPost, "/v2/alice/ci/raw/blobs/uploads/", bearer(tok), nil); r.Status != http.StatusAccepted {
			t.Fatalf("POST /v2/alice/ci/raw/blobs/uploads/ with ci-token's token: %s, want 202", r)
		}
		r := s.do(t, nil, http.MethodPost, "/v2/alice/other/blobs/uploads/", bearer(tok), nil)
		requireStatusCode(t, "POST /v2/alice/other/blobs/uploads/ with ci-token's token", r, http.StatusForbidden, "DENIED")
		r = s.do(t, &s.token, http.MethodPost, "/v2/alice/other/blobs/uploads/", nil, nil)
		requireStatusCode(t, "POST /v2/alice/other/blobs/uploads/ with Basic ci-token", r, http.StatusForbidden, "DENIED")
		if tags := s.tags(t, "alice/other"); tags != nil {
			t.Fatalf("alice/other has tags %v after refused pushes", tags)
		}
	})

	t.Run("wrong-password", func(t *testing.T) {
		for _, id := range []authIdentity{
			{"user", "alice", s.newSecret(t, "a wrong password of alice", "wrong-pw-")},
			{"robot", "alice+ci", s.newSecret(t, "a wrong robot token", "berth_wrong")},
			{"token", "ci-token", s.newSecret(t, "a wrong access-token secret", "berth_wrong")},
			{"user", "nosuchuser", s.newSecret(t, "the password of an unknown user", "wrong-pw-")},
		} {
			r := s.do(t, &id, http.MethodGet, "/v2/auth?service="+s.service+"&scope=repository:alice/ci/raw:pull", nil, nil)
			requireStatusCode(t, "GET /v2/auth with a wrong secret for "+id.user, r, http.StatusUnauthorized, "UNAUTHORIZED")
			r = s.do(t, &id, http.MethodGet, "/v2/", nil, nil)
			requireStatusCode(t, "GET /v2/ with a wrong Basic secret for "+id.user, r, http.StatusUnauthorized, "UNAUTHORIZED")
			if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer realm=") {
				t.Fatalf("GET /v2/ with a wrong secret for %s: WWW-Authenticate %q, want a Bearer challenge", id.user, r.Header.Get("WWW-Authenticate"))
			}
		}
		// The right secrets still work (a few failures do not lock anyone out).
		for _, id := range []*authIdentity{&s.alice, &s.robot, &s.token} {
			if r := s.do(t, id, http.MethodGet, "/v2/", nil, nil); r.Status != http.StatusOK {
				t.Fatalf("GET /v2/ with the right Basic secret of %s: %s", id.user, r)
			}
		}
	})
}

// TestAuthPublicRepository: a private repository of alice is refused to
// anonymous clients until she makes it public with Quay's API; then
// anonymous pulls work and anonymous pushes are still refused.
func TestAuthPublicRepository(t *testing.T) {
	begin(t)
	s := startAuthServer(t)
	img := newImage(t, true, "linux/amd64")
	dig := digestOf(t, img)
	s.push(t, s.alice, "alice/pub:v1", img)
	path := "/v2/alice/pub/manifests/v1"
	accept := map[string]string{"Accept": acceptAll}

	r := s.do(t, nil, http.MethodGet, path, accept, nil)
	requireStatusCode(t, "anonymous GET "+path+" while private", r, http.StatusUnauthorized, "UNAUTHORIZED")
	if !strings.HasPrefix(r.Header.Get("WWW-Authenticate"), "Bearer realm=") {
		t.Fatalf("anonymous GET %s: WWW-Authenticate %q, want a Bearer challenge", path, r.Header.Get("WWW-Authenticate"))
	}
	anonPull := func(t *testing.T) cmdResult {
		env, _ := clientEnv(t)
		return tryRun(t, opts{Env: env}, "crane", "manifest", s.host+"/alice/pub:v1", "--insecure")
	}
	t.Run("crane-while-private", func(t *testing.T) {
		requireTool(t, "crane")
		requireRefused(t, "anonymous crane manifest of private alice/pub", anonPull(t))
	})

	s.makePublic(t, "alice/pub")

	// The Docker token flow, anonymously, as clients do it.
	tok, access := s.registryToken(t, nil, "repository:alice/pub:pull,push")
	if acts := granted(access, "alice/pub"); !slices.Equal(acts, []string{"pull"}) {
		t.Fatalf("anonymous token grants %v on public alice/pub, want [pull]", acts)
	}
	if r := s.do(t, nil, http.MethodGet, path, bearer(tok), nil); r.Status != http.StatusOK || sha256Digest(r.Body) != dig {
		t.Fatalf("anonymous GET %s with a token: %s, want the manifest %s", path, r, dig)
	}
	for _, l := range layerDigests(t, img) {
		if r := s.do(t, nil, http.MethodGet, "/v2/alice/pub/blobs/"+l, bearer(tok), nil); r.Status != http.StatusOK || sha256Digest(r.Body) != l {
			t.Fatalf("anonymous GET blob %s: HTTP %d, body digest %s", l, r.Status, sha256Digest(r.Body))
		}
	}
	r = s.do(t, nil, http.MethodPost, "/v2/alice/pub/blobs/uploads/", bearer(tok), nil)
	requireStatusCode(t, "anonymous POST /v2/alice/pub/blobs/uploads/", r, http.StatusUnauthorized, "UNAUTHORIZED")
	// Another user reads it too, and may not write.
	r = s.do(t, &s.bob, http.MethodPost, "/v2/alice/pub/blobs/uploads/", nil, nil)
	requireStatusCode(t, "POST /v2/alice/pub/blobs/uploads/ with Basic bob", r, http.StatusForbidden, "DENIED")
	if r := s.do(t, &s.bob, http.MethodGet, path, accept, nil); r.Status != http.StatusOK || sha256Digest(r.Body) != dig {
		t.Fatalf("GET %s with Basic bob: %s", path, r)
	}

	t.Run("crane", func(t *testing.T) {
		requireTool(t, "crane")
		r := anonPull(t)
		if r.Err != nil || sha256Digest([]byte(r.Stdout)) != dig {
			t.Fatalf("anonymous crane manifest of public alice/pub: %v, digest %s, want %s", r.Err, sha256Digest([]byte(r.Stdout)), dig)
		}
		env, _ := clientEnv(t)
		tarPath := filepath.Join(t.TempDir(), "img.tar")
		mustRun(t, opts{Env: env}, "crane", "pull", s.host+"/alice/pub:v1", tarPath, "--insecure")
		requireTarballLayers(t, tarPath, img)
		dir := filepath.Join(t.TempDir(), "layout")
		writeLayout(t, dir, map[string]v1.Image{"v2": newImage(t, true, "linux/amd64")})
		requireRefused(t, "anonymous crane push to public alice/pub",
			tryRun(t, opts{Env: env}, "crane", "push", dir, s.host+"/alice/pub:v2", "--insecure"))
		if tags := s.tags(t, "alice/pub"); !slices.Equal(tags, []string{"v1"}) {
			t.Fatalf("alice/pub tags %v after a refused anonymous push, want [v1]", tags)
		}
	})
	t.Run("skopeo", func(t *testing.T) {
		requireTool(t, "skopeo")
		env, _ := clientEnv(t)
		raw := mustRun(t, opts{Env: env}, "skopeo", "inspect", "--raw", "--tls-verify=false", "docker://"+s.host+"/alice/pub:v1")
		if sha256Digest([]byte(raw)) != dig {
			t.Fatalf("anonymous skopeo inspect --raw: digest %s, want %s", sha256Digest([]byte(raw)), dig)
		}
	})
}

// TestAuthRevokedToken revokes ci-token with `berth admin token revoke`
// while the server runs: the token stops working at the next login.
func TestAuthRevokedToken(t *testing.T) {
	begin(t)
	requireTool(t, "crane")
	s := startAuthServer(t)
	env, home := clientEnv(t)
	mustRun(t, opts{Env: env, Stdin: []byte(s.token.pass)}, "crane", "auth", "login", s.host, "-u", s.token.user, "--password-stdin")
	requireLoggedIn(t, filepath.Join(home, ".docker", "config.json"), s.host, s.token.user)
	img := newImage(t, true, "linux/amd64")
	dir := filepath.Join(t.TempDir(), "layout")
	writeLayout(t, dir, map[string]v1.Image{"v1": img})
	ref := s.host + "/alice/ci/revoked:v1"
	mustRun(t, opts{Env: env}, "crane", "push", dir, ref, "--insecure")
	s.manifest(t, "alice/ci/revoked", "v1", digestOf(t, img))

	out := s.runAdmin(t, "", "token", "revoke", "ci-token")
	if !strings.Contains(out, "revoked token ci-token") {
		t.Fatalf("berth admin token revoke ci-token printed %q", out)
	}

	// The next login with the token fails: crane gets a new registry token
	// for each command.
	requireRefused(t, "crane manifest with the revoked ci-token",
		tryRun(t, opts{Env: env}, "crane", "manifest", ref, "--insecure"))
	requireRefused(t, "crane push with the revoked ci-token",
		tryRun(t, opts{Env: env}, "crane", "push", dir, s.host+"/alice/ci/revoked:v2", "--insecure"))
	r := s.do(t, &s.token, http.MethodGet, "/v2/auth?service="+s.service+"&scope=repository:alice/ci/revoked:pull", nil, nil)
	requireStatusCode(t, "GET /v2/auth with the revoked ci-token", r, http.StatusUnauthorized, "UNAUTHORIZED")
	r = s.do(t, &s.token, http.MethodGet, "/v2/", nil, nil)
	requireStatusCode(t, "GET /v2/ with Basic revoked ci-token", r, http.StatusUnauthorized, "UNAUTHORIZED")
	if tags := s.tags(t, "alice/ci/revoked"); !slices.Equal(tags, []string{"v1"}) {
		t.Fatalf("alice/ci/revoked tags %v, want [v1]", tags)
	}
	t.Run("skopeo-login", func(t *testing.T) {
		requireTool(t, "skopeo")
		authfile := filepath.Join(t.TempDir(), "auth.json")
		requireLoginRefused(t, "skopeo login with the revoked ci-token", tryRun(t, opts{Stdin: []byte(s.token.pass)},
			"skopeo", "login", "--tls-verify=false", "--authfile", authfile, "-u", s.token.user, "--password-stdin", s.host))
	})
	// Others are not affected.
	if r := s.do(t, &s.alice, http.MethodGet, "/v2/", nil, nil); r.Status != http.StatusOK {
		t.Fatalf("GET /v2/ with Basic alice after revoking ci-token: %s", r)
	}
}

// TestAuthWrongPassword logs in with a wrong secret with each client: each
// fails with 401. Each client uses another identity, so that the failures
// stay under the throttling limit per account and address.
func TestAuthWrongPassword(t *testing.T) {
	begin(t)
	s := startAuthServer(t)
	for _, tc := range []struct {
		tool string
		id   authIdentity
	}{
		{"crane", s.alice},
		{"skopeo", s.bob},
		{"regctl", s.token},
		{"oras", s.robot},
		{"helm", s.admin},
		{"podman", s.alice},
	} {
		t.Run(tc.tool, func(t *testing.T) {
			requireTool(t, tc.tool)
			wrong := s.newSecret(t, "the wrong secret given to "+tc.tool, "wrong-"+tc.tool+"-")
			env, home := clientEnv(t)
			in := opts{Env: env, Stdin: []byte(wrong)}
			var r cmdResult
			switch tc.tool {
			case "crane": // crane auth login does not contact the registry
				mustRun(t, in, "crane", "auth", "login", s.host, "-u", tc.id.user, "--password-stdin")
				r = tryRun(t, opts{Env: env}, "crane", "manifest", s.host+"/bob/private:v1", "--insecure")
			case "skopeo":
				r = tryRun(t, in, "skopeo", "login", "--tls-verify=false", "--authfile", filepath.Join(home, "auth.json"), "-u", tc.id.user, "--password-stdin", s.host)
			case "regctl":
				mustRun(t, opts{Env: env}, "regctl", "registry", "set", s.host, "--tls", "disabled", "--skip-check")
				r = tryRun(t, in, "regctl", "registry", "login", s.host, "-u", tc.id.user, "--pass-stdin")
			case "oras":
				r = tryRun(t, in, "oras", "login", "--plain-http", "-u", tc.id.user, "--password-stdin", s.host)
			case "helm":
				r = tryRun(t, in, "helm", "registry", "login", s.host, "--plain-http", "-u", tc.id.user, "--password-stdin")
			case "podman":
				r = tryRun(t, in, "podman", "login", "--tls-verify=false", "-u", tc.id.user, "--password-stdin", s.host)
			}
			requireLoginRefused(t, tc.tool+" with a wrong secret for "+tc.id.user, r)
		})
	}
	for _, id := range []*authIdentity{&s.admin, &s.alice, &s.bob, &s.robot, &s.token} {
		if r := s.do(t, id, http.MethodGet, "/v2/", nil, nil); r.Status != http.StatusOK {
			t.Fatalf("GET /v2/ with the right Basic secret of %s after the failed logins: %s", id.user, r)
		}
	}
}
