package mirror_test

import (
	"context"
	"encoding/json"
	"github.com/berth-dev/berth/internal/wire"
	"io"
	stdlog "log"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	ggcrregistry "github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage/fs"
)

// mfix is a mirror test: an in-memory upstream behind Basic auth, over
// HTTPS, whose requests a test can fail, and a Berth store with a mirror
// service that trusts the upstream's certificate.
type mfix struct {
	db       *meta.DB
	svc      *mirror.MirrorService
	sealer   *auth.Sealer
	upstream string
	// upTLS is a transport that trusts the upstream's certificate.
	upTLS    http.RoundTripper
	mu       sync.Mutex
	hook     func(r *http.Request) int // non-zero: answer with this status
	requests atomic.Int64
	heads    atomic.Int64
}

const mrepo = "acme/app"

func newMirrorFixture(t *testing.T) *mfix {
	t.Helper()
	// PostgreSQL when BERTH_TEST_POSTGRES_DSN is set, else SQLite.
	dialects := metatest.Dialects()
	f := &mfix{db: metatest.Open(t, dialects[len(dialects)-1])}
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	copier := mirror.NewCopier(wire.CopierStores(f.db), driver, policy, 0, log)
	key := make([]byte, 32)
	if f.sealer, err = auth.NewSealer(key); err != nil {
		t.Fatal(err)
	}
	up := ggcrregistry.New(ggcrregistry.Logger(stdlog.New(io.Discard, "", 0)))
	u := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if user, pw, ok := r.BasicAuth(); !ok || user != "up" || pw != "secret" {
			w.Header().Set("WWW-Authenticate", `Basic realm="upstream"`)
			http.Error(w, "auth", http.StatusUnauthorized)
			return
		}
		f.requests.Add(1)
		if r.Method == http.MethodHead && strings.Contains(r.URL.Path, "/manifests/") {
			f.heads.Add(1)
		}
		f.mu.Lock()
		hook := f.hook
		f.mu.Unlock()
		if hook != nil {
			if code := hook(r); code != 0 {
				if code == http.StatusTooManyRequests {
					w.Header().Set("Retry-After", "0")
				}
				http.Error(w, "injected", code)
				return
			}
		}
		up.ServeHTTP(w, r)
	}))
	t.Cleanup(u.Close)
	f.upstream = strings.TrimPrefix(u.URL, "https://")
	f.upTLS = u.Client().Transport
	f.svc = mirror.NewMirrorService(wire.MirrorStores(f.db), copier, f.sealer, mirror.MirrorOptions{Transport: f.upTLS, RetryBase: time.Millisecond,
		MaxRetryDelay: 50 * time.Millisecond, Tick: 20 * time.Millisecond, CancelPoll: 10 * time.Millisecond, Logger: log})
	ctx := context.Background()
	owner, err := f.db.Users().CreateUser(ctx, meta.User{Username: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	_ = owner
	if _, err := f.db.Users().CreateRobot(ctx, "acme", "mirror", "x"); err != nil {
		t.Fatal(err)
	}
	if err := f.db.Repositories().CreateRepository(ctx, mrepo, "private", "", "acme", 0); err != nil {
		t.Fatal(err)
	}
	return f
}

func (f *mfix) setHook(h func(r *http.Request) int) {
	f.mu.Lock()
	f.hook = h
	f.mu.Unlock()
}

func (f *mfix) create(t *testing.T, globs []string, arch []string) {
	t.Helper()
	m := meta.Mirror{Repository: mrepo, Enabled: true, ExternalReference: f.upstream + "/lib/app", Username: "up",
		PasswordSealed: f.sealer.Seal([]byte("secret")), VerifyTLS: true, SyncInterval: time.Hour,
		SyncStartDate: time.Now().Add(time.Hour), RootRule: meta.MirrorRule{Kind: "tag_glob_csv", Value: globs},
		RobotUsername: "acme+mirror", ArchFilter: arch}
	if err := f.db.Mirrors().CreateMirror(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

// upOpts are the options that reach the upstream: its credentials and a
// transport that trusts its certificate.
func (f *mfix) upOpts() []remote.Option {
	return []remote.Option{upAuth, remote.WithTransport(f.upTLS)}
}

func (f *mfix) push(t *testing.T, tag string, img v1.Image) v1.Hash {
	t.Helper()
	r, _ := name.ParseReference(f.upstream + "/lib/app:" + tag)
	if err := remote.Write(r, img, f.upOpts()...); err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	return d
}

func (f *mfix) deleteUpstream(t *testing.T, tag string) {
	t.Helper()
	r, _ := name.ParseReference(f.upstream + "/lib/app:" + tag)
	if err := remote.Delete(r, f.upOpts()...); err != nil {
		t.Fatal(err)
	}
}

func (f *mfix) localTags(t *testing.T) map[string]string {
	t.Helper()
	ctx := context.Background()
	tags, err := f.db.Manifests().ListTags(ctx, mrepo, "", 1000)
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, tag := range tags {
		m, err := f.db.Manifests().GetManifest(ctx, mrepo, tag, "", false)
		if err != nil {
			t.Fatalf("tag %s points at missing content: %v", tag, err)
		}
		out[tag] = m.Digest.String()
	}
	return out
}

func (f *mfix) status(t *testing.T) meta.Mirror {
	t.Helper()
	m, err := f.db.Mirrors().GetMirror(context.Background(), mrepo)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func (f *mfix) events(t *testing.T, kind string) []meta.Event {
	t.Helper()
	all, err := f.db.Outbox().EventsAfter(context.Background(), 0, 10000)
	if err != nil {
		t.Fatal(err)
	}
	var out []meta.Event
	for _, e := range all {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

func randomImage(t *testing.T) v1.Image {
	t.Helper()
	img, err := random.Image(512, 1)
	if err != nil {
		t.Fatal(err)
	}
	return img
}

func keys(m map[string]string) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}

func TestMirrorGlobsRetagDelete(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	a, b := randomImage(t), randomImage(t)
	da := f.push(t, "latest", a)
	f.push(t, "1.0", a)
	f.push(t, "1.1", b)
	f.push(t, "2.0", b)
	f.push(t, "dev-1", b)
	f.create(t, []string{"latest", "1.*"}, nil)
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	got := f.localTags(t)
	if k := keys(got); !slices.Equal(k, []string{"1.0", "1.1", "latest"}) || got["latest"] != da.String() {
		t.Fatalf("tags after the first sync: %v", got)
	}
	st := f.status(t)
	if st.Status != meta.MirrorSuccess || st.RetriesRemaining != 3 || st.NextSyncAt.Before(time.Now().Add(50*time.Minute)) {
		t.Fatalf("status %+v", st)
	}
	started := f.events(t, meta.EventMirrorSyncStarted)
	var data map[string]string
	json.Unmarshal(started[0].Data, &data)
	if len(started) != 1 || data["message"] != "'"+f.upstream+"/lib/app' with tag pattern 'latest,1.*'" || started[0].Actor != "acme+mirror" {
		t.Fatalf("started events %+v %v", started, data)
	}
	if n := len(f.events(t, meta.EventMirrorSyncSuccess)); n != 1 {
		t.Fatalf("%d success events", n)
	}
	// Unchanged: one HEAD per tag, nothing else but the listing.
	f.heads.Store(0)
	f.requests.Store(0)
	pushes := len(f.events(t, meta.EventRepoPush))
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	if h, r := f.heads.Load(), f.requests.Load(); h != 3 || r > 5 {
		t.Fatalf("unchanged sync: %d HEADs, %d requests", h, r)
	}
	if n := len(f.events(t, meta.EventRepoPush)); n != pushes {
		t.Fatalf("unchanged sync pushed: %d -> %d", pushes, n)
	}
	// Retag upstream and delete a tag upstream.
	c := randomImage(t)
	dc := f.push(t, "latest", c)
	f.deleteUpstream(t, "1.0")
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	got = f.localTags(t)
	if k := keys(got); !slices.Equal(k, []string{"1.1", "latest"}) || got["latest"] != dc.String() {
		t.Fatalf("tags after retag and delete: %v", got)
	}
	ev := f.events(t, meta.EventRepoPush)
	if len(ev) != pushes+1 || ev[len(ev)-1].Actor != "acme+mirror" || !strings.Contains(string(ev[len(ev)-1].Data), `"latest"`) {
		t.Fatalf("repo_push events %d (want %d): %+v", len(ev), pushes+1, ev[len(ev)-1])
	}
	del := f.events(t, meta.EventTagDeleted)
	if len(del) != 1 || !strings.Contains(string(del[0].Data), `"1.0"`) {
		t.Fatalf("tag_deleted events %+v", del)
	}
	// A narrower rule deletes the tags it no longer selects.
	m := f.status(t)
	m.RootRule.Value = []string{"latest"}
	if err := f.db.Mirrors().UpdateMirror(ctx, m, false); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	if k := keys(f.localTags(t)); !slices.Equal(k, []string{"latest"}) {
		t.Fatalf("tags after narrowing the rule: %v", k)
	}
}

func TestMirrorFailedListingDeletesNothing(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	f.push(t, "1.0", randomImage(t))
	f.push(t, "1.1", randomImage(t))
	f.create(t, []string{"*"}, nil)
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	before := f.localTags(t)
	f.setHook(func(r *http.Request) int {
		if strings.HasSuffix(r.URL.Path, "/tags/list") {
			return http.StatusInternalServerError
		}
		return 0
	})
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	if after := f.localTags(t); len(after) != len(before) {
		t.Fatalf("a failed listing changed tags: %v -> %v", before, after)
	}
	st := f.status(t)
	if st.Status != meta.MirrorFail || st.RetriesRemaining != 2 || time.Until(st.NextSyncAt) > time.Second || !strings.Contains(st.LastError, "list") {
		t.Fatalf("status after a failed listing: %+v", st)
	}
	if ev := f.events(t, meta.EventMirrorSyncFailed); len(ev) != 1 {
		t.Fatalf("failed events: %d", len(ev))
	}
	// Retries: 2, 1, 0, then an interval's wait with 3 again.
	for _, want := range []int{1, 0, 3} {
		if err := f.svc.Sync(ctx, mrepo); err != nil {
			t.Fatal(err)
		}
		st = f.status(t)
		if st.RetriesRemaining != want {
			t.Fatalf("retries %d, want %d", st.RetriesRemaining, want)
		}
	}
	if time.Until(st.NextSyncAt) < 50*time.Minute {
		t.Fatalf("after the retries the next sync is %v away, want an interval", time.Until(st.NextSyncAt))
	}
	f.setHook(nil)
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	if st = f.status(t); st.Status != meta.MirrorSuccess || len(f.localTags(t)) != 2 {
		t.Fatalf("recovery: %+v", st)
	}
}

func TestMirrorRateLimitRecovers(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	for _, tag := range []string{"a", "b", "c"} {
		f.push(t, tag, randomImage(t))
	}
	f.create(t, []string{"*"}, nil)
	var n atomic.Int64
	f.setHook(func(r *http.Request) int {
		if n.Add(1)%3 != 0 { // two of every three requests are rate limited
			return http.StatusTooManyRequests
		}
		return 0
	})
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	if st := f.status(t); st.Status != meta.MirrorSuccess || len(f.localTags(t)) != 3 {
		t.Fatalf("after 429s: %+v, tags %v", st, f.localTags(t))
	}
}

func TestMirrorUpstreamGoneMidSync(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	f.push(t, "1.0", randomImage(t))
	f.create(t, []string{"*"}, nil)
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	old := f.localTags(t)
	f.push(t, "1.0", randomImage(t)) // moved
	f.push(t, "2.0", randomImage(t)) // new
	// The upstream goes away after the listing: every blob fetch fails.
	f.setHook(func(r *http.Request) int {
		if strings.Contains(r.URL.Path, "/blobs/") {
			return http.StatusNotFound
		}
		return 0
	})
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	got := f.localTags(t) // fails on a tag at missing content
	if len(got) != 1 || got["1.0"] != old["1.0"] {
		t.Fatalf("tags after a failed sync: %v, want %v", got, old)
	}
	if st := f.status(t); st.Status != meta.MirrorFail || st.RetriesRemaining != 2 {
		t.Fatalf("status %+v", st)
	}
	f.setHook(nil)
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	if got = f.localTags(t); len(got) != 2 || got["1.0"] == old["1.0"] {
		t.Fatalf("tags after recovery: %v", got)
	}
	if st := f.status(t); st.Status != meta.MirrorSuccess || st.RetriesRemaining != 3 {
		t.Fatalf("status %+v", st)
	}
}

func TestMirrorArchitectureFilterAndSignatures(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	var idx v1.ImageIndex = empty.Index
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	for _, arch := range []string{"amd64", "arm64", "s390x"} {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: randomImage(t),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	r, _ := name.ParseReference(f.upstream + "/lib/app:multi")
	if err := remote.WriteIndex(r, idx, f.upOpts()...); err != nil {
		t.Fatal(err)
	}
	upD, _ := idx.Digest()
	sig := f.push(t, "sha256-"+upD.Hex+".sig", randomImage(t))
	f.create(t, []string{"multi"}, []string{"arm64", "amd64"})
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	got := f.localTags(t)
	if got["sha256-"+upD.Hex+".sig"] != sig.String() {
		t.Fatalf("signature not mirrored: %v", got)
	}
	if got["multi"] == upD.String() || got["multi"] == "" {
		t.Fatalf("filtered index has the upstream digest: %v", got)
	}
	m, err := f.db.Manifests().GetManifest(ctx, mrepo, "multi", "", true)
	if err != nil {
		t.Fatal(err)
	}
	im, err := v1.ParseIndexManifest(strings.NewReader(string(m.Content)))
	if err != nil {
		t.Fatal(err)
	}
	var archs []string
	for _, c := range im.Manifests {
		archs = append(archs, c.Platform.Architecture)
		if _, err := f.db.Manifests().GetManifest(ctx, mrepo, "", digest.Digest(c.Digest.String()), false); err != nil {
			t.Fatalf("child %s missing: %v", c.Digest, err)
		}
	}
	if slices.Sort(archs); !slices.Equal(archs, []string{"amd64", "arm64"}) {
		t.Fatalf("platforms %v", archs)
	}
	// Unchanged: HEADs only, no new push.
	pushes := len(f.events(t, meta.EventRepoPush))
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	if n := len(f.events(t, meta.EventRepoPush)); n != pushes || f.status(t).Status != meta.MirrorSuccess {
		t.Fatalf("unchanged filtered sync pushed %d -> %d", pushes, n)
	}
}

func TestMirrorRobotMayPushUserMayNot(t *testing.T) {
	f := newMirrorFixture(t)
	f.create(t, []string{"*"}, nil)
	ri, err := f.db.Repositories().Repository(context.Background(), mrepo)
	if err != nil {
		t.Fatal(err)
	}
	repo := auth.Repo{Name: mrepo, Exists: true, State: ri.State, MirrorRobot: ri.MirrorRobot}
	if ri.State != auth.StateMirror || ri.MirrorRobot != "acme+mirror" {
		t.Fatalf("repository %+v", ri)
	}
	admin := auth.Standing{Role: auth.RoleAdmin, CanCreate: true}
	if !auth.Allowed(auth.Identity{Kind: auth.KindRobot, Name: "acme+mirror"}, repo, admin, auth.ActionPush) {
		t.Fatal("the mirror robot may not push")
	}
	if auth.Allowed(auth.Identity{Kind: auth.KindUser, Name: "acme"}, repo, admin, auth.ActionPush) {
		t.Fatal("the owner may push to a mirror")
	}
	if auth.Allowed(auth.Identity{Kind: auth.KindRobot, Name: "acme+other"}, repo, admin, auth.ActionPush) {
		t.Fatal("another robot may push to a mirror")
	}
}

// TestMirrorOnePushPerUpstreamChange: tags that move to one upstream
// digest in a sync (1.9 and 1.9-2 after a patch) are one repo_push
// listing them all, with where each tag was.
func TestMirrorOnePushPerUpstreamChange(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	old, patched := randomImage(t), randomImage(t)
	dold := f.push(t, "1.9", old)
	f.push(t, "1.9-1", old)
	f.create(t, []string{"1.9*"}, nil)
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	if n := len(f.events(t, meta.EventRepoPush)); n != 1 {
		t.Fatalf("first sync: %d repo_push events, want 1 for two tags of one digest", n)
	}
	dnew := f.push(t, "1.9", patched)
	f.push(t, "1.9-2", patched)
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	ev := f.events(t, meta.EventRepoPush)
	if len(ev) != 2 {
		t.Fatalf("%d repo_push events, want 2", len(ev))
	}
	var data struct {
		Digest      string            `json:"digest"`
		UpdatedTags []string          `json:"updated_tags"`
		Previous    map[string]string `json:"previous"`
	}
	if err := json.Unmarshal(ev[1].Data, &data); err != nil {
		t.Fatal(err)
	}
	slices.Sort(data.UpdatedTags)
	if data.Digest != dnew.String() || !slices.Equal(data.UpdatedTags, []string{"1.9", "1.9-2"}) || data.Previous["1.9"] != dold.String() {
		t.Fatalf("the patch's repo_push: %+v", data)
	}
}

// TestMirrorProxyTargetIsChecked: a mirror whose upstream goes through its
// proxy has the upstream's own address checked by the SSRF guard, not
// only the proxy's: a proxy the guard allows must not carry a sync to an
// internal address it refuses. The proxy is never asked.
func TestMirrorProxyTargetIsChecked(t *testing.T) {
	f := newMirrorFixture(t)
	var asked atomic.Int64
	proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		asked.Add(1)
		http.Error(w, "no", http.StatusBadGateway)
	}))
	defer proxy.Close()
	guard, err := events.NewGuard([]string{"127.0.0.1"}) // the proxy, not 10.0.0.0/8
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	policy := oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	driver, _ := fs.New(t.TempDir(), fs.Options{})
	svc := mirror.NewMirrorService(wire.MirrorStores(f.db), mirror.NewCopier(wire.CopierStores(f.db), driver, policy, 0, log), f.sealer,
		mirror.MirrorOptions{Dial: guard.DialContext, CheckTarget: guard.CheckURL, Tries: 1, RetryBase: time.Millisecond, Logger: log})
	m := meta.Mirror{Repository: mrepo, Enabled: true, ExternalReference: "10.11.12.13:5000/lib/app", VerifyTLS: false,
		SyncInterval: time.Hour, SyncStartDate: time.Now().Add(time.Hour), RootRule: meta.MirrorRule{Kind: "tag_glob_csv", Value: []string{"*"}},
		RobotUsername: "acme+mirror", Proxy: meta.MirrorProxy{HTTPProxy: proxy.URL, HTTPSProxy: proxy.URL}}
	if err := f.db.Mirrors().CreateMirror(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	if err := svc.Sync(context.Background(), mrepo); err != nil {
		t.Fatal(err)
	}
	got, err := f.db.Mirrors().GetMirror(context.Background(), mrepo)
	if err != nil || !strings.Contains(got.LastError, "10.11.12.13") || asked.Load() != 0 {
		t.Fatalf("sync through the proxy to a private address: last_error %q (%v); the proxy was asked %d times", got.LastError, err, asked.Load())
	}
}
