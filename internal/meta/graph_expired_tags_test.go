package meta_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestExpiredTagsAreNotTagged: a tag past its expiration is gone, though
// its row stays until a pass deletes it. An image whose only tag expired
// is no longer tagged: a move of its base fires no base_image_updated for
// it (nor counts its base among those to compare), and the dependents
// list it without tags; an image with a live tag and an expired one hears
// of its base's move, and the event lists the live tag only. The
// repositories holding a manifest (the scanner's manifest_scanned and
// vulnerability_found tags) list its live tags only.
func TestExpiredTagsAreNotTagged(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := openNoMinimum(t, dialect) // expirations in the past
			m, g := db.Manifests(), db.Graph()
			put := func(p meta.PutManifest) {
				t.Helper()
				if err := m.PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			// The base: latest and edge, each on an image of its own.
			latest1, edge1 := manifestOf("base latest 1"), manifestOf("base edge 1")
			put(meta.PutManifest{Repository: "acme/base", Manifest: latest1, Tag: "latest"})
			put(meta.PutManifest{Repository: "acme/base", Manifest: edge1, Tag: "edge"})
			// pr-42 built FROM base:latest; v1 (also tagged pr-7) FROM base:edge.
			pr, v1 := manifestOf("app pr-42"), manifestOf("app v1")
			put(meta.PutManifest{Repository: "acme/app", Manifest: pr, Tag: "pr-42"})
			put(meta.PutManifest{Repository: "acme/app", Manifest: v1, Tag: "v1", MoreTags: []string{"pr-7"}})
			for _, img := range []meta.GraphImage{
				{Repository: "acme/base", Digest: latest1.Digest, Platform: "linux/amd64", Chain: chainOf("l1")},
				{Repository: "acme/base", Digest: edge1.Digest, Platform: "linux/amd64", Chain: chainOf("e1")},
				{Repository: "acme/app", Digest: pr.Digest, Platform: "linux/amd64", Chain: chainOf("l1", "pr")},
				{Repository: "acme/app", Digest: v1.Digest, Platform: "linux/amd64", Chain: chainOf("e1", "v1")},
			} {
				if err := g.RecordImage(ctx, img); err != nil {
					t.Fatal(err)
				}
			}
			found, err := g.ImagesWithChains(ctx, chainOf("l1"), 10)
			if err != nil || len(found) != 1 {
				t.Fatalf("the base: %+v %v", found, err)
			}
			baseID := found[0].RepositoryID
			for dep, base := range map[digest.Digest]digest.Digest{pr.Digest: latest1.Digest, v1.Digest: edge1.Digest} {
				if err := g.SetBases(ctx, "acme/app", dep, []meta.BaseLink{{RepositoryID: baseID, Digest: base, Method: "layers", Level: 1, Layers: 1}}); err != nil {
					t.Fatal(err)
				}
			}
			// pr-42 and pr-7 expire.
			past := time.Now().Add(-time.Minute)
			for _, tag := range []string{"pr-42", "pr-7"} {
				if err := m.SetTagExpiration(ctx, "acme/app", tag, past); err != nil {
					t.Fatal(err)
				}
			}

			deps, err := g.Dependents(ctx, "acme/base", latest1.Digest, false, 10)
			if err != nil || len(deps) != 1 || len(deps[0].Tags) != 0 || len(deps[0].Tagged) != 0 {
				t.Fatalf("dependents of base:latest: %+v %v; want pr-42's image, untagged", deps, err)
			}
			// base:latest moves: pr-42's image is tagged no more.
			latest2 := manifestOf("base latest 2")
			put(meta.PutManifest{Repository: "acme/base", Manifest: latest2, Tag: "latest"})
			mv := meta.BaseMove{Repository: "acme/base", Tag: "latest", New: latest2.Digest, Actor: "alice"}
			if bases, err := g.DependentBases(ctx, mv, 10); err != nil || len(bases) != 0 {
				t.Fatalf("bases to compare for the move of latest: %v %v; want none (its dependent's only tag expired)", bases, err)
			}
			if n, err := g.FireBaseMoved(ctx, mv); err != nil || n != 0 {
				t.Fatalf("fired %d for the move of latest, %v; want 0", n, err)
			}
			if got := baseImageUpdated(t, db); len(got) != 0 {
				t.Fatalf("base_image_updated for an image whose only tag expired: %v", got)
			}
			// base:edge moves: v1's image is tagged v1 (pr-7 expired).
			edge2 := manifestOf("base edge 2")
			put(meta.PutManifest{Repository: "acme/base", Manifest: edge2, Tag: "edge"})
			mv = meta.BaseMove{Repository: "acme/base", Tag: "edge", New: edge2.Digest, Actor: "alice"}
			if n, err := g.FireBaseMoved(ctx, mv); err != nil || n != 1 {
				t.Fatalf("fired %d for the move of edge, %v; want 1", n, err)
			}
			if got := baseImageUpdated(t, db); len(got) != 1 || got[0] != v1.Digest.String()+" [v1]" {
				t.Fatalf("base_image_updated: %v; want v1's image with its live tag only", got)
			}

			holders, err := db.Scans().ManifestHolders(ctx, v1.Digest.String())
			if err != nil || len(holders) != 1 || holders[0].Repository != "acme/app" || !slices.Equal(holders[0].Tags, []string{"v1"}) {
				t.Fatalf("holders of v1's image: %+v %v; want acme/app with v1 only", holders, err)
			}
			holders, err = db.Scans().ManifestHolders(ctx, pr.Digest.String())
			if err != nil || len(holders) != 1 || holders[0].Repository != "acme/app" || len(holders[0].Tags) != 0 {
				t.Fatalf("holders of pr-42's image: %+v %v; want acme/app without tags", holders, err)
			}
		})
	}
}

