package meta_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// expiredBaseStore is a store whose clock a test moves on (shift), with
// no minimum expiration, checking SQLite's statements for re-prepares.
func expiredBaseStore(t *testing.T, dialect string) (*meta.DB, func(time.Duration)) {
	t.Helper()
	opts := []meta.Option{noMinimum()}
	if dialect == "sqlite" {
		opts = append(opts, meta.StatementCheck(metatest.CheckReprepares(t)))
	}
	db, shift := shiftedStore(t, dialect, opts...)
	return db, func(d time.Duration) { shift.Add(int64(d)) }
}

// baseTagsOf returns the tags through which an image's bases are
// recorded, by name.
func baseTagsOf(t *testing.T, g meta.Graph, repo string, d digest.Digest) []string {
	t.Helper()
	bases, err := g.Bases(context.Background(), repo, d)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, b := range bases {
		out = append(out, b.Tag)
	}
	slices.Sort(out)
	return out
}

// TestExpiredBaseTagReachesNothing: a base tag past its expiration is
// gone, as if deleted at its expiration. An image stored after it
// expired is not recorded as reached through it (only through the base's
// live tags), and the tag made again elsewhere fires nothing for that
// image; an image stored while it was live was built from it, and is
// recorded through it (as through a tag deleted since), and hears of the
// tag made again.
func TestExpiredBaseTagReachesNothing(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db, shift := expiredBaseStore(t, dialect)
			m, g := db.Manifests(), db.Graph()
			put := func(p meta.PutManifest) {
				t.Helper()
				if err := m.PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			// The base: A tagged 1.9 and 1.9.3. early is built on it
			// while 1.9 is live; 1.9 expires an hour later; late is
			// built on it after that.
			a := manifestOf("base 1.9 A")
			put(meta.PutManifest{Repository: "acme/base", Manifest: a, Tag: "1.9", MoreTags: []string{"1.9.3"}})
			early, late := manifestOf("app early"), manifestOf("app late")
			put(meta.PutManifest{Repository: "acme/early", Manifest: early, Tag: "v1"})
			if err := m.SetTagExpiration(ctx, "acme/base", "1.9", time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			shift(2 * time.Hour)
			put(meta.PutManifest{Repository: "acme/late", Manifest: late, Tag: "v1"})
			for _, img := range []meta.GraphImage{
				{Repository: "acme/base", Digest: a.Digest, Platform: "linux/amd64", Chain: chainOf("a")},
				{Repository: "acme/early", Digest: early.Digest, Platform: "linux/amd64", Chain: chainOf("a", "early")},
				{Repository: "acme/late", Digest: late.Digest, Platform: "linux/amd64", Chain: chainOf("a", "late")},
			} {
				if err := g.RecordImage(ctx, img); err != nil {
					t.Fatal(err)
				}
			}
			found, err := g.ImagesWithChains(ctx, chainOf("a"), 10)
			if err != nil || len(found) != 1 {
				t.Fatalf("the base: %+v %v", found, err)
			}
			link := []meta.BaseLink{{RepositoryID: found[0].RepositoryID, Digest: a.Digest, Method: "layers", Level: 1, Layers: 1}}
			for _, repo := range []string{"acme/early", "acme/late"} {
				d := map[string]digest.Digest{"acme/early": early.Digest, "acme/late": late.Digest}[repo]
				if err := g.SetBases(ctx, repo, d, link); err != nil {
					t.Fatal(err)
				}
			}
			if got := baseTagsOf(t, g, "acme/early", early.Digest); !slices.Equal(got, []string{"1.9", "1.9.3"}) {
				t.Fatalf("early's base reached through %v; want [1.9 1.9.3] (1.9 was live when early was stored)", got)
			}
			if got := baseTagsOf(t, g, "acme/late", late.Digest); !slices.Equal(got, []string{"1.9.3"}) {
				t.Fatalf("late's base reached through %v; want [1.9.3] (1.9 had expired when late was stored)", got)
			}
			// 1.9 is made again on B: early hears of it, late does not.
			b := manifestOf("base 1.9 B")
			put(meta.PutManifest{Repository: "acme/base", Manifest: b, Tag: "1.9"})
			if n, err := g.FireBaseMoved(ctx, meta.BaseMove{Repository: "acme/base", Tag: "1.9", New: b.Digest}); err != nil || n != 1 {
				t.Fatalf("fired %d for 1.9 made again, %v; want 1 (early only)", n, err)
			}
			if got := baseImageUpdated(t, db); len(got) != 1 || got[0] != early.Digest.String()+" [v1]" {
				t.Fatalf("base_image_updated: %v; want early's only", got)
			}
		})
	}
}

// TestExpiredBaseTagMissesNoMove: a base tag that moved after an image
// built on it was stored, and before the graph recorded the image, is a
// move the image missed (MissedMoves); once the tag has expired it is
// gone, as a deleted tag is, and no move is missed through it.
func TestExpiredBaseTagMissesNoMove(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db, shift := expiredBaseStore(t, dialect)
			m, g := db.Manifests(), db.Graph()
			put := func(p meta.PutManifest) {
				t.Helper()
				if err := m.PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			a, b, app := manifestOf("base 1.9 A"), manifestOf("base 1.9 B"), manifestOf("app on A")
			put(meta.PutManifest{Repository: "acme/base", Manifest: a, Tag: "1.9"})
			put(meta.PutManifest{Repository: "acme/app", Manifest: app, Tag: "v1"})
			shift(time.Second)
			put(meta.PutManifest{Repository: "acme/base", Manifest: b, Tag: "1.9"}) // before the graph records app
			for _, img := range []meta.GraphImage{
				{Repository: "acme/base", Digest: a.Digest, Platform: "linux/amd64", Chain: chainOf("a")},
				{Repository: "acme/app", Digest: app.Digest, Platform: "linux/amd64", Chain: chainOf("a", "app")},
			} {
				if err := g.RecordImage(ctx, img); err != nil {
					t.Fatal(err)
				}
			}
			found, err := g.ImagesWithChains(ctx, chainOf("a"), 10)
			if err != nil || len(found) != 1 {
				t.Fatalf("the base: %+v %v", found, err)
			}
			if err := g.SetBases(ctx, "acme/app", app.Digest, []meta.BaseLink{{RepositoryID: found[0].RepositoryID, Digest: a.Digest, Method: "layers", Level: 1, Layers: 1}}); err != nil {
				t.Fatal(err)
			}
			want := []meta.MissedMove{{Repository: "acme/base", Tag: "1.9", New: b.Digest}}
			if got, err := g.MissedMoves(ctx, "acme/app", app.Digest); err != nil || !slices.Equal(got, want) {
				t.Fatalf("missed moves: %+v %v; want %+v", got, err, want)
			}
			if err := m.SetTagExpiration(ctx, "acme/base", "1.9", time.Now().Add(time.Hour)); err != nil {
				t.Fatal(err)
			}
			shift(2 * time.Hour)
			if got, err := g.MissedMoves(ctx, "acme/app", app.Digest); err != nil || len(got) != 0 {
				t.Fatalf("missed moves once 1.9 expired: %+v %v; want none (the tag is gone)", got, err)
			}
		})
	}
}
