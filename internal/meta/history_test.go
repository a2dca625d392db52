package meta_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestTagHistory: every move of a tag, and every push of it again, starts
// a period and ends the one before, deletes end it, and repo_push says
// where each moved tag was.
func TestTagHistory(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			a, b := manifestOf("history a"), manifestOf("history b")
			for _, p := range []meta.PutManifest{
				{Repository: "ns/app", Manifest: a, Tag: "1.9", MoreTags: []string{"latest"}},
				{Repository: "ns/app", Manifest: b, Tag: "1.9"},
				{Repository: "ns/app", Manifest: b, Tag: "1.9"}, // pushed again: a new period, as in Quay
			} {
				if err := db.Manifests().PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Manifests().MoveTag(ctx, "ns/app", "latest", b.Digest, "alice"); err != nil {
				t.Fatal(err)
			}
			hist, err := db.Manifests().TagHistory(ctx, "ns/app", "1.9", 10)
			if err != nil || len(hist) != 3 {
				t.Fatalf("history of 1.9: %+v %v", hist, err)
			}
			if hist[0].Digest != b.Digest || !hist[0].Until.IsZero() || hist[1].Digest != b.Digest || hist[1].Until.IsZero() ||
				hist[1].Until.After(hist[0].From) || hist[2].Digest != a.Digest || hist[2].Until.IsZero() || hist[2].Until.After(hist[1].From) {
				t.Fatalf("history of 1.9: %+v", hist)
			}
			// The pushes announce where the moved tags were.
			evs, err := db.Outbox().EventsAfter(ctx, 0, 100)
			if err != nil {
				t.Fatal(err)
			}
			var prev []map[string]string
			for _, e := range evs {
				var d struct {
					Previous map[string]string `json:"previous"`
				}
				if e.Kind == meta.EventRepoPush && json.Unmarshal(e.Data, &d) == nil {
					prev = append(prev, d.Previous)
				}
			}
			if len(prev) != 3 || prev[0] != nil || prev[1]["1.9"] != a.Digest.String() || prev[2]["latest"] != a.Digest.String() {
				t.Fatalf("previous digests in repo_push: %v", prev)
			}
			if err := db.Manifests().DeleteTag(ctx, "ns/app", "latest", "alice"); err != nil {
				t.Fatal(err)
			}
			if hist, _ := db.Manifests().TagHistory(ctx, "ns/app", "latest", 10); len(hist) != 2 || hist[0].Until.IsZero() {
				t.Fatalf("history of a deleted tag: %+v", hist)
			}
			// Deleting the manifest ends the periods of its tags.
			if err := db.Manifests().DeleteManifest(ctx, "ns/app", b.Digest, "alice"); err != nil {
				t.Fatal(err)
			}
			if hist, _ := db.Manifests().TagHistory(ctx, "ns/app", "1.9", 10); len(hist) != 3 || hist[0].Until.IsZero() {
				t.Fatalf("history after the manifest's delete: %+v", hist)
			}
		})
	}
}

// TestDeletedTags: the tags gone from a repository whose last manifest is
// still stored, the most recently deleted first; a tag pushed again, or
// whose manifest went, is not listed.
func TestDeletedTags(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			a, b := manifestOf("deleted a"), manifestOf("deleted b")
			for _, p := range []meta.PutManifest{
				{Repository: "ns/app", Manifest: a, Tag: "old", MoreTags: []string{"back", "gone"}},
				{Repository: "ns/app", Manifest: b, Tag: "old"}, // old moves to b, then is deleted
			} {
				if err := db.Manifests().PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			for _, tag := range []string{"gone", "old", "back"} {
				if err := db.Manifests().DeleteTag(ctx, "ns/app", tag, "alice"); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Manifests().MoveTag(ctx, "ns/app", "back", a.Digest, "alice"); err != nil {
				t.Fatal(err)
			}
			got, err := db.Manifests().DeletedTags(ctx, "ns/app", 10)
			if err != nil {
				t.Fatal(err)
			}
			var names []string
			for _, p := range got {
				names = append(names, p.Tag+"@"+p.Digest.String()[7:11])
				if p.Until.IsZero() || p.Until.Before(p.From) {
					t.Errorf("period %+v", p)
				}
			}
			want := []string{"old@" + b.Digest.String()[7:11], "gone@" + a.Digest.String()[7:11]}
			if strings.Join(names, " ") != strings.Join(want, " ") {
				t.Fatalf("deleted tags %v, want %v (newest first, each at its last manifest, not the one pushed again)", names, want)
			}
			if got, _ := db.Manifests().DeletedTags(ctx, "ns/app", 1); len(got) != 1 || got[0].Tag != "old" {
				t.Fatalf("limit 1: %+v", got)
			}
			if got, err := db.Manifests().DeletedTags(ctx, "ns/none", 10); err != nil || len(got) != 0 {
				t.Fatalf("unknown repository: %+v %v", got, err)
			}
		})
	}
}

