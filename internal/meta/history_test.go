package meta_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestTagHistory: every move of a tag starts a period and ends the one
// before, deletes end it, and repo_push says where each moved tag was.
func TestTagHistory(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			a, b := manifestOf("history a"), manifestOf("history b")
			for _, p := range []meta.PutManifest{
				{Repository: "ns/app", Manifest: a, Tag: "1.9", MoreTags: []string{"latest"}},
				{Repository: "ns/app", Manifest: b, Tag: "1.9"},
				{Repository: "ns/app", Manifest: b, Tag: "1.9"}, // no move: no period
			} {
				if err := db.Manifests().PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Manifests().MoveTag(ctx, "ns/app", "latest", b.Digest, "alice"); err != nil {
				t.Fatal(err)
			}
			hist, err := db.Manifests().TagHistory(ctx, "ns/app", "1.9", 10)
			if err != nil || len(hist) != 2 {
				t.Fatalf("history of 1.9: %+v %v", hist, err)
			}
			if hist[0].Digest != b.Digest || !hist[0].Until.IsZero() || hist[1].Digest != a.Digest || hist[1].Until.IsZero() ||
				hist[1].Until.After(hist[0].From) {
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
			if hist, _ := db.Manifests().TagHistory(ctx, "ns/app", "1.9", 10); len(hist) != 2 || hist[0].Until.IsZero() {
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
