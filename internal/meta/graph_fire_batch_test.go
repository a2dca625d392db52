package meta_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// manyDependents stores n images in repositories apps/r-0 ... (20 of
// them), each tagged and recorded as built directly on base (tagged 1 in
// base/img), and returns the base repository's id.
func manyDependents(t *testing.T, db *meta.DB, base meta.Manifest, n int) int64 {
	t.Helper()
	ctx := context.Background()
	m, g := db.Manifests(), db.Graph()
	if err := m.PutManifest(ctx, meta.PutManifest{Repository: "base/img", Manifest: base, Tag: "1"}); err != nil {
		t.Fatal(err)
	}
	if err := g.RecordImage(ctx, meta.GraphImage{Repository: "base/img", Digest: base.Digest, Platform: "linux/amd64", Chain: chainOf("os")}); err != nil {
		t.Fatal(err)
	}
	found, err := g.ImagesWithChains(ctx, chainOf("os"), 1)
	if err != nil || len(found) != 1 {
		t.Fatalf("images with chains: %+v %v", found, err)
	}
	link := []meta.BaseLink{{RepositoryID: found[0].RepositoryID, Digest: base.Digest, Method: "layers", Level: 1, Layers: 1}}
	for i := range n {
		app, repo := manifestOf(fmt.Sprintf("app %d", i)), fmt.Sprintf("apps/r-%d", i%20)
		if err := m.PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: app, Tag: fmt.Sprintf("t%d", i)}); err != nil {
			t.Fatal(err)
		}
		if err := g.SetBases(ctx, repo, app.Digest, link); err != nil {
			t.Fatal(err)
		}
	}
	return found[0].RepositoryID
}

// firedPer counts the base_image_updated events per dependent image.
func firedPer(t *testing.T, db *meta.DB) map[string]int {
	t.Helper()
	out := map[string]int{}
	after := int64(0)
	for {
		evs, err := db.Outbox().EventsAfter(context.Background(), after, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if len(evs) == 0 {
			return out
		}
		for _, e := range evs {
			after = e.ID
			if e.Kind != meta.EventBaseImageUpdated {
				continue
			}
			var d struct {
				Digest string `json:"digest"`
			}
			if err := json.Unmarshal(e.Data, &d); err != nil {
				t.Fatal(err)
			}
			out[e.Repository+"@"+d.Digest]++
		}
	}
}

// TestFireBaseMovedInBatches: a move of a base with thousands of
// dependents fires in transactions of a bounded number of dependents
// each: the first batch's events are committed before the next batch
// starts, a push commits between two batches (on SQLite the one writer
// is not held for the whole move), and a move that fails after its first
// batch, run again, fires once for every dependent all the same. The
// audit entries leave out the vulnerability lists (the event keeps
// them). Before, the whole move was one transaction.
func TestFireBaseMovedInBatches(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			const n, batch = 2000, 150
			b1 := manifestOf("base 1")
			manyDependents(t, db, b1, n)
			public := "public"
			if err := db.Repositories().UpdateRepository(ctx, "base/img", &public, nil, nil, nil); err != nil {
				t.Fatal(err)
			}
			b2 := manifestOf("base 2")
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "base/img", Manifest: b2, Tag: "1"}); err != nil {
				t.Fatal(err)
			}
			cves := []any{map[string]any{"id": "CVE-2026-4242", "package": "openssl@3.0.1", "priority": "High"}}
			mv := meta.BaseMove{Repository: "base/img", Tag: "1", New: b2.Digest, Actor: "mirror", Batch: batch,
				Diffs: map[digest.Digest]map[string]any{b1.Digest: {"fixed_vulnerabilities": cves, "new_vulnerabilities": []any{}, "vulnerabilities_compared": true}}}
			injected := errors.New("injected failure after the first batch")
			batches := 0
			failing := meta.WithAfterBatch(mv, func(ctx context.Context, fired int) error {
				batches++
				// The first batch is committed: a reader sees its events.
				if got := len(firedPer(t, db)); got != batch || fired != batch {
					t.Errorf("after the first batch: %d events committed, %d reported; want %d", got, fired, batch)
				}
				// A push between two batches commits.
				pushed := make(chan error, 1)
				go func() {
					pushed <- db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "other/app", Manifest: manifestOf("pushed meanwhile"), Tag: "v1"})
				}()
				select {
				case err := <-pushed:
					if err != nil {
						t.Errorf("a push between two batches: %v", err)
					}
				case <-time.After(20 * time.Second):
					t.Errorf("a push between two batches did not commit within 20s")
				}
				return injected
			})
			fired, err := db.Graph().FireBaseMoved(ctx, failing)
			if !errors.Is(err, injected) || fired != batch || batches != 1 {
				t.Fatalf("the failing move: fired %d, %v after %d batches; want %d fired, the injected failure after 1 batch", fired, err, batches, batch)
			}
			// The move's job runs again: the dependents fired for already
			// are skipped.
			fired, err = db.Graph().FireBaseMoved(ctx, mv)
			if err != nil || fired != n-batch {
				t.Fatalf("the move run again: fired %d, %v; want %d", fired, err, n-batch)
			}
			per := firedPer(t, db)
			if len(per) != n {
				t.Fatalf("%d dependents fired for, want %d", len(per), n)
			}
			for k, c := range per {
				if c != 1 {
					t.Fatalf("%s fired %d times, want once", k, c)
				}
			}
			if fired, err := db.Graph().FireBaseMoved(ctx, mv); err != nil || fired != 0 {
				t.Fatalf("a replay fired %d, %v; want 0", fired, err)
			}
			if _, err := db.Manifests().GetManifest(ctx, "other/app", "v1", "", false); err != nil {
				t.Fatalf("the push made between two batches: %v", err)
			}
			// The events carry the comparison; the audit log does not copy
			// the lists.
			evs, err := db.Outbox().EventsAfter(ctx, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range evs {
				if e.Kind == meta.EventBaseImageUpdated && !strings.Contains(string(e.Data), "CVE-2026-4242") {
					t.Fatalf("an event lacks the fixed vulnerability: %s", e.Data)
				}
			}
			audit, err := db.Access().RepositoryAuditLog(ctx, "apps/r-3", 0, 10)
			if err != nil || len(audit) == 0 {
				t.Fatalf("audit log of apps/r-3: %v %v", audit, err)
			}
			for _, a := range audit {
				if a.Kind != meta.EventBaseImageUpdated {
					continue
				}
				if strings.Contains(string(a.Metadata), "CVE-2026-4242") || !strings.Contains(string(a.Metadata), `"vulnerabilities_compared":true`) {
					t.Fatalf("audit entry of a base_image_updated: %s; want the comparison's outcome without the lists", a.Metadata)
				}
			}
		})
	}
}