// TestTagsPageHistory: TagsPage's history lists every period of every tag
// whose manifest is still stored, newest first, ended ones with Until, a
// restore's with Reversion, the live one with its expiration; Contains
// matches part of a name in any case, literally.
func TestTagsPageHistory(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := openNoMinimum(t, dialect) // Build_1 expires in an hour (less, from its start)
			m := db.Manifests()
			a, b, c := manifestOf("page a"), manifestOf("page b"), manifestOf("page c")
			for _, p := range []meta.PutManifest{
				{Repository: "ns/app", Manifest: a, Tag: "Build_1"},
				{Repository: "ns/app", Manifest: b, Tag: "Build_1"},
				{Repository: "ns/app", Manifest: c, Tag: "build-2"},
			} {
				if err := m.PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			if err := m.DeleteTag(ctx, "ns/app", "build-2", "alice"); err != nil {
				t.Fatal(err)
			}
			if err := m.RestoreTag(ctx, "ns/app", "Build_1", a.Digest, "alice"); err != nil {
				t.Fatal(err)
			}
			expires := time.Now().Add(time.Hour).Truncate(time.Second)
			if err := m.SetTagExpiration(ctx, "ns/app", "Build_1", expires); err != nil {
				t.Fatal(err)
			}
			show := func(q meta.TagQuery) string {
				t.Helper()
				q.Limit = 10
				page, err := m.TagsPage(ctx, "ns/app", q)
				if err != nil {
					t.Fatal(err)
				}
				var s []string
				for _, ti := range page {
					p := ti.Name + "@" + ti.Digest.String()[7:11]
					if !ti.Until.IsZero() {
						if ti.Until.Before(ti.UpdatedAt) {
							t.Errorf("%s ended before it began: %+v", p, ti)
						}
						p += " ended"
					}
					if ti.Reversion {
						p += " restored"
					}
					if ti.ExpiresAt.Equal(expires) {
						p += " expiring"
					}
					s = append(s, p)
				}
				return strings.Join(s, ", ")
			}
			short := func(d digest.Digest) string { return d.String()[7:11] }
			for _, tc := range []struct {
				q    meta.TagQuery
				want string
			}{
				{meta.TagQuery{History: true}, "Build_1@" + short(a.Digest) + " restored expiring, build-2@" + short(c.Digest) + " ended, Build_1@" +
					short(b.Digest) + " ended, Build_1@" + short(a.Digest) + " ended"},
				{meta.TagQuery{}, "Build_1@" + short(a.Digest) + " restored expiring"},
				{meta.TagQuery{History: true, Name: "build-2"}, "build-2@" + short(c.Digest) + " ended"},
				{meta.TagQuery{History: true, Contains: "D-"}, "build-2@" + short(c.Digest) + " ended"},
				{meta.TagQuery{History: true, Contains: "d_", Offset: 1}, "Build_1@" + short(b.Digest) + " ended, Build_1@" + short(a.Digest) + " ended"},
				{meta.TagQuery{History: true, Contains: "%"}, ""},
			} {
				if got := show(tc.q); got != tc.want {
					t.Errorf("%+v: %s, want %s", tc.q, got, tc.want)
				}
			}
			// A period whose manifest is gone is not listed: nothing can
			// restore it.
			if err := m.DeleteManifest(ctx, "ns/app", c.Digest, "alice"); err != nil {
				t.Fatal(err)
			}
			if got := show(meta.TagQuery{History: true, Name: "build-2"}); got != "" {
				t.Errorf("build-2 after its manifest's delete: %s", got)
			}
		})
	}
}
