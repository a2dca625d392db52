package meta_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

func chainOf(layers ...string) []digest.Digest {
	out := make([]digest.Digest, len(layers))
	for i, l := range layers {
		out[i] = digest.FromString(l) // stand-ins: the store only compares them
	}
	return out
}

func indexOf(s string) meta.Manifest {
	return meta.Manifest{Digest: digest.FromString(s), MediaType: "application/vnd.oci.image.index.v1+json", Content: []byte(s)}
}

// TestGraphStore: a base reached through a tag of an index, its dependents,
// staleness when the tag moves, a dependent built on a base its tag had
// already left, and base_image_updated fired once per dependent and new
// base, never for an untagged dependent.
func TestGraphStore(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			m, g := db.Manifests(), db.Graph()
			put := func(p meta.PutManifest) {
				t.Helper()
				if err := m.PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			// The base: a platform image B1 in index I1, tagged 1.9.
			b1, i1 := manifestOf("base 1"), indexOf("base index 1")
			put(meta.PutManifest{Repository: "mirror/ubi", Manifest: b1})
			put(meta.PutManifest{Repository: "mirror/ubi", Manifest: i1, Refs: []meta.Ref{{Digest: b1.Digest, IsManifest: true}}, Tag: "1.9"})
			public := "public" // events name a base of another namespace only when it is public
			if err := db.Repositories().UpdateRepository(ctx, "mirror/ubi", &public, nil, nil, nil); err != nil {
				t.Fatal(err)
			}
			// The applications: A1 tagged, A0 pushed by digest only.
			a1, a0 := manifestOf("app 1"), manifestOf("app 0")
			put(meta.PutManifest{Repository: "team/app", Manifest: a1, Tag: "v1"})
			put(meta.PutManifest{Repository: "team/app", Manifest: a0})
			baseChain := chainOf("l1", "l2")
			for _, img := range []meta.GraphImage{
				{Repository: "mirror/ubi", Digest: b1.Digest, Platform: "linux/amd64", Chain: baseChain},
				{Repository: "team/app", Digest: a1.Digest, Platform: "linux/amd64", Chain: chainOf("l1", "l2", "app")},
				{Repository: "team/app", Digest: a0.Digest, Platform: "linux/amd64", Chain: chainOf("l1", "l2", "app0")},
			} {
				if err := g.RecordImage(ctx, img); err != nil {
					t.Fatal(err)
				}
				if err := g.RecordImage(ctx, img); err != nil { // twice is harmless
					t.Fatal(err)
				}
			}
			found, err := g.ImagesWithChains(ctx, chainOf("l1", "l2"), 10)
			if err != nil || len(found) != 1 || found[0].Digest != b1.Digest || found[0].Layers != 2 || found[0].Repository != "mirror/ubi" {
				t.Fatalf("images with chains: %+v %v", found, err)
			}
			if child, ok, err := g.ChildFor(ctx, found[0].RepositoryID, i1.Digest, "linux/amd64"); err != nil || !ok || child.Digest != b1.Digest {
				t.Fatalf("child for platform: %+v %v %v", child, ok, err)
			}
			link := []meta.BaseLink{{RepositoryID: found[0].RepositoryID, Digest: b1.Digest, Method: "layers", Level: 1, Layers: 2}}
			for _, a := range []digest.Digest{a1.Digest, a0.Digest} {
				if err := g.SetBases(ctx, "team/app", a, link); err != nil {
					t.Fatal(err)
				}
			}
			bases, err := g.Bases(ctx, "team/app", a1.Digest)
			if err != nil || len(bases) != 1 || bases[0].Tag != "1.9" || bases[0].Top != i1.Digest || bases[0].Moved || bases[0].Repository != "mirror/ubi" {
				t.Fatalf("bases: %+v %v", bases, err)
			}
			deps, err := g.Dependents(ctx, "mirror/ubi", i1.Digest, false, 100)
			if err != nil || len(deps) != 2 || deps[0].Stale {
				t.Fatalf("dependents: %+v %v", deps, err)
			}
			for _, d := range deps {
				if d.Digest == a1.Digest && (len(d.Tags) != 1 || d.Tags[0] != "v1") || d.Digest == a0.Digest && len(d.Tags) != 0 {
					t.Fatalf("dependent tags: %+v", d)
				}
			}
			// Upstream moves 1.9.
			b2, i2 := manifestOf("base 2"), indexOf("base index 2")
			put(meta.PutManifest{Repository: "mirror/ubi", Manifest: b2})
			put(meta.PutManifest{Repository: "mirror/ubi", Manifest: i2, Refs: []meta.Ref{{Digest: b2.Digest, IsManifest: true}}, Tag: "1.9"})
			if bases, _ := g.Bases(ctx, "team/app", a1.Digest); len(bases) != 1 || !bases[0].Moved || bases[0].Current != i2.Digest {
				t.Fatalf("bases after the move: %+v", bases)
			}
			if deps, _ := g.Dependents(ctx, "mirror/ubi", b1.Digest, false, 100); len(deps) != 2 || !deps[0].Stale || !deps[1].Stale {
				t.Fatalf("dependents after the move: %+v", deps)
			}
			mv := meta.BaseMove{Repository: "mirror/ubi", Tag: "1.9", New: i2.Digest, Actor: "mirror",
				Diffs: map[digest.Digest]map[string]any{i1.Digest: {"fixed_vulnerabilities": []string{"CVE-1"}}}}
			if n, err := g.FireBaseMoved(ctx, mv); err != nil || n != 1 {
				t.Fatalf("fired %d, %v; want 1 (the untagged dependent fires nothing)", n, err)
			}
			if n, err := g.FireBaseMoved(ctx, mv); err != nil || n != 0 {
				t.Fatalf("fired again: %d, %v", n, err)
			}
			evs, _ := db.Outbox().EventsAfter(ctx, 0, 100)
			var got []meta.Event
			for _, e := range evs {
				if e.Kind == meta.EventBaseImageUpdated {
					got = append(got, e)
				}
			}
			if len(got) != 1 || got[0].Repository != "team/app" {
				t.Fatalf("events: %+v", got)
			}
			var data struct {
				Digest string   `json:"digest"`
				Tags   []string `json:"tags"`
				Base   struct {
					Repository, Tag, OldDigest, NewDigest string
				} `json:"base"`
				Fixed []string `json:"fixed_vulnerabilities"`
			}
			if err := json.Unmarshal(got[0].Data, &data); err != nil || data.Digest != a1.Digest.String() || len(data.Tags) != 1 ||
				data.Base.Repository != "mirror/ubi" || data.Base.Tag != "1.9" || len(data.Fixed) != 1 {
				t.Fatalf("event data: %s %v", got[0].Data, err)
			}
			var raw map[string]map[string]string
			_ = json.Unmarshal(got[0].Data, &raw)
			if raw["base"]["old_digest"] != i1.Digest.String() || raw["base"]["new_digest"] != i2.Digest.String() {
				t.Fatalf("base of the event: %v", raw["base"])
			}
			// Built later on the base the tag has left: found through the
			// tag's history, stale from the start.
			a2 := manifestOf("app 2")
			put(meta.PutManifest{Repository: "team/late", Manifest: a2, Tag: "v2"})
			if err := g.SetBases(ctx, "team/late", a2.Digest, link); err != nil {
				t.Fatal(err)
			}
			if bases, _ := g.Bases(ctx, "team/late", a2.Digest); len(bases) != 1 || bases[0].Tag != "1.9" || bases[0].Top != i1.Digest || !bases[0].Moved {
				t.Fatalf("bases of a late dependent: %+v", bases)
			}
			// The move back and forth: the late one fires for i2 once too.
			if n, _ := g.FireBaseMoved(ctx, mv); n != 1 {
				t.Fatalf("late dependent fired %d", n)
			}
		})
	}
}

