package meta_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestDeletedTagsOfTheTimeMachine: the time machine lists the deleted
// tags its RestoreTag puts back, no other. With a window of an hour, a
// tag deleted two hours ago (no garbage collection pass since) is not
// listed, and its restore is refused; a tag that expired, which no pass
// has swept yet, is listed (ended at its expiration), and restored.
// Before, the first was listed with a Restore that answered 404, and the
// second was in neither the tags nor the deleted tags.
func TestDeletedTagsOfTheTimeMachine(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db, shift := shiftedStore(t, dialect, noMinimum()) // pr-1 expires in 30 minutes
			tm := db.Manifests().WithTimeMachine(time.Hour)
			gone, pr := manifestOf("window gone"), manifestOf("window pr")
			expires := time.Now().Add(30 * time.Minute).Truncate(time.Second)
			for _, p := range []meta.PutManifest{
				{Repository: "ns/app", Manifest: gone, Tag: "gone"},
				{Repository: "ns/app", Manifest: pr, Tag: "pr-1", ExpiresAt: expires},
			} {
				if err := db.Manifests().PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Manifests().DeleteTag(ctx, "ns/app", "gone", "alice"); err != nil {
				t.Fatal(err)
			}
			listed := func() string {
				t.Helper()
				got, err := tm.DeletedTags(ctx, "ns/app", 10)
				if err != nil {
					t.Fatal(err)
				}
				var names []string
				for _, p := range got {
					names = append(names, p.Tag)
					if p.Tag == "pr-1" && !p.Until.Equal(expires) {
						t.Errorf("pr-1 ended %v, want at its expiration %v", p.Until, expires)
					}
				}
				return strings.Join(names, " ")
			}
			if got := listed(); got != "gone" {
				t.Fatalf("deleted tags within the window: %q, want gone", got)
			}
			shift.Store(int64(2 * time.Hour))
			if got := listed(); got != "pr-1" {
				t.Errorf("deleted tags two hours later: %q, want pr-1 alone (gone left the window, pr-1 expired)", got)
			}
			if err := tm.RestoreTag(ctx, "ns/app", "gone", gone.Digest, "alice"); !errors.Is(err, meta.ErrTagHistoryNotFound) {
				t.Errorf("restore gone past the window: %v, want ErrTagHistoryNotFound", err)
			}
			if err := tm.RestoreTag(ctx, "ns/app", "pr-1", pr.Digest, "alice"); err != nil {
				t.Errorf("restore the expired pr-1: %v", err)
			}
			if got := listed(); got != "" {
				t.Errorf("deleted tags after pr-1's restore: %q, want none", got)
			}
			// Without a window, as Manifests.RestoreTag: gone again.
			if got, err := db.Manifests().DeletedTags(ctx, "ns/app", 10); err != nil || len(got) != 1 || got[0].Tag != "gone" {
				t.Errorf("Manifests.DeletedTags: %+v %v, want gone", got, err)
			}
		})
	}
}
