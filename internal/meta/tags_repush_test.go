package meta_test

import (
	"context"
	"errors"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// shiftedStore opens a fresh store whose clock runs shift ahead of the
// host's (set it to advance the store's time; on PostgreSQL the offset
// to the database's clock is measured at open, so a later shift moves
// the store's time by as much).
func shiftedStore(t *testing.T, dialect string, opts ...meta.Option) (*meta.DB, *atomic.Int64) {
	t.Helper()
	shift := &atomic.Int64{}
	db, err := meta.Open(context.Background(), metatest.DSN(t, dialect),
		append(opts, meta.LocalClock(func() time.Time { return time.Now().Add(time.Duration(shift.Load())) }))...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, shift
}

// tagShown returns the tag as the tag list shows it (onlyActiveTags).
func tagShown(t *testing.T, db *meta.DB, repo, tag string) (meta.TagInfo, bool) {
	t.Helper()
	got, err := db.Manifests().TagsPage(context.Background(), repo, meta.TagQuery{Name: tag, Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) == 0 {
		return meta.TagInfo{}, false
	}
	return got[0], true
}

// TestRepushRenewsTag: a client pushing the image a tag already points at
// to that tag again (a reproducible nightly build) restarts the tag's
// life, as Quay's retarget_tag does: it starts now (so a creation_date
// policy keeps it, and number_of_tags ranks it by this push), an
// expiration set through the API is cleared (the image's
// quay.expires-after label sets one, as on a first push), and its history
// has a new period. It is no move: no repo_push, nothing for the
// base-image graph. An immutable tag pushed again is accepted and stays as
// it was; a pull-through cache refresh of an unchanged tag renews nothing.
func TestRepushRenewsTag(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db, shift := shiftedStore(t, dialect)
			orgWithRepo(t, db)
			nightly := manifestOf("reproducible nightly")
			push := func(tag string, m meta.Manifest, expires time.Time) {
				t.Helper()
				if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: m, Tag: tag, ExpiresAt: expires}); err != nil {
					t.Fatalf("push %s: %v", tag, err)
				}
			}
			push("nightly", nightly, time.Time{})
			push("old", manifestOf("old build"), time.Time{})
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyAutoPrune, Namespace: "acme", Repository: "acme/app",
				Method: meta.PruneByAge, Value: "1h", TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			first, _ := tagShown(t, db, "acme/app", "nightly")
			pushes := len(eventsOf(t, db, meta.EventRepoPush))

			shift.Store(int64(2 * time.Hour))
			push("nightly", nightly, time.Time{}) // the next night: same digest
			gone, err := db.Manifests().PruneRepository(ctx, "acme/app", time.Now().Add(2*time.Hour), "berth-autoprune")
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(gone, []string{"old"}) {
				t.Fatalf("pruned %v after nightly was pushed again, want only old", gone)
			}
			renewed, ok := tagShown(t, db, "acme/app", "nightly")
			if !ok || renewed.Digest != nightly.Digest {
				t.Fatalf("nightly after the pass: %+v %v", renewed, ok)
			}
			if d := time.Until(renewed.UpdatedAt) - 2*time.Hour; d.Abs() > time.Minute {
				t.Fatalf("nightly starts at %v (first push %v), want the second push's time", renewed.UpdatedAt, first.UpdatedAt)
			}
			hist, err := db.Manifests().TagsPage(ctx, "acme/app", meta.TagQuery{Name: "nightly", History: true, Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			if len(hist) != 2 || !hist[0].Until.IsZero() || hist[1].Until.IsZero() || hist[0].Digest != nightly.Digest || hist[1].Digest != nightly.Digest ||
				!hist[0].UpdatedAt.Equal(renewed.UpdatedAt) || !hist[1].UpdatedAt.Equal(first.UpdatedAt) {
				t.Fatalf("nightly's history: %+v, want the first period ended and a new one from the second push", hist)
			}
			if n := len(eventsOf(t, db, meta.EventRepoPush)); n != pushes {
				t.Fatalf("%d repo_push events after pushing nightly's image again, want %d (no tag moved)", n, pushes)
			}

			// An expiration set through the API is cleared by a push; the
			// label's applies to the renewed tag.
			if err := db.Manifests().SetTagExpiration(ctx, "acme/app", "nightly", time.Now().Add(3*time.Hour)); err != nil {
				t.Fatal(err)
			}
			push("nightly", nightly, time.Time{})
			if got, _ := tagShown(t, db, "acme/app", "nightly"); !got.ExpiresAt.IsZero() {
				t.Fatalf("nightly expires at %v after a push of its image, want no expiration", got.ExpiresAt)
			}
			label := time.Now().Add(2*time.Hour + 24*time.Hour).Truncate(time.Second)
			push("nightly", nightly, label)
			if got, _ := tagShown(t, db, "acme/app", "nightly"); !got.ExpiresAt.Equal(label) {
				t.Fatalf("nightly expires at %v after a push with quay.expires-after, want %v", got.ExpiresAt, label)
			}

			// An immutable tag: the push of its image is accepted, and
			// changes nothing.
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", TagPattern: "^v1$", TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			release := manifestOf("release 1")
			push("v1", release, time.Time{})
			before, _ := tagShown(t, db, "acme/app", "v1")
			shift.Store(int64(4 * time.Hour))
			push("v1", release, time.Time{})
			var imm *meta.ImmutableTagError
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("release 1 again"), Tag: "v1"}); !errors.As(err, &imm) {
				t.Fatalf("move of the immutable v1: %v", err)
			}
			if after, _ := tagShown(t, db, "acme/app", "v1"); !after.UpdatedAt.Equal(before.UpdatedAt) {
				t.Fatalf("immutable v1 starts at %v after a push of its image, was %v", after.UpdatedAt, before.UpdatedAt)
			}

			// The pull-through cache storing a cached tag's unchanged
			// manifest again is no client's push: the tag keeps its time.
			cached := manifestOf("cached upstream image")
			if err := db.ProxyCaches().PutProxyManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: cached, Tag: "cached"}, time.Now()); err != nil {
				t.Fatal(err)
			}
			was, _ := tagShown(t, db, "acme/app", "cached")
			shift.Store(int64(6 * time.Hour))
			if err := db.ProxyCaches().PutProxyManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: cached, Tag: "cached"}, time.Now()); err != nil {
				t.Fatal(err)
			}
			if now, _ := tagShown(t, db, "acme/app", "cached"); !now.UpdatedAt.Equal(was.UpdatedAt) {
				t.Fatalf("cached tag starts at %v after the cache stored its manifest again, was %v", now.UpdatedAt, was.UpdatedAt)
			}
		})
	}
}

// eventsOf returns the store's events of a kind.
func eventsOf(t *testing.T, db *meta.DB, kind string) []meta.Event {
	t.Helper()
	evs, err := db.Outbox().EventsAfter(context.Background(), 0, 100000)
	if err != nil {
		t.Fatal(err)
	}
	var out []meta.Event
	for _, e := range evs {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}