// baseImageUpdated lists the base_image_updated events: digest and tags.
func baseImageUpdated(t *testing.T, db *meta.DB) []string {
	t.Helper()
	evs, err := db.Outbox().EventsAfter(context.Background(), 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range evs {
		if e.Kind != meta.EventBaseImageUpdated {
			continue
		}
		var data struct {
			Digest string   `json:"digest"`
			Tags   []string `json:"tags"`
		}
		if err := json.Unmarshal(e.Data, &data); err != nil {
			t.Fatal(err)
		}
		out = append(out, data.Digest+" ["+strings.Join(data.Tags, " ")+"]")
	}
	return out
}

// TestLostScanListsLiveTags: the manifest_scanned a claim announces for a
// scan lost on its last attempt lists the manifest's live tags, not one
// past its expiration.
func TestLostScanListsLiveTags(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := openNoMinimum(t, dialect)
			m := manifestOf("lost scan, expired tag")
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: m, Tag: "1.0", MoreTags: []string{"pr-1"}}); err != nil {
				t.Fatal(err)
			}
			if err := db.Manifests().SetTagExpiration(ctx, "acme/app", "pr-1", time.Now().Add(-time.Minute)); err != nil {
				t.Fatal(err)
			}
			d := m.Digest.String()
			if err := db.Scans().EnqueueScan(ctx, "acme/app", d); err != nil {
				t.Fatal(err)
			}
			for attempt := 1; attempt <= meta.DefaultJobMaxAttempts; attempt++ {
				if _, ok, err := db.Jobs().ClaimJob(ctx, meta.ScanQueue, "crashing", time.Millisecond); err != nil || !ok {
					t.Fatalf("attempt %d: %v %v", attempt, ok, err)
				}
				time.Sleep(3 * time.Millisecond) // the worker dies: its lease runs out
			}
			if _, ok, err := db.Jobs().ClaimJob(ctx, meta.ScanQueue, "rescuer", time.Minute); err != nil || ok {
				t.Fatalf("the lost job was claimed again: %v %v", ok, err)
			}
			evs, err := db.Outbox().EventsAfter(ctx, 0, 1000)
			if err != nil {
				t.Fatal(err)
			}
			var tags [][]string
			for _, e := range evs {
				if e.Kind == meta.EventManifestScanned {
					var data struct{ Tags []string }
					if err := json.Unmarshal(e.Data, &data); err != nil {
						t.Fatal(err)
					}
					tags = append(tags, data.Tags)
				}
			}
			if len(tags) != 1 || !slices.Equal(tags[0], []string{"1.0"}) {
				t.Fatalf("tags of the lost scan's manifest_scanned: %v; want [1.0] (pr-1 expired)", tags)
			}
		})
	}
}
