package meta_test

import (
	"fmt"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
)

// TestIndexPushesPublishingOneHeldPlatform: on PostgreSQL, two index
// pushes that publish the same held platforms (each under a tag the gate
// does not guard) do not deadlock. Both are stopped at their tag's row,
// held by another session, after they checked their references: before,
// each had locked the platforms FOR SHARE there, and each then waited for
// the other's share lock to release them (UPDATE manifests SET held = 0).
// The references of a publishing push are now locked FOR NO KEY UPDATE,
// in digest order, as the release updates them: the second push waits
// for the first. The platforms are listed in opposite orders by the two
// indexes, so that the order of the locks is the store's, not the
// manifests'.
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