// TestBaseMovedHidesPrivateBase: when a private base moves, an image of
// another namespace built on it (found by its layers) hears that its base
// moved, and nothing more: its payload names neither the base's
// repository, tag and new digest, nor who moved it, nor the base's
// vulnerabilities. An image of the base's own namespace hears it all.
func TestBaseMovedHidesPrivateBase(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			m, g := db.Manifests(), db.Graph()
			put := func(p meta.PutManifest) {
				t.Helper()
				if err := m.PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			b1, own, other := manifestOf("private base 1"), manifestOf("own app"), manifestOf("other app")
			put(meta.PutManifest{Repository: "a/base", Manifest: b1, Tag: "12"}) // private
			put(meta.PutManifest{Repository: "a/app", Manifest: own, Tag: "v1"})
			put(meta.PutManifest{Repository: "b/app", Manifest: other, Tag: "v1"})
			for _, img := range []meta.GraphImage{
				{Repository: "a/base", Digest: b1.Digest, Platform: "linux/amd64", Chain: chainOf("deb1")},
				{Repository: "a/app", Digest: own.Digest, Platform: "linux/amd64", Chain: chainOf("deb1", "own")},
				{Repository: "b/app", Digest: other.Digest, Platform: "linux/amd64", Chain: chainOf("deb1", "other")},
			} {
				if err := g.RecordImage(ctx, img); err != nil {
					t.Fatal(err)
				}
			}
			found, err := g.ImagesWithChains(ctx, chainOf("deb1"), 10)
			if err != nil || len(found) != 1 {
				t.Fatalf("images with chains: %+v %v", found, err)
			}
			link := []meta.BaseLink{{RepositoryID: found[0].RepositoryID, Digest: b1.Digest, Method: "layers", Level: 1, Layers: 1}}
			for _, a := range []struct {
				repo string
				d    digest.Digest
			}{{"a/app", own.Digest}, {"b/app", other.Digest}} {
				if err := g.SetBases(ctx, a.repo, a.d, link); err != nil {
					t.Fatal(err)
				}
			}
			b2 := manifestOf("private base 2")
			put(meta.PutManifest{Repository: "a/base", Manifest: b2, Tag: "12"})
			mv := meta.BaseMove{Repository: "a/base", Tag: "12", New: b2.Digest, Actor: "corp-pusher",
				Diffs: map[digest.Digest]map[string]any{b1.Digest: {"fixed_vulnerabilities": []any{map[string]any{"id": "CVE-PRIVATE-1"}}, "new_vulnerabilities": []any{}, "vulnerabilities_compared": true}}}
			if n, err := g.FireBaseMoved(ctx, mv); err != nil || n != 2 {
				t.Fatalf("fired %d, %v; want 2", n, err)
			}
			evs, _ := db.Outbox().EventsAfter(ctx, 0, 100)
			payloads := map[string]string{}
			for _, e := range evs {
				if e.Kind != meta.EventBaseImageUpdated {
					continue
				}
				p, err := events.QuayPayload(events.Server{Host: "reg.example"}, e)
				if err != nil {
					t.Fatal(err)
				}
				b, _ := json.Marshal(p)
				payloads[e.Repository] = string(b)
			}
			for _, leak := range []string{"a/base", "corp-pusher", "CVE-PRIVATE-1", b2.Digest.String(), `"tag":"12"`} {
				if strings.Contains(payloads["b/app"], leak) {
					t.Errorf("b/app's payload names %s: %s", leak, payloads["b/app"])
				}
			}
			for _, want := range []string{`"repository":"b/app"`, `"old_digest":"` + b1.Digest.String() + `"`, `"actor":""`, `"vulnerabilities_compared":false`} {
				if !strings.Contains(payloads["b/app"], want) {
					t.Errorf("b/app's payload lacks %s: %s", want, payloads["b/app"])
				}
			}
			for _, want := range []string{`"repository":"a/base"`, `"actor":"corp-pusher"`, "CVE-PRIVATE-1", b2.Digest.String()} {
				if !strings.Contains(payloads["a/app"], want) {
					t.Errorf("a/app's payload lacks %s: %s", want, payloads["a/app"])
				}
			}

			// A private mirror holds the upstream's content: it is named,
			// as the rebuilds pin its digests.
			mirror := "MIRROR"
			if err := db.Repositories().UpdateRepository(ctx, "a/base", nil, &mirror, nil, nil); err != nil {
				t.Fatal(err)
			}
			b3 := manifestOf("mirrored base 3")
			put(meta.PutManifest{Repository: "a/base", Manifest: b3, Tag: "12"})
			if n, err := g.FireBaseMoved(ctx, meta.BaseMove{Repository: "a/base", Tag: "12", New: b3.Digest, Actor: "mirror-robot"}); err != nil || n != 2 {
				t.Fatalf("fired %d, %v; want 2", n, err)
			}
			evs, _ = db.Outbox().EventsAfter(ctx, 0, 100)
			last := ""
			for _, e := range evs {
				if e.Kind == meta.EventBaseImageUpdated && e.Repository == "b/app" {
					p, err := events.QuayPayload(events.Server{Host: "reg.example"}, e)
					if err != nil {
						t.Fatal(err)
					}
					b, _ := json.Marshal(p)
					last = string(b)
				}
			}
			for _, want := range []string{`"repository":"a/base"`, `"tag":"12"`, b3.Digest.String()} {
				if !strings.Contains(last, want) {
					t.Errorf("b/app's payload of the mirror's move lacks %s: %s", want, last)
				}
			}
		})
	}
}

