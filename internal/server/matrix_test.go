package server_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/config"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/server"
)

// world is a registry in token mode with an organization, its teams,
// robots, tokens and repositories of every kind.
type world struct {
	t      *testing.T
	url    string
	db     *meta.DB
	creds  map[string][2]string // identity -> username, secret
	digest map[string]digest.Digest
	srv    *server.Server
}

const pw = "a-long-password"

func newWorld(t *testing.T) *world {
	t.Helper()
	ctx := context.Background()
	srv, hs, db := startServer(t, func(*config.Config) {})
	w := &world{t: t, url: hs.URL, db: db, creds: map[string][2]string{}, digest: map[string]digest.Digest{}, srv: srv}
	hash, _ := auth.HashPassword(pw)
	users := map[string]meta.User{}
	for _, name := range []string{"owner", "reader", "writer", "creator", "orgadmin", "stranger", "root"} {
		u, err := db.Users().CreateUser(ctx, meta.User{Username: name, SecretHash: hash, Superuser: name == "root"})
		if err != nil {
			t.Fatal(err)
		}
		users[name] = u
		w.creds[name] = [2]string{name, pw}
	}
	if _, err := db.Organizations().CreateOrganization(ctx, "acme", users["owner"].ID); err != nil {
		t.Fatal(err)
	}
	team := func(name, role string, members ...string) meta.Team {
		tm, err := db.Organizations().PutTeam(ctx, "acme", meta.Team{Name: name, Role: role})
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range members {
			db.Organizations().AddTeamMember(ctx, tm.ID, users[m].ID)
		}
		return tm
	}
	readers := team("readers", "member", "reader")
	writers := team("writers", "member", "writer")
	team("creators", "creator", "creator")
	team("admins", "admin", "orgadmin")
	for _, robot := range []string{"ci", "mirror"} {
		secret, _ := auth.NewSecret("berth_")
		u, err := db.Users().CreateRobot(ctx, "acme", robot, auth.HashSecret(secret))
		if err != nil {
			t.Fatal(err)
		}
		users["acme+"+robot] = u
		w.creds["robot"+map[string]string{"ci": "", "mirror": "-mirror"}[robot]] = [2]string{"acme+" + robot, secret}
	}
	for name, scope := range map[string]string{"token-in": "acme/*", "token-out": "other/*"} {
		secret, _ := auth.NewSecret("berth_")
		b, _ := json.Marshal([]auth.TokenScope{{Repository: scope, Actions: []string{auth.TokenContentRead, auth.TokenContentWrite, auth.TokenContentDelete}}})
		if _, err := db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: name, SecretHash: auth.HashSecret(secret), Scopes: b}); err != nil {
			t.Fatal(err)
		}
		w.creds[name] = [2]string{name, secret}
	}
	expired, _ := auth.NewSecret("berth_")
	db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: "token-expired", SecretHash: auth.HashSecret(expired),
		Scopes: json.RawMessage(`[{"repository":"*","actions":["content/read","content/write","content/delete"]}]`), ExpiresAt: time.Now().Add(-time.Minute)})
	w.creds["token-expired"] = [2]string{"token-expired", expired}

	// Repositories, each with an image pushed by root while NORMAL.
	for _, repo := range []string{"public", "private", "readonly", "mirror"} {
		name := "acme/" + repo
		w.digest[repo] = w.pushImage(name, "root", pw)
		ri, _ := db.Repositories().Repository(ctx, name)
		db.Access().SetPermission(ctx, ri.ID, 0, readers.ID, "read")
		db.Access().SetPermission(ctx, ri.ID, 0, writers.ID, "write")
		db.Access().SetPermission(ctx, ri.ID, users["acme+ci"].ID, 0, "write")
		db.Access().SetPermission(ctx, ri.ID, users["acme+mirror"].ID, 0, "write")
	}
	public, ro, mirror, robot := "public", auth.StateReadOnly, auth.StateMirror, "acme+mirror"
	db.Repositories().UpdateRepository(ctx, "acme/public", &public, nil, nil, nil)
	db.Repositories().UpdateRepository(ctx, "acme/readonly", nil, &ro, nil, nil)
	db.Repositories().UpdateRepository(ctx, "acme/mirror", nil, &mirror, &robot, nil)
	return w
}

func (w *world) do(method, path, user, secret string, body []byte, headers ...string) *http.Response {
	w.t.Helper()
	req, _ := http.NewRequest(method, w.url+path, bytes.NewReader(body))
	if user != "" {
		req.SetBasicAuth(user, secret)
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	return resp
}

// user creates a user with the common password.
func (w *world) user(name string) {
	hash, _ := auth.HashPassword(pw)
	if _, err := w.db.Users().CreateUser(context.Background(), meta.User{Username: name, SecretHash: hash}); err != nil {
		w.t.Fatal(err)
	}
}

// pushImage pushes a one-layer image with Basic auth and returns the
// manifest digest.
func (w *world) pushImage(repo, user, secret string) digest.Digest {
	w.t.Helper()
	layer := []byte("layer of " + repo)
	cfg := []byte(`{"architecture":"amd64","os":"linux"}`)
	for _, b := range [][]byte{layer, cfg} {
		if r := w.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(b).String(), user, secret, b); r.StatusCode != 201 {
			w.t.Fatalf("push blob to %s: %d", repo, r.StatusCode)
		}
	}
	m := w.manifest(cfg, layer)
	if r := w.do("PUT", "/v2/"+repo+"/manifests/v1", user, secret, m, "Content-Type", "application/vnd.oci.image.manifest.v1+json"); r.StatusCode != 201 {
		w.t.Fatalf("push manifest to %s: %d", repo, r.StatusCode)
	}
	return digest.FromBytes(m)
}

