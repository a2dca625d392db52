package mirror_test

import (
	"context"
	"errors"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
)

// cutShort runs a sync that shutdown (or a lost lease) cuts short while it
// waits on the upstream for tag 1.1: it returns the context's error, and
// the mirror stays SYNCING, its job to run again.
func (f *mfix) cutShort(t *testing.T) {
	t.Helper()
	waiting := make(chan struct{})
	var once sync.Once
	f.setHook(func(r *http.Request) int {
		if r.Method == http.MethodHead && strings.HasSuffix(r.URL.Path, "/manifests/1.1") {
			once.Do(func() { close(waiting) })
			<-r.Context().Done()
		}
		return 0
	})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.svc.Sync(ctx, mrepo) }()
	<-waiting
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("a sync cut short returned %v, want context.Canceled (its job runs again)", err)
	}
	f.setHook(nil)
	if st := f.status(t); st.Status != meta.MirrorSyncing {
		t.Fatalf("after a sync cut short: status %s, want SYNCING", st.Status)
	}
}

// counts are how many repo_mirror_sync_started, _success and _failed
// events there are.
func (f *mfix) syncEvents(t *testing.T) [3]int {
	t.Helper()
	return [3]int{len(f.events(t, meta.EventMirrorSyncStarted)), len(f.events(t, meta.EventMirrorSyncSuccess)),
		len(f.events(t, meta.EventMirrorSyncFailed))}
}

// TestMirrorSyncResumedAfterShutdown: a sync cut short by shutdown or a
// lost lease runs again as its job reruns: that is the same sync, whose
// repo_mirror_sync_started is not appended again, and which closes it
// with _success (or _failed) as any other. A rerun that does not sync (its
// repository left state MIRROR meanwhile, or the mirror was turned off)
// closes it with _failed.
func TestMirrorSyncResumedAfterShutdown(t *testing.T) {
	ctx := context.Background()
	t.Run("synced", func(t *testing.T) {
		f := newMirrorFixture(t)
		f.push(t, "1.0", randomImage(t))
		f.push(t, "1.1", randomImage(t))
		f.create(t, []string{"*"}, nil)
		f.cutShort(t)
		if err := f.svc.Sync(ctx, mrepo); err != nil {
			t.Fatal(err)
		}
		if st := f.status(t); st.Status != meta.MirrorSuccess || len(f.localTags(t)) != 2 {
			t.Fatalf("the resumed sync: %s %q, tags %v", st.Status, st.LastError, keys(f.localTags(t)))
		}
		if got := f.syncEvents(t); got != [3]int{1, 1, 0} {
			t.Fatalf("started, success, failed events: %v, want one sync started and closed with success", got)
		}
	})
	for _, c := range []struct {
		name, says string
		change     func(t *testing.T, f *mfix)
	}{
		{"state NORMAL", "not MIRROR", func(t *testing.T, f *mfix) { f.setState(t, "NORMAL") }},
		{"disabled", "disabled", func(t *testing.T, f *mfix) {
			m := f.status(t)
			m.Enabled = false
			if err := f.db.Mirrors().UpdateMirror(ctx, m, false); err != nil {
				t.Fatal(err)
			}
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			f := newMirrorFixture(t)
			f.push(t, "1.0", randomImage(t))
			f.push(t, "1.1", randomImage(t))
			f.create(t, []string{"*"}, nil)
			f.cutShort(t)
			c.change(t, f)
			if err := f.svc.Sync(ctx, mrepo); err != nil {
				t.Fatal(err)
			}
			if st := f.status(t); st.Status != meta.MirrorCancel {
				t.Fatalf("the rerun: %s %q, want CANCEL", st.Status, st.LastError)
			}
			failed := f.events(t, meta.EventMirrorSyncFailed)
			if got := f.syncEvents(t); got != [3]int{1, 0, 1} || !strings.Contains(string(failed[0].Data), c.says) {
				t.Fatalf("started, success, failed events: %v (failed: %v), want the started sync closed with failed saying %q", got, failed, c.says)
			}
			// Another sync that does not start emits nothing.
			if err := f.svc.Sync(ctx, mrepo); err != nil {
				t.Fatal(err)
			}
			if got := f.syncEvents(t); got != [3]int{1, 0, 1} {
				t.Fatalf("after another sync that did not start: %v events", got)
			}
		})
	}
}
