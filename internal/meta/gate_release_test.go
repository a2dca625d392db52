package meta_test

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestIndexPushesPublishingOneHeldPlatform: on PostgreSQL, two index
// pushes that publish the same held platforms (each under a tag the gate
// does not guard) do not deadlock. Both are stopped at their tag's row,
// held by another session, after they checked their references: before,
// each had locked the platforms FOR SHARE there, and each then waited for
// the other's share lock to release them (UPDATE manifests SET held = 0).
// The references of a publishing push are now locked FOR KEY SHARE,
// which the release's update does not wait for, and releases update in
// digest order: the second push's update waits for the first's. The
// platforms are listed in opposite orders by the two indexes, so that
// the order of the updates is the store's, not the manifests'.
func TestIndexPushesPublishingOneHeldPlatform(t *testing.T) {
	e, h := newLockOrderEnv(t)
	ctx, db := e.ctx, e.db
	a, b := manifestOf("platform a"), manifestOf("platform b")
	for _, m := range []meta.Manifest{a, b} {
		e.put(meta.PutManifest{Repository: "mirror/node", Manifest: m}) // by digest: held
		if !e.manifest(m.Digest).Held {
			t.Fatalf("platform %s pushed by digest into a gated repository is not held", m.Digest)
		}
	}
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf("latest before"), Tag: "latest"})
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf("edge before"), Tag: "edge"})
	x, y := indexOf("index x"), indexOf("index y")
	refs := map[string][]meta.Ref{
		"latest": {{Digest: a.Digest, IsManifest: true}, {Digest: b.Digest, IsManifest: true}},
		"edge":   {{Digest: b.Digest, IsManifest: true}, {Digest: a.Digest, IsManifest: true}},
	}

	h.lock("SELECT 1 FROM tags WHERE name IN ('latest', 'edge') FOR UPDATE")
	pushed := make(chan error, 2)
	for tag, m := range map[string]meta.Manifest{"latest": x, "edge": y} {
		go func() {
			err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "mirror/node", Manifest: m, Refs: refs[tag], Tag: tag})
			if err != nil {
				err = fmt.Errorf("push %s: %w", tag, err)
			}
			pushed <- err
		}()
	}
	h.waitBlocked(2)
	h.release()
	for range 2 {
		if err := <-pushed; err != nil {
			t.Fatal(err)
		}
	}
	if n := db.Deadlocks(); n > 0 {
		t.Fatalf("%d transactions deadlocked", n)
	}
	for _, m := range []meta.Manifest{a, b, x, y} {
		if e.manifest(m.Digest).Held {
			t.Errorf("%s is still held after two pushes published it", m.Digest)
		}
	}
	if e.tagged("latest") != x.Digest || e.tagged("edge") != y.Digest {
		t.Fatalf("latest at %s, edge at %s; want %s and %s", e.tagged("latest"), e.tagged("edge"), x.Digest, y.Digest)
	}
}

// TestPromotionRacesPushOfItsIndex: on PostgreSQL, a promotion of a held
// index and a push of the same index under a tag the gate does not guard
// do not deadlock. The promotion is let go first, holding the index's row
// and then releasing its platforms; the push had checked its references
// (the platforms) and waited for the index's row. Before, the push held
// the platforms FOR SHARE, which the promotion's release (UPDATE
// manifests SET held = 0) waited for: deadlocked. It now holds them FOR
// KEY SHARE, which a delete waits for and an update does not.
func TestPromotionRacesPushOfItsIndex(t *testing.T) {
	e, h := newLockOrderEnv(t)
	ctx, db := e.ctx, e.db
	a, b := manifestOf("platform a of 15"), manifestOf("platform b of 15")
	for _, m := range []meta.Manifest{a, b} {
		e.put(meta.PutManifest{Repository: "mirror/node", Manifest: m})
	}
	idx := indexOf("15-alpine index, promoted and pushed at once")
	refs := []meta.Ref{{Digest: a.Digest, IsManifest: true}, {Digest: b.Digest, IsManifest: true}}
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: idx, Refs: refs, Tag: "15-alpine"})
	if !e.manifest(idx.Digest).Held || !e.manifest(a.Digest).Held {
		t.Fatal("the candidate index and its platforms are not held")
	}

	h.lock("SELECT 1 FROM manifests WHERE digest = $1 FOR UPDATE", idx.Digest.String())
	promoted := e.promoteLater()
	h.waitBlocked(1) // the promotion, at the index's row
	pushed := make(chan error, 1)
	go func() {
		pushed <- db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "mirror/node", Manifest: idx, Refs: refs, Tag: "latest"})
	}()
	h.waitBlocked(2) // and the push, its references checked, behind it
	h.release()
	if err := <-promoted; err != nil {
		t.Fatalf("promote: %v", err)
	}
	if err := <-pushed; err != nil {
		t.Fatalf("push: %v", err)
	}
	if n := db.Deadlocks(); n > 0 {
		t.Fatalf("%d transactions deadlocked", n)
	}
	for _, m := range []meta.Manifest{a, b, idx} {
		if e.manifest(m.Digest).Held {
			t.Errorf("%s is still held after its promotion", m.Digest)
		}
	}
	if e.tagged("15-alpine") != idx.Digest || e.tagged("latest") != idx.Digest {
		t.Fatalf("15-alpine at %s, latest at %s; want both at %s", e.tagged("15-alpine"), e.tagged("latest"), idx.Digest)
	}
}

// TestUpgradeQueuesGraphJobsOfLiveCandidates: a live candidate stored
// before the graph recorded everything it looks at (an index) has no
// record the gate can wait for; migration 34 queues its index job again,
// once, and none for a candidate the graph has a record of.
func TestUpgradeQueuesGraphJobsOfLiveCandidates(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db, err := meta.OpenAt(ctx, metatest.DSN(t, dialect), 33)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			e := &gateEnv{t: t, ctx: ctx, db: db}
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf("published before the gate"), Tag: "14"})
			if err := db.Gates().PutGate(ctx, meta.Gate{Repository: "mirror/node", Tags: []string{"15-*"}, Config: json.RawMessage(`{"tags":["15-*"]}`)}); err != nil {
				t.Fatal(err)
			}
			platform, idx, img := manifestOf("platform of 15"), indexOf("15-alpine index"), manifestOf("15-slim image")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: platform})
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: idx, Refs: []meta.Ref{{Digest: platform.Digest, IsManifest: true}}, Tag: "15-alpine"})
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: img, Tag: "15-slim"})
			if err := db.Graph().RecordImage(ctx, meta.GraphImage{Repository: "mirror/node", Digest: img.Digest, Platform: "linux/amd64", Chain: chainOf("l1")}); err != nil {
				t.Fatal(err)
			}
			graphJobs := func() []string {
				t.Helper()
				js, err := db.Jobs().Jobs(ctx, "graph", "pending", 100)
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, j := range js {
					out = append(out, string(j.Payload))
				}
				return out
			}
			before := len(graphJobs())
			if err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			after := graphJobs()
			want := `{"kind":"index","repository":"mirror/node","digest":"` + idx.Digest.String() + `"}`
			if len(after) != before+1 || after[len(after)-1] != want {
				t.Fatalf("graph jobs after the upgrade: %q (%d before); want one more, %s", after, before, want)
			}
		})
	}
}
