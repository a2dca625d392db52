package meta_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestTagExpirationBoundedLikeQuay: every expiration, from the push's
// quay.expires-after label or set through the API's setter, is bounded
// as Quay's change_tag_expiration bounds it: between the tag's start (the
// tag list's start_ts) plus the minimum (default 1h) and plus the maximum
// (default 104 weeks); one inside the bounds is stored as given. With a
// minimum of 0 (TagExpirationBounds) a short one is stored as before.
func TestTagExpirationBoundedLikeQuay(t *testing.T) {
	const week = 7 * 24 * time.Hour
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect) // Quay's defaults
			orgWithRepo(t, db)
			push := func(tag string, m meta.Manifest, expires time.Time) meta.TagInfo {
				t.Helper()
				if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: m, Tag: tag, ExpiresAt: expires}); err != nil {
					t.Fatalf("push %s: %v", tag, err)
				}
				got, ok := tagShown(t, db, "acme/app", tag)
				if !ok {
					t.Fatalf("%s is not listed after its push", tag)
				}
				return got
			}
			// The label's 30s: the tag lasts Quay's minimum, an hour from
			// its start.
			short := push("pr-1", manifestOf("short-lived"), time.Now().Add(30*time.Second))
			if want := short.UpdatedAt.Add(time.Hour); !short.ExpiresAt.Equal(want) {
				t.Fatalf("a push labelled 30s expires at %v, want its start %v + 1h", short.ExpiresAt, short.UpdatedAt)
			}
			// The API's year 9999: 104 weeks from the start.
			if err := db.Manifests().SetTagExpiration(ctx, "acme/app", "pr-1", time.Date(9999, 12, 31, 0, 0, 0, 0, time.UTC)); err != nil {
				t.Fatal(err)
			}
			if got, _ := tagShown(t, db, "acme/app", "pr-1"); !got.ExpiresAt.Equal(got.UpdatedAt.Add(104 * week)) {
				t.Fatalf("an expiration in 9999 is stored as %v, want the start %v + 104 weeks", got.ExpiresAt, got.UpdatedAt)
			}
			// The API's 10 minutes: an hour.
			if err := db.Manifests().SetTagExpiration(ctx, "acme/app", "pr-1", time.Now().Add(10*time.Minute)); err != nil {
				t.Fatal(err)
			}
			if got, _ := tagShown(t, db, "acme/app", "pr-1"); !got.ExpiresAt.Equal(got.UpdatedAt.Add(time.Hour)) {
				t.Fatalf("an expiration 10 minutes ahead is stored as %v, want the start %v + 1h", got.ExpiresAt, got.UpdatedAt)
			}
			// Inside the bounds: as given, by either path.
			in := time.Now().Add(3 * 24 * time.Hour).Truncate(time.Second)
			if err := db.Manifests().SetTagExpiration(ctx, "acme/app", "pr-1", in); err != nil {
				t.Fatal(err)
			}
			if got, _ := tagShown(t, db, "acme/app", "pr-1"); !got.ExpiresAt.Equal(in) {
				t.Fatalf("an expiration in 3 days is stored as %v, want %v", got.ExpiresAt, in)
			}
			if got := push("pr-2", manifestOf("two weeks"), in); !got.ExpiresAt.Equal(in) {
				t.Fatalf("a push labelled 3 days expires at %v, want %v", got.ExpiresAt, in)
			}
			// A label's 200 weeks: 104.
			if got := push("pr-3", manifestOf("long-lived"), time.Now().Add(200*week)); !got.ExpiresAt.Equal(got.UpdatedAt.Add(104 * week)) {
				t.Fatalf("a push labelled 200w expires at %v, want its start %v + 104 weeks", got.ExpiresAt, got.UpdatedAt)
			}
			// Cleared: no expiration, whatever the bounds.
			if err := db.Manifests().SetTagExpiration(ctx, "acme/app", "pr-3", time.Time{}); err != nil {
				t.Fatal(err)
			}
			if got, _ := tagShown(t, db, "acme/app", "pr-3"); !got.ExpiresAt.IsZero() {
				t.Fatalf("a cleared expiration is %v", got.ExpiresAt)
			}
		})
	}
}