// TestGraphBackfillOnUpgrade: the migration that brings the graph queues
// the indexing of every image and index already stored, per repository in
// push order, as the graph's own jobs do.
func TestGraphBackfillOnUpgrade(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			dsn := metatest.DSN(t, dialect)
			db, err := meta.OpenAt(ctx, dsn, 14)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			if err := db.Exec(ctx, "INSERT INTO repositories (name, created_at) VALUES ('acme/app', 1)"); err != nil {
				t.Fatal(err)
			}
			for i, mt := range []string{"application/vnd.oci.image.manifest.v1+json", "application/vnd.oci.image.index.v1+json",
				"application/vnd.cncf.helm.config.v1+json"} {
				if err := db.Exec(ctx, `INSERT INTO manifests (repository_id, digest, media_type, size, content, created_at)
					VALUES ((SELECT id FROM repositories WHERE name = 'acme/app'), ?, ?, 2, ?, ?)`,
					digest.FromString(mt).String(), mt, []byte("{}"), i); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			js, err := db.Jobs().Jobs(ctx, "graph", meta.JobPending, 10)
			if err != nil || len(js) != 2 {
				t.Fatalf("backfill jobs: %+v %v", js, err)
			}
			var first struct{ Kind, Repository, Digest string }
			if err := json.Unmarshal(js[0].Payload, &first); err != nil || first.Kind != "index" || first.Repository != "acme/app" ||
				first.Digest != digest.FromString("application/vnd.oci.image.manifest.v1+json").String() || js[0].OrderingKey != "index|acme/app" {
				t.Fatalf("first job: %+v %s %v", js[0], js[0].Payload, err)
			}
		})
	}
}

