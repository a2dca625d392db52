package mirror_test

import (
	"context"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/wire"
)

// setState changes the repository's state as PUT .../changestate does.
func (f *mfix) setState(t *testing.T, state string) {
	t.Helper()
	if err := f.db.Repositories().UpdateRepository(context.Background(), mrepo, nil, &state, nil, nil); err != nil {
		t.Fatal(err)
	}
}

// tagLocal points a tag at a manifest the repository stores, as a user of
// a repository taken over from its mirror would (a push or the tag API).
func (f *mfix) tagLocal(t *testing.T, tag, d string) {
	t.Helper()
	if err := f.db.Manifests().MoveTag(context.Background(), mrepo, tag, digest.Digest(d), "acme"); err != nil {
		t.Fatal(err)
	}
}

// TestMirrorSyncsOnlyStateMirror: an administrator takes a mirrored
// repository over by changing its state to NORMAL (or READ_ONLY), and its
// users push: the mirror no longer syncs it. A sync neither deletes the
// tag pushed there nor moves a tag back to upstream's image, nor copies
// anything; its status says why. Back in state MIRROR it syncs again.
func TestMirrorSyncsOnlyStateMirror(t *testing.T) {
	for _, state := range []string{"NORMAL", "READ_ONLY"} {
		t.Run(state, func(t *testing.T) {
			ctx := context.Background()
			f := newMirrorFixture(t)
			f.push(t, "latest", randomImage(t))
			f.create(t, []string{"*"}, nil)
			if err := f.svc.Sync(ctx, mrepo); err != nil {
				t.Fatal(err)
			}
			synced := f.localTags(t)
			f.setState(t, state)
			f.tagLocal(t, "local", synced["latest"])
			f.push(t, "latest", randomImage(t)) // moved upstream
			f.push(t, "2.0", randomImage(t))    // new upstream
			f.requests.Store(0)
			pushes := len(f.events(t, meta.EventRepoPush))
			if err := f.svc.Sync(ctx, mrepo); err != nil {
				t.Fatal(err)
			}
			got := f.localTags(t)
			if k := keys(got); !slices.Equal(k, []string{"latest", "local"}) || got["latest"] != synced["latest"] {
				t.Fatalf("tags after a sync of a repository in state %s: %v, want latest (unchanged at %s) and local", state, got, synced["latest"])
			}
			if n := len(f.events(t, meta.EventRepoPush)); n != pushes || f.requests.Load() != 0 {
				t.Fatalf("a sync of a repository in state %s copied: %d repo_push events (was %d), %d upstream requests", state, n, pushes, f.requests.Load())
			}
			st := f.status(t)
			if st.Status != meta.MirrorCancel || !strings.Contains(st.LastError, "state "+state+", not MIRROR") {
				t.Fatalf("status after a sync of a repository in state %s: %s %q", state, st.Status, st.LastError)
			}
			// It never started: no event opens or closes it.
			if ns, nf := len(f.events(t, meta.EventMirrorSyncStarted)), len(f.events(t, meta.EventMirrorSyncFailed)); ns != 1 || nf != 0 {
				t.Fatalf("after a sync refused in state %s: %d started events (want the first sync's only), %d failed", state, ns, nf)
			}
			// A sync-now says why it does nothing.
			srv := httptest.NewServer(api.New(wire.APIStores(f.db, 0), api.Open{}, api.Options{Mirrors: f.svc}))
			defer srv.Close()
			code, out := apiCall(t, srv, http.MethodPost, "/api/v1/repository/"+mrepo+"/mirror/sync-now", nil)
			if msg, _ := out["error_message"].(string); code != http.StatusBadRequest || !strings.Contains(msg, "not MIRROR") {
				t.Fatalf("sync-now in state %s: %d %v, want 400 saying the state is not MIRROR", state, code, out)
			}
			// Not enqueued either, however due.
			if n, err := f.db.Mirrors().EnqueueDueMirrors(ctx, time.Now().Add(1000*time.Hour)); err != nil || n != 0 {
				t.Fatalf("enqueued %d syncs of a repository in state %s (%v)", n, state, err)
			}
			// Back in state MIRROR, the mirror takes over again.
			f.setState(t, "MIRROR")
			if err := f.svc.Sync(ctx, mrepo); err != nil {
				t.Fatal(err)
			}
			if k := keys(f.localTags(t)); !slices.Equal(k, []string{"2.0", "latest"}) || f.status(t).Status != meta.MirrorSuccess {
				t.Fatalf("tags after state MIRROR again: %v (%s)", k, f.status(t).Status)
			}
		})
	}
}

// TestMirrorStateChangeDuringSync: the state changes while a sync runs
// (it waits on the upstream) and a user tags `hotfix`: the sync stops
// without deleting it.
func TestMirrorStateChangeDuringSync(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	f.push(t, "1.0", randomImage(t))
	f.create(t, []string{"*"}, nil)
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	synced := f.localTags(t)
	f.push(t, "1.1", randomImage(t))
	started, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	f.setHook(func(r *http.Request) int {
		if r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/manifests/1.1") {
			once.Do(func() { close(started) })
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		return 0
	})
	done := make(chan error, 1)
	go func() { done <- f.svc.Sync(ctx, mrepo) }()
	<-started
	f.setState(t, "NORMAL")
	f.tagLocal(t, "hotfix", synced["1.0"])
	time.Sleep(100 * time.Millisecond) // several cancel polls
	close(release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := f.localTags(t); got["hotfix"] == "" || got["1.1"] != "" {
		t.Fatalf("tags after the state changed during a sync: %v, want hotfix kept and 1.1 not copied", got)
	}
	if st := f.status(t); st.Status != meta.MirrorCancel || !strings.Contains(st.LastError, "not MIRROR") {
		t.Fatalf("status %s %q", st.Status, st.LastError)
	}
	// The stopped sync had started: it closes with repo_mirror_sync_failed.
	if failed := f.events(t, meta.EventMirrorSyncFailed); len(failed) != 1 || !strings.Contains(string(failed[0].Data), "not MIRROR") {
		t.Fatalf("after a sync stopped by a change of state, failed events %v, want one saying why", failed)
	}
}
