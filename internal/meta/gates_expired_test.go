package meta_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestExpiredGuardedTagIsMadeAgain: a guarded tag past its expiration is
// gone, as any expired tag: its digest pushed to its name again is a new
// candidate (it made none: the tag "already pointed at it"), as are a
// retag to it (PUT tag) and a manual promotion of it (it was refused as
// already there). Promoted, the tag lives again, without an expiration.
func TestExpiredGuardedTagIsMadeAgain(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := &gateEnv{t: t, ctx: context.Background(), db: openNoMinimum(t, dialect)}
			ctx := e.ctx
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: manifestOf("published before the gate"), Tag: "14"})
			e.checkerID = e.account("ci", "tester")
			if err := e.db.Gates().PutGate(ctx, meta.Gate{Repository: "mirror/node", Tags: []string{"15-*"}, Checkers: []string{"ci+tester"},
				Config: json.RawMessage(`{"tags":["15-*"]}`)}); err != nil {
				t.Fatal(err)
			}
			a := manifestOf("a")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: a, Tag: "15-alpine"})
			promote := func() {
				t.Helper()
				live := e.live("15-alpine")
				if len(live) != 1 || live[0].Digest != a.Digest {
					t.Fatalf("live candidates: %+v; want one, of a", live)
				}
				if _, err := e.db.Gates().Promote(ctx, meta.Promotion{CandidateID: live[0].ID, RollbackTag: func(n int64) string { return fmt.Sprintf("15-alpine-r%d", n) }}); err != nil {
					t.Fatal(err)
				}
				if e.tagged("15-alpine") != a.Digest {
					t.Fatal("the promotion did not point the tag at a")
				}
			}
			expire := func() {
				t.Helper()
				if err := e.db.Manifests().SetTagExpiration(ctx, "mirror/node", "15-alpine", time.Now().Add(-time.Minute)); err != nil {
					t.Fatal(err)
				}
				if e.tagged("15-alpine") != "" {
					t.Fatal("the expired tag is still found")
				}
			}
			promote()

			// Pushed again.
			expire()
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: a, Tag: "15-alpine"})
			promote()
			tags, err := e.db.Manifests().TagsPage(ctx, "mirror/node", meta.TagQuery{Name: "15-alpine", Limit: 10})
			if err != nil || len(tags) != 1 || !tags[0].ExpiresAt.IsZero() {
				t.Fatalf("the tag made again: %+v %v; want it live, without an expiration", tags, err)
			}
			if got := e.events(meta.EventTagDeleted); len(got) != 1 || got[0]["expired"] != true {
				t.Fatalf("tag_deleted events: %v; want the expired tag's end, once", got)
			}

			// Retagged (PUT tag).
			expire()
			if err := e.db.Manifests().MoveTag(ctx, "mirror/node", "15-alpine", a.Digest, "alice"); !errors.Is(err, meta.ErrGuardedTag) {
				t.Fatalf("retag of the expired guarded tag to its digest: %v; want ErrGuardedTag (a candidate)", err)
			}
			promote()

			// Promoted by hand.
			expire()
			c, err := e.db.Gates().ManualCandidate(ctx, "mirror/node", "15-alpine", a.Digest, "alice")
			if err != nil || c.Digest != a.Digest {
				t.Fatalf("manual candidate of the expired guarded tag's digest: %+v %v", c, err)
			}
			promote()
		})
	}
}

// TestMoveTagRemakesAnExpiredTag: a PUT of a tag past its expiration to
// the digest it held makes the tag again, live and without an
// expiration, announced as a push.
func TestMoveTagRemakesAnExpiredTag(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := openNoMinimum(t, dialect)
			m := manifestOf("pr build")
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: m, Tag: "pr-1",
				ExpiresAt: time.Now().Add(-time.Minute)}); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Manifests().GetManifest(ctx, "acme/app", "pr-1", "", false); !errors.Is(err, meta.ErrManifestNotFound) {
				t.Fatalf("pull of the expired tag: %v", err)
			}
			if err := db.Manifests().MoveTag(ctx, "acme/app", "pr-1", m.Digest, "alice"); err != nil {
				t.Fatal(err)
			}
			tags, err := db.Manifests().TagsPage(ctx, "acme/app", meta.TagQuery{Name: "pr-1", Limit: 10})
			if err != nil || len(tags) != 1 || tags[0].Digest != m.Digest || !tags[0].ExpiresAt.IsZero() {
				t.Fatalf("the tag after the PUT: %+v %v; want it live at its digest, without an expiration", tags, err)
			}
			if k := kinds(t, db); len(k) == 0 || k[len(k)-1] != meta.EventRepoPush {
				t.Fatalf("events: %v; want the PUT's repo_push last", k)
			}
		})
	}
}
