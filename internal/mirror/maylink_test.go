package mirror_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// mayLinkOnly is a MayLink that allows the repositories named and records
// every repository it was asked about.
type mayLinkOnly struct {
	mu      sync.Mutex
	allowed []string
	asked   []string
}

func (m *mayLinkOnly) decide(_ context.Context, repo string) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.asked = append(m.asked, repo)
	return slices.Contains(m.allowed, repo)
}

// TestCopyLinksOnlyFromReadableRepositories: a blob another repository of
// the namespace links is linked without a download only when the copy's
// actor may read that repository (MayLink); a refused one is downloaded,
// so that an upstream merely naming a private layer gets nothing.
func TestCopyLinksOnlyFromReadableRepositories(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	img, err := random.Image(4096, 2)
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := name.ParseReference(f.berth+"/victim/secret:1", name.Insecure)
	if err := remote.Write(secret, img); err != nil {
		t.Fatal(err)
	}
	f.pushUpstream(t, "library/img:1", nil, img)
	req := mirror.ImportRequest{Source: f.upstream + "/library/img:1", Username: "up", Password: "secret", Insecure: true, Tags: []string{"1"}}

	refuse := &mayLinkOnly{}
	req.Repo, req.MayLink = "victim/refused", refuse.decide
	_, st, err := f.copier.Import(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if st.BlobsLinked != 0 || st.BlobsFetched != 3 {
		t.Fatalf("import whose actor may not read victim/secret: %+v, want 3 fetched and none linked", st)
	}
	if !slices.Contains(refuse.asked, "victim/secret") {
		t.Fatalf("MayLink was asked about %v, not victim/secret", refuse.asked)
	}

	// Nil MayLink links nothing either.
	req.Repo, req.MayLink = "victim/nil", nil
	if _, st, err = f.copier.Import(ctx, req); err != nil || st.BlobsLinked != 0 || st.BlobsFetched != 3 {
		t.Fatalf("import without MayLink: %+v %v, want 3 fetched and none linked", st, err)
	}

	// An actor that may read victim/secret links from there.
	allow := &mayLinkOnly{allowed: []string{"victim/secret"}}
	req.Repo, req.MayLink = "victim/allowed", allow.decide
	if _, st, err = f.copier.Import(ctx, req); err != nil || st.BlobsLinked != 3 || st.BlobsFetched != 0 {
		t.Fatalf("import whose actor may read victim/secret: %+v %v, want 3 linked and none fetched", st, err)
	}
}

// TestCopyDoesNotLinkHeldBlobs: a blob that a gate holds in the only
// repository of the namespace linking it is downloaded, not linked, even
// for an actor that may read that repository: a link would publish the
// gate's candidate in the target.
func TestCopyDoesNotLinkHeldBlobs(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	first, _ := random.Image(512, 1)
	r, _ := name.ParseReference(f.berth+"/victim/gated:0", name.Insecure)
	if err := remote.Write(r, first); err != nil {
		t.Fatal(err)
	}
	if err := f.db.Gates().PutGate(ctx, meta.Gate{Repository: "victim/gated", Tags: []string{"*"}, Config: json.RawMessage(`{"tags":["*"]}`)}); err != nil {
		t.Fatal(err)
	}
	img, _ := random.Image(4096, 2)
	d, _ := img.Digest()
	byDigest, _ := name.ParseReference(f.berth+"/victim/gated@"+d.String(), name.Insecure)
	if err := remote.Write(byDigest, img); err != nil {
		t.Fatal(err)
	}
	layers, _ := img.Layers()
	ld, _ := layers[0].Digest()
	if b, err := f.db.Blobs().RepositoryBlob(ctx, "victim/gated", digest.Digest(ld.String())); err != nil || !b.Held {
		t.Fatalf("the candidate's layer in victim/gated: %+v %v, want held", b, err)
	}
	f.pushUpstream(t, "library/img:1", nil, img)
	all := func(context.Context, string) bool { return true }
	_, st, err := f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/img:1", Username: "up", Password: "secret",
		Insecure: true, Repo: "victim/copy", Tags: []string{"1"}, MayLink: all})
	if err != nil {
		t.Fatal(err)
	}
	if st.BlobsLinked != 0 || st.BlobsFetched != 3 {
		t.Fatalf("import of a held image's content: %+v, want 3 fetched and none linked", st)
	}
}

