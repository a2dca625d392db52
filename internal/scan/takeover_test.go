package scan_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/scan/index"
)

// errKilled stands for a process killed after its scan job's handler
// returned and before the job's completion committed.
var errKilled = errors.New("killed before the job's completion committed")

// killableJobs is the scan worker's store, whose next completion can be
// dropped (nothing of it commits) as if the process had been killed
// before it: the job keeps its lease, and is taken over once it expires.
type killableJobs struct {
	meta.Jobs
	kill      atomic.Bool
	completed chan struct{} // a completion committed
}

func (k *killableJobs) CompleteJob(ctx context.Context, id int64, owner string) error {
	if k.kill.CompareAndSwap(true, false) {
		return errKilled
	}
	err := k.Jobs.CompleteJob(ctx, id, owner)
	if err == nil {
		k.done()
	}
	return err
}

func (k *killableJobs) CompleteJobClaimNext(ctx context.Context, id int64, owner, nextOwner string, lease time.Duration,
	also ...func(context.Context, meta.Tx) error) (meta.Job, bool, error) {
	if k.kill.CompareAndSwap(true, false) {
		return meta.Job{}, false, errKilled
	}
	next, ok, err := k.Jobs.CompleteJobClaimNext(ctx, id, owner, nextOwner, lease, also...)
	if err == nil {
		k.done()
	}
	return next, ok, err
}

func (k *killableJobs) done() {
	select {
	case k.completed <- struct{}{}:
	default:
	}
}

// work runs the queued scan job under a job worker, as the server does,
// until its completion commits, and returns how many times its handler
// ran. With kill, the first completion is lost (the process killed after
// the scan was saved): the job is taken over once its lease expires.
func (e *env) work(kill bool) int {
	e.t.Helper()
	e.queueScans()
	store := &killableJobs{Jobs: e.db.Jobs(), completed: make(chan struct{}, 1)}
	store.kill.Store(kill)
	var runs atomic.Int32
	handler := func(ctx context.Context, j meta.Job) error {
		runs.Add(1)
		return e.svc.Handle(ctx, j)
	}
	stop := runWorker(store, handler, 600*time.Millisecond)
	select {
	case <-store.completed:
	case <-time.After(60 * time.Second):
		e.t.Error("the scan job never completed")
	}
	stop()
	return int(runs.Load())
}

// runWorker runs a scan job worker over store until the returned stop is
// called (stop waits for it to end).
func runWorker(store jobs.Store, handler jobs.Handler, lease time.Duration) (stop func()) {
	w := jobs.New(store, meta.ScanQueue, handler, jobs.Options{Lease: lease, PollInterval: 20 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	stopped := make(chan struct{})
	go func() {
		defer close(stopped)
		w.Run(ctx)
	}()
	return func() {
		cancel()
		<-stopped
	}
}

// TestTakenOverScanAnnouncesOnce: a scan job whose process is killed
// after its result is saved, before the job completes, is taken over;
// the run that takes it over finds the result saved, and the scan is
// announced once (manifest_scanned, vulnerability_found), not once per
// run. The same image pushed to another repository is still announced
// there, once, though its job is taken over too.
func TestTakenOverScanAnnouncesOnce(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, index.Limits{})
			e.importJSON(`{"id":"ALPINE-CVE-2026-1000","modified":"` + modifiedBase + `","summary":"openssl in alpine",
			  "affected":[{"package":{"ecosystem":"Alpine:v3.19","name":"openssl"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"3.1.4-r6"}]}]}]}`)
			e.drain() // the import's re-match
			img := alpineLayer(t)
			dgst, _ := e.push("acme/alp", "1", img)
			if runs := e.work(true); runs != 2 {
				t.Fatalf("the handler ran %d times, want 2 (the run killed, the takeover)", runs)
			}
			e.announced(dgst, "acme/alp", 1)
			if info := e.security("acme/alp", dgst); info.Status != meta.ScanScanned {
				t.Fatalf("status %q (%s)", info.Status, info.Reason)
			}

			// The same image in another repository: the result known,
			// announced there, once, though that job is taken over too.
			e.push("other/alp", "1", img)
			if runs := e.work(true); runs != 2 {
				t.Fatalf("the second repository's handler ran %d times, want 2", runs)
			}
			e.announced(dgst, "other/alp", 1)
			e.announced(dgst, "acme/alp", 1)

			// And without a kill: pushed to a third repository, announced
			// there once.
			e.push("third/alp", "1", img)
			if runs := e.work(false); runs != 1 {
				t.Fatalf("the third repository's handler ran %d times, want 1", runs)
			}
			e.announced(dgst, "third/alp", 1)
		})
	}
}

// announced checks that the scan of dgst was announced in repo n times:
// manifest_scanned and vulnerability_found each.
func (e *env) announced(dgst, repo string, n int) {
	e.t.Helper()
	for _, kind := range []string{meta.EventManifestScanned, meta.EventVulnerabilityFound} {
		evs, _ := e.events(0, kind)
		got := 0
		for _, ev := range evs {
			if ev["_repository"] == repo && ev["digest"] == dgst {
				got++
			}
		}
		if got != n {
			e.t.Errorf("%s in %s: %d events, want %d", kind, repo, got, n)
		}
	}
}

// TestLastAttemptAnnouncesWithItsResult: on its job's last attempt a scan
// is announced with its saved result, not with the job's completion: a
// last attempt whose completion is lost (the process killed, the lease
// lost) is dead-lettered, never run again, and would leave the result
// stored and never announced.
func TestLastAttemptAnnouncesWithItsResult(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, index.Limits{})
			e.importJSON(`{"id":"ALPINE-CVE-2026-1000","modified":"` + modifiedBase + `","summary":"openssl in alpine",
			  "affected":[{"package":{"ecosystem":"Alpine:v3.19","name":"openssl"},"ranges":[{"type":"ECOSYSTEM","events":[{"introduced":"0"},{"fixed":"3.1.4-r6"}]}]}]}`)
			e.drain()
			dgst, _ := e.push("acme/alp", "1", alpineLayer(t))
			e.queueScans()
			store := &killableJobs{Jobs: e.db.Jobs(), completed: make(chan struct{}, 1)}
			store.kill.Store(true)
			ran := make(chan struct{}, 1)
			handler := func(ctx context.Context, j meta.Job) error {
				j.MaxAttempts = j.Attempts // this run is the job's last
				err := e.svc.Handle(ctx, j)
				select {
				case ran <- struct{}{}:
				default:
				}
				return err
			}
			stop := runWorker(store, handler, time.Minute)
			select {
			case <-ran:
			case <-time.After(60 * time.Second):
				t.Error("the scan job never ran")
			}
			// The completion is dropped right after the handler returns.
			deadline := time.Now().Add(10 * time.Second)
			for store.kill.Load() && time.Now().Before(deadline) {
				time.Sleep(10 * time.Millisecond)
			}
			stop()
			if store.kill.Load() {
				t.Fatal("the completion was never attempted")
			}
			e.announced(dgst, "acme/alp", 1)
		})
	}
}
