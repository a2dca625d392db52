package mirror_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// countingDecider answers Decide as allow says, counting the decisions
// per repository and recording the identities it was asked for.
type countingDecider struct {
	mu    sync.Mutex
	allow bool
	asked map[string]int
	ids   []auth.Identity
}

func (d *countingDecider) Decide(_ context.Context, id auth.Identity, repo, _ string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.asked == nil {
		d.asked = map[string]int{}
	}
	d.asked[repo]++
	d.ids = append(d.ids, id)
	return d.allow, nil
}

// reset forgets what was asked and answers allow from now on; it returns
// what was asked before.
func (d *countingDecider) reset(allow bool) (map[string]int, []auth.Identity) {
	d.mu.Lock()
	defer d.mu.Unlock()
	asked, ids := d.asked, d.ids
	d.asked, d.ids, d.allow = nil, nil, allow
	return asked, ids
}

// TestMirrorSyncDecidesOncePerSource: a sync asks whether its robot may
// pull from a repository of the namespace once, not once per blob that
// repository holds (two tags of five layers each, all in acme/app), and
// asks as the robot's account (its ID, not its name alone, which would
// make every decision look the robot up). Refused, every layer is
// downloaded; allowed, every one is linked on that one decision. A
// decision is not carried over from one sync to the next.
func TestMirrorSyncDecidesOncePerSource(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	driver, err := fs.New(t.TempDir(), fs.Options{})
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	copier := mirror.NewCopier(wire.CopierStores(f.db), driver, oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true}, 0, log)
	dec := &countingDecider{}
	svc := mirror.NewMirrorService(wire.MirrorStores(f.db), copier, f.sealer, mirror.MirrorOptions{Transport: f.upTLS, RetryBase: time.Millisecond,
		Tries: 1, Logger: log, Auth: dec})
	var blobGets atomic.Int64
	f.setHook(func(r *http.Request) int {
		if r.Method == http.MethodGet && strings.Contains(r.URL.Path, "/blobs/") {
			blobGets.Add(1)
		}
		return 0
	})
	const layers = 5
	for _, tag := range []string{"1", "2"} {
		img, err := random.Image(256, layers)
		if err != nil {
			t.Fatal(err)
		}
		f.push(t, tag, img)
	}
	const blobs = 2 * (layers + 1) // each image's layers and config
	robot, err := f.db.Users().UserByName(ctx, "acme+mirror")
	if err != nil {
		t.Fatal(err)
	}
	f.robotMirror(t, mrepo)
	f.syncOK(t, svc, mrepo) // acme/app now holds every blob
	if n := blobGets.Load(); n != blobs {
		t.Fatalf("the first sync fetched %d blobs, want %d", n, blobs)
	}
	dec.reset(false)

	// Refused: one decision about acme/app for the whole sync, and every
	// blob downloaded.
	f.robotMirror(t, "acme/app2")
	f.syncOK(t, svc, "acme/app2")
	if n := blobGets.Load() - blobs; n != blobs {
		t.Fatalf("a sync whose robot may not read acme/app fetched %d blobs, want %d", n, blobs)
	}
	asked, ids := dec.reset(true)
	if len(asked) != 1 || asked[mrepo] != 1 {
		t.Fatalf("a refused sync asked %v, want acme/app once", asked)
	}
	for _, id := range ids {
		if id.Kind != auth.KindRobot || id.Name != "acme+mirror" || id.ID != robot.ID {
			t.Fatalf("Auth was asked for %+v, want the robot acme+mirror with ID %d", id, robot.ID)
		}
	}

	// Allowed: every blob linked, on at most one decision per source
	// (acme/app and now acme/app2 hold them), asked anew in this sync:
	// once as the robot, once as the account that configured the mirror.
	f.robotMirror(t, "acme/app3")
	f.syncOK(t, svc, "acme/app3")
	if n := blobGets.Load() - 2*blobs; n != 0 {
		t.Fatalf("a sync whose robot may read acme/app fetched %d blobs, want none", n)
	}
	asked, _ = dec.reset(true)
	if len(asked) != 1 {
		t.Fatalf("an allowed sync asked %v, want one source once", asked)
	}
	for repo, n := range asked {
		if n != 2 || (repo != mrepo && repo != "acme/app2") {
			t.Fatalf("an allowed sync asked %v, want acme/app or acme/app2 once for each of its two accounts", asked)
		}
	}
}

// TestImportDecidesOncePerSource: an import asks MayLink once per source
// repository, not once per blob it holds; refused, every layer is
// downloaded, and allowed, every one is linked.
func TestImportDecidesOncePerSource(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	const layers = 6
	img, err := random.Image(256, layers)
	if err != nil {
		t.Fatal(err)
	}
	secret, _ := name.ParseReference(f.berth+"/victim/secret:1", name.Insecure)
	if err := remote.Write(secret, img); err != nil {
		t.Fatal(err)
	}
	f.pushUpstream(t, "library/img:1", nil, img)
	var mu sync.Mutex
	asked := map[string]int{}
	counting := func(allow bool) mirror.MayLink {
		return func(_ context.Context, repo string) bool {
			mu.Lock()
			defer mu.Unlock()
			asked[repo]++
			return allow
		}
	}
	req := mirror.ImportRequest{Source: f.upstream + "/library/img:1", Username: "up", Password: "secret", Insecure: true, Tags: []string{"1"}}

	req.Repo, req.MayLink = "victim/refused", counting(false)
	_, st, err := f.copier.Import(ctx, req)
	if err != nil {
		t.Fatal(err)
	}
	if st.BlobsLinked != 0 || st.BlobsFetched != layers+1 {
		t.Fatalf("refused import: %+v, want %d fetched and none linked", st, layers+1)
	}
	if len(asked) != 1 || asked["victim/secret"] != 1 {
		t.Fatalf("refused import asked %v, want victim/secret once", asked)
	}

	clear(asked)
	req.Repo, req.MayLink = "victim/allowed", counting(true)
	if _, st, err = f.copier.Import(ctx, req); err != nil || st.BlobsLinked != layers+1 || st.BlobsFetched != 0 {
		t.Fatalf("allowed import: %+v %v, want %d linked and none fetched", st, err, layers+1)
	}
	if len(asked) != 1 {
		t.Fatalf("allowed import asked %v, want one source once", asked)
	}
	for repo, n := range asked {
		if n != 1 || (repo != "victim/secret" && repo != "victim/refused") {
			t.Fatalf("allowed import asked %v, want victim/secret or victim/refused once", asked)
		}
	}
}
