package api_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/testenv"
)

// urEnv is a real /api/v1 server over a real store and authorizer (the
// shared test environment), for the users and repositories tests. Every
// response and every log line is checked for the secrets it knows
// (passwords, their hashes, token secrets and hashes).
type urEnv struct {
	t   *testing.T
	env *testenv.Env
	db  *meta.DB
	url string
	log *testenv.LogBuffer

	mu      sync.Mutex
	secrets []string
}

// urDialects runs f against every dialect metatest offers.
func urDialects(t *testing.T, f func(t *testing.T, e *urEnv)) {
	t.Helper()
	for _, d := range testenv.Dialects() {
		t.Run(d, func(t *testing.T) { f(t, newUREnv(t, d, api.Options{})) })
	}
}

func newUREnv(t *testing.T, dialect string, opts api.Options) *urEnv {
	t.Helper()
	logs := &testenv.LogBuffer{}
	logger := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	env := testenv.New(t, testenv.Options{Dialect: dialect, API: opts, Logger: logger})
	e := &urEnv{t: t, env: env, db: env.DB, url: env.URL, log: logs}
	t.Cleanup(func() {
		out := logs.String()
		for _, s := range e.knownSecrets() {
			if strings.Contains(out, s) {
				t.Errorf("a secret appears in the server log: %q", s)
			}
		}
	})
	return e
}

func (e *urEnv) knownSecrets() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.secrets...)
}

