package meta_test

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// lockHolder is a PostgreSQL session of a test, beside the store's, that
// holds row locks to stop the store's transactions at a chosen statement.
type lockHolder struct {
	t   *testing.T
	ctx context.Context
	db  *sql.DB
	tx  *sql.Tx
	pid int
}

func newLockHolder(t *testing.T, ctx context.Context, dsn string) *lockHolder {
	t.Helper()
	db, err := sql.Open("pgx", dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return &lockHolder{t: t, ctx: ctx, db: db}
}

// lock begins the session's transaction and runs query in it (a SELECT
// ... FOR UPDATE of the rows to hold).
func (h *lockHolder) lock(query string, args ...any) {
	h.t.Helper()
	tx, err := h.db.BeginTx(h.ctx, nil)
	if err != nil {
		h.t.Fatal(err)
	}
	h.tx = tx
	if err := tx.QueryRowContext(h.ctx, "SELECT pg_backend_pid()").Scan(&h.pid); err != nil {
		h.t.Fatal(err)
	}
	rows, err := tx.QueryContext(h.ctx, query, args...)
	if err != nil {
		h.t.Fatal(err)
	}
	rows.Close()
}

// release ends the session's transaction, freeing its rows.
func (h *lockHolder) release() {
	h.t.Helper()
	if err := h.tx.Rollback(); err != nil {
		h.t.Fatal(err)
	}
}

// waitBlocked polls until n sessions wait, directly or through each
// other, for the holder's locks.
func (h *lockHolder) waitBlocked(n int) {
	h.t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		var blocked int
		if err := h.db.QueryRowContext(h.ctx, `WITH RECURSIVE b(pid) AS (
			SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))
			UNION SELECT a.pid FROM pg_stat_activity a JOIN b ON b.pid = ANY(pg_blocking_pids(a.pid))
		) SELECT COUNT(*) FROM b`, h.pid).Scan(&blocked); err != nil {
			h.t.Fatal(err)
		}
		if blocked >= n {
			return
		}
		if time.Now().After(deadline) {
			h.t.Fatalf("%d sessions wait for the held locks, want %d", blocked, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestPromotionRacesPushOfItsTag: on PostgreSQL, a promotion and a push
// (or retag) of the same held manifest for the candidate's tag do not
// deadlock, however they interleave. The promotion is stopped after it
// took its tag's lock (the candidate's row is held by another session),
// and the push started then: before, the push locked the manifest's row
// FOR SHARE and then waited for the tag's lock, while the promotion, once
// let go, waited for the push's share lock to release the manifest
// (UPDATE manifests SET held = 0): deadlocked, detected after a second
// and retried. The push now takes its guarded tags' locks right after
// the gate's row, before any manifest row, as the promotion does.
func TestPromotionRacesPushOfItsTag(t *testing.T) {
	for _, racer := range []string{"push", "retag"} {
		t.Run(racer, func(t *testing.T) {
			e, h := newLockOrderEnv(t)
			ctx, db := e.ctx, e.db
			held := manifestOf("held, pushed again by a sync")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: held, Tag: "15-alpine"})
			h.lock("SELECT 1 FROM gate_candidates WHERE id = $1 FOR UPDATE", e.live("15-alpine")[0].ID)
			promoted := e.promoteLater()
			h.waitBlocked(1) // the promotion, holding the tag's lock
			pushed := make(chan error, 1)
			go func() {
				if racer == "push" {
					pushed <- db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "mirror/node", Manifest: held, Tag: "15-alpine"})
				} else {
					pushed <- db.Manifests().MoveTag(ctx, "mirror/node", "15-alpine", held.Digest, "alice")
				}
			}()
			h.waitBlocked(2) // and the push, waiting for the promotion
			h.release()
			if err := <-promoted; err != nil {
				t.Fatalf("promote: %v", err)
			}
			if err := <-pushed; err != nil && !errors.Is(err, meta.ErrGuardedTag) {
				t.Fatalf("%s: %v", racer, err)
			}
			if n := db.Deadlocks(); n > 0 {
				t.Fatalf("%d transactions deadlocked", n)
			}
			if got := e.tagged("15-alpine"); got != held.Digest {
				t.Fatalf("15-alpine is at %q, want the promoted %s", got, held.Digest)
			}
			if e.manifest(held.Digest).Held || len(e.live("")) != 0 {
				t.Fatalf("after the promotion: held %v, live candidates %+v", e.manifest(held.Digest).Held, e.live(""))
			}
		})
	}
}

// newLockOrderEnv is newGateEnv on PostgreSQL (without the gate's
// checkers), with a lockHolder on its database.
func newLockOrderEnv(t *testing.T) (*gateEnv, *lockHolder) {
	if !slices.Contains(metatest.Dialects(), "postgres") {
		t.Skip("SKIP: PostgreSQL only (BERTH_TEST_POSTGRES_DSN)")
	}
	ctx := context.Background()
	dsn := metatest.DSN(t, "postgres")
	db, err := meta.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	e := &gateEnv{t: t, ctx: ctx, db: db}
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf("published before the gate"), Tag: "14"})
	if err := db.Gates().PutGate(ctx, meta.Gate{Repository: "mirror/node", Tags: []string{"15-*"}, Config: json.RawMessage(`{"tags":["15-*"]}`)}); err != nil {
		t.Fatal(err)
	}
	return e, newLockHolder(t, ctx, dsn)
}