// TestTagExpirationBoundsConfigured: bounds given at Open replace Quay's
// defaults; a minimum of 0 stores a short expiration as given (the
// behaviour before the bounds), a maximum caps a long one.
func TestTagExpirationBoundsConfigured(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db, err := meta.Open(ctx, metatest.DSN(t, dialect), meta.TagExpirationBounds(0, 48*time.Hour))
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			orgWithRepo(t, db)
			soon := time.Now().Add(30 * time.Second).Truncate(time.Microsecond)
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("short"), Tag: "pr-1", ExpiresAt: soon}); err != nil {
				t.Fatal(err)
			}
			if got, _ := tagShown(t, db, "acme/app", "pr-1"); !got.ExpiresAt.Equal(soon) {
				t.Fatalf("with a minimum of 0 a push labelled 30s expires at %v, want %v", got.ExpiresAt, soon)
			}
			if err := db.Manifests().SetTagExpiration(ctx, "acme/app", "pr-1", time.Now().Add(10*time.Second).Truncate(time.Second)); err != nil {
				t.Fatal(err)
			}
			if got, _ := tagShown(t, db, "acme/app", "pr-1"); time.Until(got.ExpiresAt) > 10*time.Second {
				t.Fatalf("with a minimum of 0 an expiration 10s ahead is stored as %v", got.ExpiresAt)
			}
			if err := db.Manifests().SetTagExpiration(ctx, "acme/app", "pr-1", time.Now().Add(7*24*time.Hour)); err != nil {
				t.Fatal(err)
			}
			if got, _ := tagShown(t, db, "acme/app", "pr-1"); !got.ExpiresAt.Equal(got.UpdatedAt.Add(48 * time.Hour)) {
				t.Fatalf("with a maximum of 48h an expiration in 7 days is stored as %v, want the start %v + 48h", got.ExpiresAt, got.UpdatedAt)
			}
		})
	}
}

// noMinimum is Quay's maximum and no minimum: for tests whose tags expire
// a short while ahead, or already expired, as a minimum would not let
// them.
func noMinimum() meta.Option { return meta.TagExpirationBounds(0, meta.DefaultExpirationMaximum) }

// openNoMinimum is metatest.Open with noMinimum.
func openNoMinimum(t *testing.T, dialect string) *meta.DB {
	t.Helper()
	db, err := meta.Open(context.Background(), metatest.DSN(t, dialect), noMinimum())
	if err != nil {
		t.Fatalf("open %s store: %v", dialect, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// TestOldTagExpirationStaysAhead: a tag that started about the maximum
// (104 weeks) ago, or longer, keeps at least the minimum (an hour) from
// now when a future expiration is set: the maximum from its start would
// end it at once, or in the past, outside the time machine.
func TestOldTagExpirationStaysAhead(t *testing.T) {
	const week = 7 * 24 * time.Hour
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db, shift := shiftedStore(t, dialect)
			orgWithRepo(t, db)
			for i, age := range []time.Duration{105 * week, 104*week - 30*time.Second} {
				tag := fmt.Sprintf("v1.%d", i)
				shift.Store(int64(-age))
				if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("pushed long ago " + tag), Tag: tag}); err != nil {
					t.Fatal(err)
				}
				shift.Store(0)
				if err := db.Manifests().SetTagExpiration(ctx, "acme/app", tag, time.Now().Add(7*24*time.Hour)); err != nil {
					t.Fatal(err)
				}
				got, ok := tagShown(t, db, "acme/app", tag)
				if !ok {
					t.Fatalf("a tag %s old is gone after an expiration a week ahead was set", age)
				}
				if d := time.Until(got.ExpiresAt); d < time.Hour-time.Minute || d > time.Hour+time.Minute {
					t.Fatalf("a tag %s old expires in %s, want the minimum, an hour", age, d)
				}
			}
		})
	}
}