// decider answers Decide as allow says, recording what it was asked.
type decider struct {
	mu    sync.Mutex
	allow bool
	asked []string
}

func (d *decider) Decide(_ context.Context, id auth.Identity, repo, action string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.asked = append(d.asked, string(id.Kind)+" "+id.Name+" "+repo+" "+action)
	return d.allow, nil
}

// TestMirrorSyncLinksAsItsRobot: a sync links a blob another repository
// of the namespace has only when the mirror's robot may pull from it (as
// Auth decides); refused, it downloads the blob from its upstream.
func TestMirrorSyncLinksAsItsRobot(t *testing.T) {
	f := newMirrorFixture(t)
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	copier := mirror.NewCopier(wire.CopierStores(f.db), driver, oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}, 0, log)
	dec := &decider{}
	svc := mirror.NewMirrorService(wire.MirrorStores(f.db), copier, f.sealer, mirror.MirrorOptions{Transport: f.upTLS, RetryBase: time.Millisecond,
		Tries: 1, Logger: log, Auth: dec})
	var blobGets atomic.Int64
	f.setHook(func(r *http.Request) int {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			blobGets.Add(1)
		}
		return 0
	})
	f.push(t, "1", randomImage(t)) // a config and a layer
	f.robotMirror(t, mrepo)
	f.syncOK(t, svc, mrepo)
	if n := blobGets.Load(); n != 2 {
		t.Fatalf("the first sync fetched %d blobs, want 2", n)
	}
	// Refused: acme/app2 downloads what acme/app has, having asked as
	// the robot.
	f.robotMirror(t, "acme/app2")
	f.syncOK(t, svc, "acme/app2")
	if n := blobGets.Load(); n != 4 {
		t.Fatalf("a sync whose robot may not read acme/app fetched %d blobs in all, want 4", n)
	}
	want := string(auth.KindRobot) + " acme+mirror " + mrepo + " " + auth.ActionPull
	if !slices.Contains(dec.asked, want) {
		t.Fatalf("Auth was asked %q, not %q", dec.asked, want)
	}
	// Allowed: acme/app3 links, downloading nothing.
	dec.mu.Lock()
	dec.allow = true
	dec.mu.Unlock()
	f.robotMirror(t, "acme/app3")
	f.syncOK(t, svc, "acme/app3")
	if n := blobGets.Load(); n != 4 {
		t.Fatalf("a sync whose robot may read acme/app fetched %d blobs more, want none", n-4)
	}
}

// robotMirror makes repo (unless it is the fixture's own) a mirror of the
// upstream's lib/app, every tag, synced as the robot acme+mirror and
// configured by the user acme.
func (f *mfix) robotMirror(t *testing.T, repo string) {
	t.Helper()
	ctx := context.Background()
	if repo != mrepo { // made by the fixture
		if err := f.db.Repositories().CreateRepository(ctx, repo, "private", "", "acme", 0); err != nil {
			t.Fatal(err)
		}
	}
	owner, err := f.db.Users().UserByName(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	m := meta.Mirror{ConfiguredBy: owner.ID, Repository: repo, Enabled: true, ExternalReference: f.upstream + "/lib/app", Username: "up",
		PasswordSealed: f.sealer.Seal([]byte("secret")), VerifyTLS: true, SyncInterval: time.Hour,
		SyncStartDate: time.Now().Add(time.Hour), RootRule: meta.MirrorRule{Kind: "tag_glob_csv", Value: []string{"*"}},
		RobotUsername: "acme+mirror"}
	if err := f.db.Mirrors().CreateMirror(ctx, m); err != nil {
		t.Fatal(err)
	}
}

// syncOK syncs repo's mirror with svc, failing t unless it succeeds.
func (f *mfix) syncOK(t *testing.T, svc *mirror.MirrorService, repo string) {
	t.Helper()
	ctx := context.Background()
	if err := svc.Sync(ctx, repo); err != nil {
		t.Fatal(err)
	}
	if m, err := f.db.Mirrors().GetMirror(ctx, repo); err != nil || m.Status != meta.MirrorSuccess {
		t.Fatalf("sync of %s: %+v %v", repo, m, err)
	}
}