// promoteLater promotes the live candidate of 15-alpine, as the gate's
// service does (under the gate it read), and sends the outcome.
func (e *gateEnv) promoteLater() <-chan error {
	c := e.live("15-alpine")[0]
	g, err := e.db.Gates().GetGate(e.ctx, "mirror/node")
	if err != nil {
		e.t.Fatal(err)
	}
	promoted := make(chan error, 1)
	go func() {
		_, err := e.db.Gates().Promote(e.ctx, meta.Promotion{CandidateID: c.ID, GateUpdatedAt: g.UpdatedAt,
			RollbackTag: func(n int64) string { return fmt.Sprintf("15-alpine-%d", n) }})
		promoted <- err
	}()
	return promoted
}

// TestPromotionRacesPublishingPush: on PostgreSQL, a promotion and a push
// of the same held manifest under a tag the gate does not guard (which
// publishes it) do not deadlock. Both release the manifest (UPDATE
// manifests SET held = 0); both are stopped at their tag's row, held by
// another session, after they locked the manifest's row: before, each
// had locked it FOR SHARE, and each then waited for the other's share
// lock to update it. They now lock it FOR NO KEY UPDATE at once, as the
// update would: the second waits for the first.
func TestPromotionRacesPublishingPush(t *testing.T) {
	e, h := newLockOrderEnv(t)
	ctx, db := e.ctx, e.db
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf("promoted before"), Tag: "15-alpine"})
	if _, err := db.Gates().Promote(ctx, meta.Promotion{CandidateID: e.live("15-alpine")[0].ID,
		RollbackTag: func(n int64) string { return fmt.Sprintf("15-alpine-%d", n) }}); err != nil {
		t.Fatal(err)
	}
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf("latest before"), Tag: "latest"})
	held := manifestOf("held, then published by latest")
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: held, Tag: "15-alpine"})

	h.lock("SELECT 1 FROM tags WHERE name IN ('15-alpine', 'latest') FOR UPDATE")
	promoted := e.promoteLater()
	pushed := make(chan error, 1)
	go func() {
		pushed <- db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "mirror/node", Manifest: held, Tag: "latest"})
	}()
	h.waitBlocked(2)
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
	if e.tagged("15-alpine") != held.Digest || e.tagged("latest") != held.Digest || e.manifest(held.Digest).Held {
		t.Fatalf("15-alpine at %q, latest at %q, held %v; want both at the released %s",
			e.tagged("15-alpine"), e.tagged("latest"), e.manifest(held.Digest).Held, held.Digest)
	}
}

// TestPromotionRacesDeleteOfItsManifest: on PostgreSQL, a promotion and a
// DeleteManifest of the candidate's digest do not deadlock. The promotion
// is stopped at the candidate's row (held by another session), holding
// its tag's lock, and the delete started then: before, the delete locked
// the manifest's row FOR UPDATE and then waited for the candidate's row
// to withdraw it, while the promotion, once let go, locked the candidate
// and waited for the manifest's row: deadlocked, detected after a second
// and retried. The delete now takes the gate's row and the tag locks of
// the digest's live candidates before the manifest, as the promotion
// does, so it waits for the promotion.
func TestPromotionRacesDeleteOfItsManifest(t *testing.T) {
	e, h := newLockOrderEnv(t)
	ctx, db := e.ctx, e.db
	held := manifestOf("held, deleted while it is promoted")
	e.put(meta.PutManifest{Repository: "mirror/node", Manifest: held, Tag: "15-alpine"})
	h.lock("SELECT 1 FROM gate_candidates WHERE id = $1 FOR UPDATE", e.live("15-alpine")[0].ID)
	promoted := e.promoteLater()
	h.waitBlocked(1) // the promotion, holding the tag's lock
	deleted := make(chan error, 1)
	go func() { deleted <- db.Manifests().DeleteManifest(ctx, "mirror/node", held.Digest, "alice") }()
	h.waitBlocked(2) // and the delete, waiting for the promotion
	h.release()
	promoteErr, deleteErr := <-promoted, <-deleted
	if n := db.Deadlocks(); n > 0 {
		t.Fatalf("%d transactions deadlocked", n)
	}
	var immutable *meta.ImmutableTagError
	switch {
	case promoteErr == nil:
		// Promoted first: the delete then finds the rollback tag, which
		// is immutable, pointing at the manifest.
		if deleteErr != nil && !errors.As(deleteErr, &immutable) {
			t.Fatalf("delete after the promotion: %v", deleteErr)
		}
	case errors.Is(promoteErr, meta.ErrCandidateNotLive), errors.Is(promoteErr, meta.ErrManifestNotFound):
		if deleteErr != nil {
			t.Fatalf("delete before the promotion: %v", deleteErr)
		}
	default:
		t.Fatalf("promote: %v (delete: %v)", promoteErr, deleteErr)
	}
	_, err := db.Manifests().GetManifest(ctx, "mirror/node", "", held.Digest, false)
	switch {
	case errors.Is(err, meta.ErrManifestNotFound):
		if live := e.live(""); len(live) != 0 || e.tagged("15-alpine") != "" {
			t.Fatalf("manifest deleted, but 15-alpine is at %q and live candidates are %+v", e.tagged("15-alpine"), live)
		}
	case err != nil:
		t.Fatal(err)
	case promoteErr != nil || e.tagged("15-alpine") != held.Digest || e.manifest(held.Digest).Held || len(e.live("")) != 0:
		t.Fatalf("manifest kept: promote %v, 15-alpine at %q, held %v, live candidates %+v",
			promoteErr, e.tagged("15-alpine"), e.manifest(held.Digest).Held, e.live(""))
	}
}
