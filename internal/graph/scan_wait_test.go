package graph_test

import (
	"compress/gzip"
	"context"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/graph"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// scanWaitEnv plays dispatcher and scanner for the graph's service, whose
// jobs a job worker runs in the background (a job that waits for a scan
// is deferred: the worker runs it again later).
type scanWaitEnv struct {
	*feed
	t *testing.T
}

func newScanWaitEnv(t *testing.T, dialect string, opts graph.Options) *scanWaitEnv {
	e := newEnv(t, dialect)
	f := &feed{e: e, svc: graph.New(e.x, e.db.Manifests(), e.db.Graph(), e.db.Scans(), e.db.Jobs(), opts)}
	t.Cleanup(runWorker(f.svc, e.db, 10*time.Millisecond))
	return &scanWaitEnv{feed: f, t: t}
}

// deliver hands the new events to the graph's service.
func (s *scanWaitEnv) deliver() {
	s.t.Helper()
	ctx := context.Background()
	evs, err := s.e.db.Outbox().EventsAfter(ctx, s.cursor, 1000)
	if err != nil {
		s.t.Fatal(err)
	}
	for _, ev := range evs {
		if err := s.svc.OnEvent(ctx, ev); err != nil {
			s.t.Fatal(err)
		}
		s.cursor = ev.ID
	}
}

// idle waits until the graph's jobs are done.
func (s *scanWaitEnv) idle() {
	s.t.Helper()
	graphIdle(s.t, s.e.db)
}

// scan records a scan's outcome, as the scanner does.
func (s *scanWaitEnv) scan(d digest.Digest, status string, vulns ...meta.ScanVuln) {
	s.t.Helper()
	if err := s.e.db.Scans().SaveScan(context.Background(), meta.ScanResult{Digest: d.String(), Status: status, Vulns: vulns}); err != nil {
		s.t.Fatal(err)
	}
}

// move pushes a new image of the base to mirror/b:1, its scan queued
// with the push (as the scanner's feed subscriber queues it, in the
// transaction that hands the push to the graph), or ended already as
// status says, and hands the push to the graph.
func (s *scanWaitEnv) move(content, status string) digest.Digest {
	s.t.Helper()
	d := s.e.push("mirror/b:1", image(s.t, nil, "linux/amd64", layer(s.t, content, gzip.BestSpeed)))
	if status == meta.ScanQueued {
		if err := s.e.db.Scans().EnqueueScan(context.Background(), "mirror/b", d.String()); err != nil {
			s.t.Fatal(err)
		}
	} else {
		s.scan(d, status)
	}
	s.deliver()
	return d
}

// firedWithin waits up to d for team/app's n-th base_image_updated.
func (s *scanWaitEnv) firedWithin(n int, d time.Duration) []map[string]any {
	s.t.Helper()
	deadline := time.Now().Add(d)
	for {
		got := firedFor(s.feed, "team/app")
		if len(got) >= n || time.Now().After(deadline) {
			return got
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// setUp stores base A (scanned: CVE-2026-0001) in mirror/b:1, public,
// and team/app built on it, indexed.
func (s *scanWaitEnv) setUp() digest.Digest {
	s.t.Helper()
	ctx := context.Background()
	a := image(s.t, nil, "linux/amd64", layer(s.t, "base A", gzip.BestSpeed))
	ad := s.e.push("mirror/b:1", a)
	public := "public"
	if err := s.e.db.Repositories().UpdateRepository(ctx, "mirror/b", &public, nil, nil, nil); err != nil {
		s.t.Fatal(err)
	}
	s.scan(ad, meta.ScanScanned, meta.ScanVuln{VulnID: "CVE-2026-0001", Package: "openssl@3.0.1", Severity: "High"})
	s.deliver()
	s.idle()
	s.e.push("team/app:1", image(s.t, a, "", layer(s.t, "app", gzip.BestSpeed)))
	s.deliver()
	s.idle()
	return ad
}

// TestBaseMoveWaitsForTheNewBaseScan: with scanning on and no debounce,
// a base tag moved to an image whose scan is queued fires once the scan
// is done, comparing the two (the CVE the move fixed is reported); one
// whose scan failed fires at once, not compared. Before, the trigger ran
// within milliseconds of the move, before any scan: never compared.
func TestBaseMoveWaitsForTheNewBaseScan(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			s := newScanWaitEnv(t, dialect, graph.Options{ScanWait: 30 * time.Second})
			ad := s.setUp()
			bd := s.move("base B", meta.ScanQueued)
			time.Sleep(500 * time.Millisecond)
			if got := firedFor(s.feed, "team/app"); len(got) != 0 {
				t.Fatalf("fired before the new base was scanned: %v", got)
			}
			s.scan(bd, meta.ScanScanned)
			got := s.firedWithin(1, 10*time.Second)
			if len(got) != 1 {
				t.Fatalf("%d base_image_updated for team/app within 10s of the new base's scan, want 1", len(got))
			}
			if base, _ := got[0]["base"].(map[string]any); base["old_digest"] != ad.String() || base["new_digest"] != bd.String() {
				t.Fatalf("the event's base: %v", got[0]["base"])
			}
			fixed, _ := got[0]["fixed_vulnerabilities"].([]any)
			if got[0]["vulnerabilities_compared"] != true || len(fixed) != 1 {
				t.Fatalf("vulnerabilities: compared %v, fixed %v; want CVE-2026-0001 fixed", got[0]["vulnerabilities_compared"], fixed)
			}
			if v, _ := fixed[0].(map[string]any); v["id"] != "CVE-2026-0001" {
				t.Fatalf("fixed: %v", fixed)
			}
			// A new base whose scan failed has nothing to wait for.
			start := time.Now()
			s.move("base C", meta.ScanFailed)
			got = s.firedWithin(2, 10*time.Second)
			if len(got) != 2 || got[1]["vulnerabilities_compared"] != false {
				t.Fatalf("after a move to a base whose scan failed: %v", got)
			}
			if took := time.Since(start); took > 5*time.Second {
				t.Errorf("a move to a base whose scan failed fired after %s, want at once", took)
			}
		})
	}
}

// TestBaseMoveScanWaitIsBounded: a new base whose scan never ends fires
// all the same once the wait's bound (from the move) has passed, not
// compared; and not before.
func TestBaseMoveScanWaitIsBounded(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			const bound = 1500 * time.Millisecond
			s := newScanWaitEnv(t, dialect, graph.Options{ScanWait: bound})
			s.setUp()
			start := time.Now()
			s.move("base B", meta.ScanQueued)
			time.Sleep(bound / 2)
			if got := firedFor(s.feed, "team/app"); len(got) != 0 {
				t.Fatalf("fired %s after the move, before the bound (%s): %v", time.Since(start), bound, got)
			}
			got := s.firedWithin(1, bound+10*time.Second)
			if len(got) != 1 || got[0]["vulnerabilities_compared"] != false {
				t.Fatalf("after the bound: %v; want one base_image_updated, not compared", got)
			}
			if took := time.Since(start); took < bound {
				t.Errorf("fired %s after the move, before the bound (%s)", took, bound)
			}
		})
	}
}