func (w *world) manifest(cfg, layer []byte) []byte {
	return []byte(fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"%s","size":%d}]}`,
		digest.FromBytes(cfg), len(cfg), digest.FromBytes(layer), len(layer)))
}

// TestPermissionMatrixV2 drives every /v2 endpoint as every kind of
// identity on public, private, read-only and mirror repositories, and on
// one that does not exist yet.
func TestPermissionMatrixV2(t *testing.T) {
	w := newWorld(t)
	identities := []string{"anonymous", "owner", "reader", "writer", "creator", "orgadmin", "stranger", "robot", "robot-mirror", "token-in", "token-out", "token-expired", "root"}
	// Expected per identity and repository: pull, push, delete (Y allowed).
	want := map[string]map[string]string{
		"anonymous":     {"public": "Y--", "private": "---", "readonly": "---", "mirror": "---", "new": "---"},
		"owner":         {"public": "YYY", "private": "YYY", "readonly": "Y--", "mirror": "Y--", "new": "YYY"},
		"reader":        {"public": "Y--", "private": "Y--", "readonly": "Y--", "mirror": "Y--", "new": "---"},
		"writer":        {"public": "YYY", "private": "YYY", "readonly": "Y--", "mirror": "Y--", "new": "---"},
		"creator":       {"public": "Y--", "private": "---", "readonly": "---", "mirror": "---", "new": "YYY"}, // it administers what it creates
		"orgadmin":      {"public": "YYY", "private": "YYY", "readonly": "Y--", "mirror": "Y--", "new": "YYY"},
		"stranger":      {"public": "Y--", "private": "---", "readonly": "---", "mirror": "---", "new": "---"},
		"robot":         {"public": "YYY", "private": "YYY", "readonly": "Y--", "mirror": "Y--", "new": "---"},
		"robot-mirror":  {"public": "YYY", "private": "YYY", "readonly": "Y--", "mirror": "YYY", "new": "---"},
		"token-in":      {"public": "YYY", "private": "YYY", "readonly": "Y--", "mirror": "Y--", "new": "YYY"},
		"token-out":     {"public": "Y--", "private": "---", "readonly": "---", "mirror": "---", "new": "---"},
		"token-expired": {"public": "---", "private": "---", "readonly": "---", "mirror": "---", "new": "---"},
		"root":          {"public": "YYY", "private": "YYY", "readonly": "Y--", "mirror": "Y--", "new": "YYY"},
	}
	type endpoint struct {
		action       int // 0 pull, 1 push, 2 delete
		method, path string
		body         func(repo string) []byte
		headers      []string
	}
	cfg := []byte(`{"architecture":"arm64","os":"linux"}`)
	layer := []byte("new layer")
	endpoints := []endpoint{
		{0, "GET", "/v2/%s/tags/list", nil, nil},
		{0, "GET", "/v2/%s/manifests/v1", nil, nil},
		{0, "HEAD", "/v2/%s/manifests/v1", nil, nil},
		{0, "GET", "/v2/%s/blobs/" + digest.FromString("layer of x").String(), nil, nil},
		{0, "GET", "/v2/%s/referrers/" + digest.FromString("x").String(), nil, nil},
		{1, "POST", "/v2/%s/blobs/uploads/", nil, nil},
		{1, "POST", "/v2/%s/blobs/uploads/?digest=" + digest.FromBytes(cfg).String(), func(string) []byte { return cfg }, nil},
		{1, "PUT", "/v2/%s/manifests/v2", func(string) []byte { return w.manifest(cfg, layer) }, []string{"Content-Type", "application/vnd.oci.image.manifest.v1+json"}},
		{2, "DELETE", "/v2/%s/manifests/v1", nil, nil},
		{2, "DELETE", "/v2/%s/blobs/" + digest.FromBytes(cfg).String(), nil, nil},
	}
	cells := 0
	for _, who := range identities {
		for _, repo := range []string{"public", "private", "readonly", "mirror", "new"} {
			for _, ep := range endpoints {
				name := "acme/" + repo
				if repo == "new" {
					name = "acme/new-" + strings.ReplaceAll(who, "-", "")
				}
				path := fmt.Sprintf(ep.path, name)
				var body []byte
				if ep.body != nil {
					body = ep.body(name)
				}
				c := w.creds[who]
				resp := w.do(ep.method, path, c[0], c[1], body, ep.headers...)
				allowed := want[who][repo][ep.action] == 'Y'
				// 429: a dead credential used again and again is throttled.
				denied := resp.StatusCode == 401 || resp.StatusCode == 403 || (who == "token-expired" && resp.StatusCode == 429)
				if allowed == denied {
					t.Errorf("%s %s as %s: status %d, want %s", ep.method, path, who, resp.StatusCode, map[bool]string{true: "allowed", false: "refused"}[allowed])
				}
				if denied && who == "anonymous" && resp.StatusCode != 401 {
					t.Errorf("%s %s as anonymous: %d, want 401", ep.method, path, resp.StatusCode)
				}
				if denied && who != "anonymous" && who != "token-expired" && resp.StatusCode != 403 {
					t.Errorf("%s %s as %s: %d, want 403 DENIED for a known identity", ep.method, path, who, resp.StatusCode)
				}
				cells++
			}
		}
	}
	// The catalog: superusers only.
	for _, who := range identities {
		c := w.creds[who]
		resp := w.do("GET", "/v2/_catalog", c[0], c[1], nil)
		if (who == "root") != (resp.StatusCode == 200) {
			t.Errorf("catalog as %s: %d", who, resp.StatusCode)
		}
		cells++
	}
	t.Logf("%d cells", cells)
}