// remember records a login secret (and, if given, its stored hash) that no
// later response may contain.
func (e *urEnv) remember(name, secret string, hashes ...string) {
	if name != "" {
		e.env.SetSecret(name, secret)
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.secrets = append(e.secrets, secret)
	e.secrets = append(e.secrets, hashes...)
}

// user creates a user with a random password.
func (e *urEnv) user(name string, superuser bool) meta.User {
	e.t.Helper()
	u := e.env.User(name, superuser)
	e.remember(name, e.env.Secret(name), u.SecretHash)
	return u
}

// robot creates robot ns+short.
func (e *urEnv) robot(ns, short string) meta.User {
	e.t.Helper()
	u := e.env.Robot(ns, short)
	secret := e.env.Secret(u.Username)
	e.remember(u.Username, secret, auth.HashSecret(secret))
	return u
}

func (e *urEnv) org(name string, owner meta.User) {
	e.t.Helper()
	e.env.Org(name, owner.Username)
}

func (e *urEnv) repo(name, visibility string) meta.RepoInfo {
	e.t.Helper()
	ctx := context.Background()
	if err := e.db.Repositories().CreateRepository(ctx, name, visibility, "about "+name, "test", 0); err != nil {
		e.t.Fatal(err)
	}
	ri, err := e.db.Repositories().Repository(ctx, name)
	if err != nil {
		e.t.Fatal(err)
	}
	return ri
}

// grant gives a user or robot a role on a repository.
func (e *urEnv) grant(repo, username, role string) {
	e.t.Helper()
	ctx := context.Background()
	u, err := e.db.Users().UserByName(ctx, username)
	if err != nil {
		e.t.Fatal(err)
	}
	ri, _ := e.db.Repositories().Repository(ctx, repo)
	if err := e.db.Access().SetPermission(ctx, ri.ID, u.ID, 0, role); err != nil {
		e.t.Fatal(err)
	}
}

func randomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// image stores a small image manifest (config and one layer of the given
// size) in the repository, tagged if tag is set, and returns its digest.
func (e *urEnv) image(repo, tag string, layerSize int64) digest.Digest {
	e.t.Helper()
	ctx := context.Background()
	config := digest.FromString("config " + randomHex(8))
	layer := digest.FromString("layer " + randomHex(8))
	for _, b := range []meta.Blob{{Digest: config, Size: 2}, {Digest: layer, Size: layerSize}} {
		if _, err := e.db.Blobs().StoreBlob(ctx, repo, b, meta.UploadClaim{}, meta.Writer{Actor: "test"}, metatest.NoBytes); err != nil {
			e.t.Fatal(err)
		}
	}
	content := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"config":{"mediaType":%q,"digest":%q,"size":2},"layers":[{"mediaType":%q,"digest":%q,"size":%d}]}`,
		oci.MediaTypeImageManifest, oci.MediaTypeImageConfig, config, oci.MediaTypeLayerGzip, layer, layerSize)
	d := digest.FromBytes(content)
	err := e.db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: repo, Tag: tag, Actor: "test",
		Manifest: meta.Manifest{Digest: d, MediaType: oci.MediaTypeImageManifest, Size: int64(len(content)), Content: content},
		Refs:     []meta.Ref{{Digest: config}, {Digest: layer}}})
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

// index stores an image index over the manifests, tagged.
func (e *urEnv) index(repo, tag string, children ...digest.Digest) digest.Digest {
	e.t.Helper()
	var descs []string
	var refs []meta.Ref
	for _, c := range children {
		descs = append(descs, fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":1}`, oci.MediaTypeImageManifest, c))
		refs = append(refs, meta.Ref{Digest: c, IsManifest: true})
	}
	content := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"manifests":[%s]}`, oci.MediaTypeImageIndex, strings.Join(descs, ","))
	d := digest.FromBytes(content)
	err := e.db.Manifests().PutManifest(context.Background(), meta.PutManifest{Repository: repo, Tag: tag, Actor: "test",
		Manifest: meta.Manifest{Digest: d, MediaType: oci.MediaTypeImageIndex, Size: int64(len(content)), Content: content}, Refs: refs})
	if err != nil {
		e.t.Fatal(err)
	}
	return d
}

type urResp struct {
	status int
	header http.Header
	body   []byte
}

// obj decodes a JSON object answer.
func (r urResp) obj(t *testing.T) map[string]any {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(r.body, &m); err != nil {
		t.Fatalf("answer is not a JSON object: %v: %s", err, r.body)
	}
	return m
}

// call sends a request as a user ("" anonymous; "bearer:SECRET" sends a
// bearer token; "basic:NAME:SECRET" explicit credentials). body is sent as
// is if it is a string, else JSON-encoded; nil sends none.
func (e *urEnv) call(as, method, path string, body any) urResp {
	e.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	default:
		j, err := json.Marshal(b)
		if err != nil {
			e.t.Fatal(err)
		}
		rd = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, e.url+path, rd)
	if err != nil {
		e.t.Fatal(err)
	}
	switch {
	case as == "":
	case strings.HasPrefix(as, "bearer:"):
		req.Header.Set("Authorization", "Bearer "+strings.TrimPrefix(as, "bearer:"))
	case strings.HasPrefix(as, "basic:"):
		name, secret, _ := strings.Cut(strings.TrimPrefix(as, "basic:"), ":")
		req.SetBasicAuth(name, secret)
	default:
		pw := e.env.Secret(as)
		if pw == "" {
			e.t.Fatalf("no secret known for %q", as)
		}
		req.SetBasicAuth(as, pw)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		e.t.Fatal(err)
	}
	defer res.Body.Close()
	b, _ := io.ReadAll(res.Body)
	for _, s := range e.knownSecrets() {
		if bytes.Contains(b, []byte(s)) {
			e.t.Fatalf("%s %s as %q: the answer contains a secret %q: %s", method, path, as, s, b)
		}
	}
	return urResp{status: res.StatusCode, header: res.Header, body: b}
}

// want sends a request and fails unless the status matches. Error answers
// must be JSON with a message.
func (e *urEnv) want(as, method, path string, body any, status int) urResp {
	e.t.Helper()
	r := e.call(as, method, path, body)
	if r.status != status {
		e.t.Fatalf("%s %s as %q: status %d, want %d: %s", method, path, as, r.status, status, r.body)
	}
	if status >= 400 {
		m := r.obj(e.t)
		if m["error_message"] == nil && m["message"] == nil {
			e.t.Fatalf("%s %s: error answer without a message: %s", method, path, r.body)
		}
	}
	return r
}

// events returns the outbox events of a kind for a repository.
func (e *urEnv) events(kind, repo string) []meta.Event {
	e.t.Helper()
	evs, err := e.db.Outbox().EventsAfter(context.Background(), 0, 10000)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []meta.Event
	for _, ev := range evs {
		if ev.Kind == kind && ev.Repository == repo {
			out = append(out, ev)
		}
	}
	return out
}

// audited reports whether the audit log has an entry of the kind.
func (e *urEnv) audited(kind string) bool {
	e.t.Helper()
	entries, err := e.db.Access().AuditLog(context.Background(), "", 0, 10000)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, a := range entries {
		if a.Kind == kind {
			return true
		}
	}
	return false
}

// bigBody is a JSON body over the API's 1 MiB cap.
func bigBody(field string) string {
	return `{"` + field + `":"` + strings.Repeat("a", 1<<20+10) + `"}`
}