// TestGraphIndexImage: an image's chain and its bases are written in one
// transaction: with a base that cannot be recorded, neither is, so that
// the indexing job's retry (which skips an image already indexed) does
// both again.
func TestGraphIndexImage(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			g := db.Graph()
			base, app := manifestOf("base"), manifestOf("app")
			for _, p := range []meta.PutManifest{{Repository: "mirror/ubi", Manifest: base, Tag: "9"}, {Repository: "team/app", Manifest: app}} {
				if err := db.Manifests().PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			if err := g.RecordImage(ctx, meta.GraphImage{Repository: "mirror/ubi", Digest: base.Digest, Platform: "linux/amd64", Chain: chainOf("l1")}); err != nil {
				t.Fatal(err)
			}
			found, err := g.ImagesWithChains(ctx, chainOf("l1"), 10)
			if err != nil || len(found) != 1 {
				t.Fatalf("images with chains: %+v %v", found, err)
			}
			img := meta.GraphImage{Repository: "team/app", Digest: app.Digest, Platform: "linux/amd64", Chain: chainOf("l1", "app")}
			bad := []meta.BaseLink{{RepositoryID: found[0].RepositoryID + 1000, Digest: base.Digest, Method: "layers", Level: 1, Layers: 1}}
			if err := g.IndexImage(ctx, img, bad); err == nil {
				t.Fatal("a base in no repository was recorded")
			}
			if done, err := g.Indexed(ctx, "team/app", app.Digest); err != nil || done {
				t.Fatalf("after the failed write the image is indexed = %v (%v), want false", done, err)
			}
			good := []meta.BaseLink{{RepositoryID: found[0].RepositoryID, Digest: base.Digest, Method: "layers", Level: 1, Layers: 1}}
			if err := g.IndexImage(ctx, img, good); err != nil {
				t.Fatal(err)
			}
			bases, err := g.Bases(ctx, "team/app", app.Digest)
			if err != nil || len(bases) != 1 || bases[0].Tag != "9" || bases[0].Repository != "mirror/ubi" {
				t.Fatalf("bases: %+v %v", bases, err)
			}
			if done, err := g.Indexed(ctx, "team/app", app.Digest); err != nil || !done {
				t.Fatalf("indexed = %v (%v), want true", done, err)
			}
		})
	}
}

// TestDependentsCountsImagesNotRows: a dependent is recorded once per tag
// its base was reached through; asking for n dependents gives n images,
// not n rows (which gave fewer images, and let the API say the list was
// complete when it was cut).
func TestDependentsCountsImagesNotRows(t *testing.T) {
	ctx := context.Background()
	db := metatest.Open(t, "sqlite")
	base := manifestOf("the base")
	for _, tag := range []string{"1", "latest"} {
		if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "library/base", Manifest: base, Tag: tag}); err != nil {
			t.Fatal(err)
		}
	}
	ri, err := db.Repositories().Repository(ctx, "library/base")
	if err != nil {
		t.Fatal(err)
	}
	for _, repo := range []string{"team/a", "team/b", "team/c"} {
		m := manifestOf("built on the base in " + repo)
		if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: m, Tag: "1"}); err != nil {
			t.Fatal(err)
		}
		if err := db.Graph().SetBases(ctx, repo, m.Digest, []meta.BaseLink{{RepositoryID: ri.ID, Digest: base.Digest, Method: "layers", Level: 1, Layers: 1}}); err != nil {
			t.Fatal(err)
		}
	}
	deps, err := db.Graph().Dependents(ctx, "library/base", base.Digest, false, 2)
	if err != nil || len(deps) != 2 || deps[0].Repository != "team/a" || deps[1].Repository != "team/b" {
		t.Fatalf("two dependents asked for: %+v %v", deps, err)
	}
	if all, _ := db.Graph().Dependents(ctx, "library/base", base.Digest, false, 10); len(all) != 3 {
		t.Fatalf("all dependents: %d", len(all))
	}
}
