package mirror_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// accountDecider allows pulls to the accounts named, recording every
// identity it was asked for.
type accountDecider struct {
	mu      sync.Mutex
	allowed []string
	asked   []auth.Identity
}

func (d *accountDecider) Decide(_ context.Context, id auth.Identity, _, _ string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.asked = append(d.asked, id)
	return slices.Contains(d.allowed, id.Name), nil
}

// TestMirrorSyncLinksAsRobotAndConfigurer: a sync links a blob from
// another repository of the namespace only when both its robot and the
// account that last configured the mirror may pull from there. The robot
// may read acme/app, which holds every blob; a mirror configured by
// acme's owner links them all, one configured by bob (who may not read
// acme/app), one whose configurer was deleted since, and one configured
// before Berth recorded who (no account; decided then as the anonymous
// caller, who may not read acme/app either) download them all.
func TestMirrorSyncLinksAsRobotAndConfigurer(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	copier := mirror.NewCopier(wire.CopierStores(f.db), driver, oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}, 0, log)
	dec := &accountDecider{allowed: []string{"acme+mirror", "acme"}}
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
	bob, err := f.db.Users().CreateUser(ctx, meta.User{Username: "bob"})
	if err != nil {
		t.Fatal(err)
	}
	carol, err := f.db.Users().CreateUser(ctx, meta.User{Username: "carol"})
	if err != nil {
		t.Fatal(err)
	}
	configured := func(repo string, by int64) {
		t.Helper()
		f.robotMirror(t, repo)
		m, err := f.db.Mirrors().GetMirror(ctx, repo)
		if err != nil {
			t.Fatal(err)
		}
		m.ConfiguredBy = by
		if err := f.db.Mirrors().UpdateMirror(ctx, m, false); err != nil {
			t.Fatal(err)
		}
	}
	downloads := func(repo, why string) {
		t.Helper()
		before := blobGets.Load()
		f.syncOK(t, svc, repo)
		if n := blobGets.Load() - before; n != 2 {
			t.Fatalf("the sync of a mirror %s fetched %d blobs, want both (none linked)", why, n)
		}
	}

	configured("acme/bob", bob.ID)
	downloads("acme/bob", "bob configured")
	if !slices.ContainsFunc(dec.asked, func(id auth.Identity) bool { return id.Kind == auth.KindUser && id.ID == bob.ID && id.Name == "bob" }) {
		t.Fatalf("Auth was asked for %+v, never for bob", dec.asked)
	}

	configured("acme/carol", carol.ID)
	if err := f.db.Users().DeleteUser(ctx, "carol"); err != nil {
		t.Fatal(err)
	}
	if m, err := f.db.Mirrors().GetMirror(ctx, "acme/carol"); err != nil || m.ConfiguredBy != 0 {
		t.Fatalf("the mirror carol configured, after her deletion: configured by %d (%v), want none", m.ConfiguredBy, err)
	}
	downloads("acme/carol", "whose configurer was deleted")

	configured("acme/legacy", 0)
	downloads("acme/legacy", "configured by no known account")

	// Configured by acme's owner, who may read acme/app: linked.
	before := blobGets.Load()
	f.robotMirror(t, "acme/owner")
	f.syncOK(t, svc, "acme/owner")
	if n := blobGets.Load() - before; n != 0 {
		t.Fatalf("the sync of the mirror acme's owner configured fetched %d blobs, want none (linked)", n)
	}
}

