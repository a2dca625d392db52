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

// TestDeleteExpiredTag: a DELETE of a tag past its expiration finds no
// tag, as a pull by it does: nothing is deleted in the user's name (no
// tag_deleted with the user as actor, no history ending at the DELETE).
// The tag ends as every expired tag does, by the expiry pass: its history
// at its expiration, one tag_deleted "expired".
func TestDeleteExpiredTag(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := openNoMinimum(t, dialect) // a tag that expired already
			orgWithRepo(t, db)
			pr := manifestOf("pr build")
			expires := time.Now().Add(-time.Minute).Truncate(time.Microsecond)
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: pr, Tag: "pr-1", ExpiresAt: expires}); err != nil {
				t.Fatal(err)
			}
			tagDeleted := func() []string {
				t.Helper()
				evs, err := db.Outbox().EventsAfter(ctx, 0, 1000)
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, e := range evs {
					if e.Kind == meta.EventTagDeleted {
						var d map[string]any
						json.Unmarshal(e.Data, &d)
						out = append(out, fmt.Sprintf("tag=%v actor=%s expired=%v", d["tag"], e.Actor, d["expired"]))
					}
				}
				return out
			}

			if err := db.Manifests().DeleteTag(ctx, "acme/app", "pr-1", "alice"); !errors.Is(err, meta.ErrManifestNotFound) {
				t.Fatalf("DELETE of an expired tag: %v, want ErrManifestNotFound", err)
			}
			if got := tagDeleted(); len(got) != 0 {
				t.Fatalf("tag_deleted after the DELETE of an expired tag: %v", got)
			}

			exp, err := db.Manifests().ExpiredTags(ctx, time.Now(), 10)
			if err != nil || len(exp) != 1 || exp[0].Tag != "pr-1" {
				t.Fatalf("the pass does not find the tag: %+v %v", exp, err)
			}
			if ok, err := db.Manifests().ExpireTag(ctx, exp[0], time.Now(), "berth-expiry"); !ok || err != nil {
				t.Fatalf("expire: %v %v", ok, err)
			}
			hist, err := db.Manifests().TagHistory(ctx, "acme/app", "pr-1", 10)
			if err != nil || len(hist) != 1 || hist[0].Digest != pr.Digest || !hist[0].Until.Equal(expires) {
				t.Fatalf("pr-1's history: %+v %v, want one period until %v", hist, err, expires)
			}
			if got := tagDeleted(); len(got) != 1 || got[0] != "tag=pr-1 actor=berth-expiry expired=true" {
				t.Fatalf("tag_deleted events: %v", got)
			}
		})
	}
}
