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
// before Berth recorded who (no account) download them all.
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
