package mirror_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
)

// TestMirrorInProxyCacheOrgDoesNotSync: a mirror made before proxy cache
// organizations refused them (its organization became a proxy cache while
// it had the mirror) is due: its sync starts nothing and writes no tag
// (it would overwrite the cache's tags with another upstream's images),
// and its status says why. Before, it synced as any mirror. Once the
// organization is no longer a proxy cache, it syncs again.
func TestMirrorInProxyCacheOrgDoesNotSync(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	const repo = "hub/app"
	acme, err := f.db.Users().UserByName(ctx, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Organizations().CreateOrganization(ctx, "hub", acme.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := f.db.Users().CreateRobot(ctx, "hub", "mirror", "x"); err != nil {
		t.Fatal(err)
	}
	if err := f.db.Repositories().CreateRepository(ctx, repo, "private", "", "acme", 0); err != nil {
		t.Fatal(err)
	}
	m := meta.Mirror{Repository: repo, Enabled: true, ExternalReference: f.upstream + "/lib/app", Username: "up",
		PasswordSealed: f.sealer.Seal([]byte("secret")), VerifyTLS: true, SyncInterval: time.Hour,
		SyncStartDate: time.Now().Add(-time.Minute), RootRule: meta.MirrorRule{Kind: "tag_glob_csv", Value: []string{"*"}},
		RobotUsername: "hub+mirror"}
	if err := f.db.Mirrors().CreateMirror(ctx, m); err != nil {
		t.Fatal(err)
	}
	// The organization becomes a proxy cache as it could before the
	// refusal: the repository out of state MIRROR while the store checks.
	setState := func(state string) {
		t.Helper()
		if err := f.db.Repositories().UpdateRepository(ctx, repo, nil, &state, nil, nil); err != nil {
			t.Fatal(err)
		}
	}
	setState("NORMAL")
	if err := f.db.ProxyCaches().SetProxyCache(ctx, meta.ProxyCache{Namespace: "hub", Upstream: "docker.io", ExpirationS: 86400}); err != nil {
		t.Fatal(err)
	}
	setState("MIRROR")
	f.push(t, "latest", randomImage(t))
	f.requests.Store(0)

	if err := f.svc.Sync(ctx, repo); err != nil {
		t.Fatal(err)
	}
	tags := func() []string {
		t.Helper()
		tags, err := f.db.Manifests().ListTags(ctx, repo, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		return tags
	}
	if got := tags(); len(got) != 0 || f.requests.Load() != 0 {
		t.Fatalf("a sync in a proxy cache organization wrote tags %v after %d upstream requests, want none", got, f.requests.Load())
	}
	st, err := f.db.Mirrors().GetMirror(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	if st.Status != meta.MirrorCancel || !strings.Contains(st.LastError, "hub is a proxy cache organization") {
		t.Fatalf("status after a sync in a proxy cache organization: %s %q", st.Status, st.LastError)
	}
	if !st.NextSyncAt.After(time.Now().Add(50 * time.Minute)) {
		t.Fatalf("next sync at %s: a refused sync retries at once", st.NextSyncAt)
	}
	for _, e := range f.events(t, meta.EventMirrorSyncStarted) {
		if e.Repository == repo {
			t.Fatalf("a sync in a proxy cache organization announced its start: %+v", e)
		}
	}
	// No longer a proxy cache: the mirror syncs.
	if err := f.db.ProxyCaches().DeleteProxyCache(ctx, "hub"); err != nil {
		t.Fatal(err)
	}
	if err := f.svc.Sync(ctx, repo); err != nil {
		t.Fatal(err)
	}
	if got := tags(); len(got) != 1 || got[0] != "latest" {
		t.Fatalf("tags after the organization stopped being a proxy cache: %v, want latest", got)
	}
}