// TestMirrorSyncWithoutConfigurerLinksPublic: a mirror with a robot and
// no account recorded as its configurer (configured before Berth
// recorded it, or through an access token, or by auth mode "none"'s
// nameless caller) decides its links as its robot and the anonymous
// caller: a blob is linked from a public repository of the namespace,
// and downloaded where only the robot may read it. Decided by the
// registry's own authorizer; the robot may read private acme/priv.
func TestMirrorSyncWithoutConfigurerLinksPublic(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	key, err := auth.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens("berth", "berth", 5*time.Minute, []auth.SigningKey{key})
	if err != nil {
		t.Fatal(err)
	}
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	copier := mirror.NewCopier(wire.CopierStores(f.db), driver, oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}, 0, log)
	svc := mirror.NewMirrorService(wire.MirrorStores(f.db), copier, f.sealer, mirror.MirrorOptions{Transport: f.upTLS,
		RetryBase: time.Millisecond, Tries: 1, Logger: log, Auth: authz.New(wire.AuthzStores(f.db), tokens, authz.Options{Logger: log})})
	var blobGets atomic.Int64
	f.setHook(func(r *http.Request) int {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			blobGets.Add(1)
		}
		return 0
	})
	owner, err := f.db.Users().UserByName(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	robot, err := f.db.Users().UserByName(ctx, "acme+mirror")
	if err != nil {
		t.Fatal(err)
	}
	// mirrorOf makes repo a mirror of the upstream's tag as acme+mirror,
	// configured by the account by (0: none).
	mirrorOf := func(repo, visibility, tag string, by int64) {
		t.Helper()
		if err := f.db.Repositories().CreateRepository(ctx, repo, visibility, "", "acme", 0); err != nil {
			t.Fatal(err)
		}
		m := meta.Mirror{ConfiguredBy: by, Repository: repo, Enabled: true, ExternalReference: f.upstream + "/lib/app", Username: "up",
			PasswordSealed: f.sealer.Seal([]byte("secret")), VerifyTLS: true, SyncInterval: time.Hour,
			SyncStartDate: time.Now().Add(time.Hour), RootRule: meta.MirrorRule{Kind: "tag_glob_csv", Value: []string{tag}},
			RobotUsername: "acme+mirror"}
		if err := f.db.Mirrors().CreateMirror(ctx, m); err != nil {
			t.Fatal(err)
		}
	}
	fetched := func(repo string) int64 {
		t.Helper()
		before := blobGets.Load()
		f.syncOK(t, svc, repo)
		return blobGets.Load() - before
	}

	// acme/pub (public) holds image p, acme/priv (private, readable by
	// the robot) image s; each has its own config and layer.
	f.push(t, "p", randomImage(t))
	f.push(t, "s", randomImage(t))
	mirrorOf("acme/pub", "public", "p", owner.ID)
	mirrorOf("acme/priv", "private", "s", owner.ID)
	if n := fetched("acme/pub"); n != 2 {
		t.Fatalf("the sync of acme/pub fetched %d blobs, want 2", n)
	}
	if n := fetched("acme/priv"); n != 2 {
		t.Fatalf("the sync of acme/priv fetched %d blobs, want 2", n)
	}
	priv, err := f.db.Repositories().Repository(ctx, "acme/priv")
	if err != nil {
		t.Fatal(err)
	}
	if err := f.db.Access().SetPermission(ctx, priv.ID, robot.ID, 0, "read"); err != nil {
		t.Fatal(err)
	}

	mirrorOf("acme/legacy-pub", "private", "p", 0)
	if n := fetched("acme/legacy-pub"); n != 0 {
		t.Fatalf("the sync of a mirror with no configurer fetched %d blobs of public acme/pub's image, want none (linked)", n)
	}
	mirrorOf("acme/legacy-priv", "private", "s", 0)
	if n := fetched("acme/legacy-priv"); n != 2 {
		t.Fatalf("the sync of a mirror with no configurer fetched %d blobs of private acme/priv's image, want both (only the robot may read it)", n)
	}
	// The owner, who may read acme/priv, configured this one: linked.
	mirrorOf("acme/owned-priv", "private", "s", owner.ID)
	if n := fetched("acme/owned-priv"); n != 0 {
		t.Fatalf("the sync of the mirror acme's owner configured fetched %d blobs of acme/priv's image, want none (linked)", n)
	}
}
