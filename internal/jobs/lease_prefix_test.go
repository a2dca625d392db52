package jobs_test

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestStoppingProcessLeavesOthersLeases: a process that stops with a
// handler still running ends the leases of its own workers only. Two
// containers with host networking share the hostname and each runs as
// PID 1; a hostname may be another's with "-1" after it (berth and
// berth-1). Under hostname-pid- alone, either stopping ended the other's
// leases, and a second worker took over jobs still running.
func TestStoppingProcessLeavesOthersLeases(t *testing.T) {
	forDialects(t, func(t *testing.T, d string) {
		ctx := context.Background()
		db := metatest.Open(t, d)
		for _, c := range []struct {
			name              string
			holder, stopping  string // the owner prefixes of the two processes
			holderHost, other string
		}{
			{"same host, both PID 1", jobs.OwnerPrefix("myhost", 1, jobs.NewProcessNonce()), jobs.OwnerPrefix("myhost", 1, jobs.NewProcessNonce()), "myhost", "myhost"},
			{"nested names", jobs.OwnerPrefix("berth-1", 7, jobs.NewProcessNonce()), jobs.OwnerPrefix("berth", 1, jobs.NewProcessNonce()), "berth-1", "berth"},
		} {
			t.Run(c.name, func(t *testing.T) {
				queue := "q-" + c.holderHost
				if _, err := db.Jobs().EnqueueJob(ctx, meta.Job{Queue: queue}); err != nil {
					t.Fatal(err)
				}
				owner := c.holder + "0badcafe/1" // as a worker of the holding process names a claim
				if _, ok, err := db.Jobs().ClaimJob(ctx, queue, owner, time.Hour); err != nil || !ok {
					t.Fatalf("claim: %v, %v", ok, err)
				}
				n, err := db.Jobs().ExpireLeasesOf(ctx, c.stopping)
				if err != nil {
					t.Fatal(err)
				}
				if n != 0 {
					t.Errorf("the process on %s stopping (prefix %q) ended %d lease(s) of the process on %s (owner %q)", c.other, c.stopping, n, c.holderHost, owner)
				}
				if _, ok, err := db.Jobs().ClaimJob(ctx, queue, "another-worker", time.Hour); err != nil || ok {
					t.Fatalf("a job still running under a live lease was claimed again: %v, %v", ok, err)
				}
				// The holder's own prefix still ends it (what the holder
				// does when it stops).
				if n, err := db.Jobs().ExpireLeasesOf(ctx, c.holder); err != nil || n != 1 {
					t.Fatalf("the holder's own prefix ended %d lease(s), %v; want 1", n, err)
				}
				if _, ok, err := db.Jobs().ClaimJob(ctx, queue, "another-worker", time.Hour); err != nil || !ok {
					t.Fatalf("after its lease ended the job was not taken over: %v, %v", ok, err)
				}
			})
		}
	})
}

// TestProcessOwnerPrefixes: two processes with the same hostname and PID
// have different prefixes, neither beginning the other; a worker's
// default owner begins with this process's prefix, so that stopping it
// hands its running jobs back.
func TestProcessOwnerPrefixes(t *testing.T) {
	a, b := jobs.OwnerPrefix("myhost", 1, jobs.NewProcessNonce()), jobs.OwnerPrefix("myhost", 1, jobs.NewProcessNonce())
	if a == b || strings.HasPrefix(a, b) || strings.HasPrefix(b, a) {
		t.Fatalf("two processes' prefixes %q and %q: one begins the other", a, b)
	}
	host, _ := os.Hostname()
	if p := jobs.ProcessOwnerPrefix(); p != jobs.ProcessOwnerPrefix() || !strings.HasPrefix(p, host+"-") {
		t.Fatalf("this process's prefix %q changes, or does not name the host %q", p, host)
	}

	db := metatest.Open(t, "sqlite")
	enqueue(t, db, meta.Job{})
	running := make(chan struct{})
	release := make(chan struct{})
	defer close(release)
	start(t, jobs.New(db.Jobs(), "q", func(ctx context.Context, _ meta.Job) error {
		close(running)
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil
	}, fast(jobs.Options{Lease: time.Hour})))
	select {
	case <-running:
	case <-time.After(wait):
		t.Fatal("the job did not run")
	}
	if n, err := db.Jobs().ExpireLeasesOf(context.Background(), jobs.OwnerPrefix(host, os.Getpid(), jobs.NewProcessNonce())); err != nil || n != 0 {
		t.Fatalf("another process with this host and PID ended %d lease(s) of this one, %v", n, err)
	}
	if n, err := db.Jobs().ExpireLeasesOf(context.Background(), jobs.ProcessOwnerPrefix()); err != nil || n != 1 {
		t.Fatalf("this process's prefix ended %d lease(s) of its running job, %v; want 1", n, err)
	}
}
