package meta_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestReadableDependentsReadsPastUnreadable: the dependents a caller may
// read are found however many they may not read come first (by name),
// each once however many tags its base was reached through; truncated
// says only that more readable ones follow, or that the bound on the
// dependents read stopped the search before the end.
func TestReadableDependentsReadsPastUnreadable(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			m, g := db.Manifests(), db.Graph()
			base := manifestOf("shared base")
			// The base is reached through three tags: three rows per
			// dependent, one dependent.
			if err := m.PutManifest(ctx, meta.PutManifest{Repository: "pub/base", Manifest: base, Tag: "1", MoreTags: []string{"1.0", "latest"}}); err != nil {
				t.Fatal(err)
			}
			if err := g.RecordImage(ctx, meta.GraphImage{Repository: "pub/base", Digest: base.Digest, Platform: "linux/amd64", Chain: chainOf("shared")}); err != nil {
				t.Fatal(err)
			}
			found, err := g.ImagesWithChains(ctx, chainOf("shared"), 1)
			if err != nil || len(found) != 1 {
				t.Fatalf("images with chains: %+v %v", found, err)
			}
			link := []meta.BaseLink{{RepositoryID: found[0].RepositoryID, Digest: base.Digest, Method: "layers", Level: 1, Layers: 1}}
			put := func(repo, s string) {
				t.Helper()
				app := manifestOf(s)
				if err := m.PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: app, Tag: "v1"}); err != nil {
					t.Fatal(err)
				}
				if err := g.SetBases(ctx, repo, app.Digest, link); err != nil {
					t.Fatal(err)
				}
			}
			const hidden = 120
			for i := range hidden {
				put(fmt.Sprintf("aaa/r-%d", i%7), fmt.Sprintf("hidden %d", i))
			}
			put("zeta/app", "zeta app")
			put("zeta/tool", "zeta tool")
			asked := 0
			zeta := func(repo string) (bool, error) {
				asked++
				return strings.HasPrefix(repo, "zeta/"), nil
			}
			list := func(q meta.DependentsQuery) ([]string, bool) {
				t.Helper()
				deps, truncated, err := g.ReadableDependents(ctx, "pub/base", base.Digest, q)
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, d := range deps {
					out = append(out, d.Repository+":"+strings.Join(d.Tags, ","))
				}
				return out, truncated
			}
			got, truncated := list(meta.DependentsQuery{N: 5, Readable: zeta})
			if strings.Join(got, " ") != "zeta/app:v1 zeta/tool:v1" || truncated {
				t.Fatalf("zeta's dependents: %v, truncated %v; want zeta/app and zeta/tool, not truncated", got, truncated)
			}
			if asked != hidden+2 {
				t.Errorf("asked %d times whether a dependent may be read, want once per dependent (%d)", asked, hidden+2)
			}
			got, truncated = list(meta.DependentsQuery{N: 1, Readable: zeta})
			if strings.Join(got, " ") != "zeta/app:v1" || !truncated {
				t.Fatalf("zeta's first dependent: %v, truncated %v; want zeta/app, truncated (zeta/tool follows)", got, truncated)
			}
			// The bound: past it the search stops, truncated.
			got, truncated = list(meta.DependentsQuery{N: 5, Readable: zeta, MaxRows: 50})
			if len(got) != 0 || !truncated {
				t.Fatalf("zeta's dependents within 50 read: %v, truncated %v; want none, truncated", got, truncated)
			}
			got, truncated = list(meta.DependentsQuery{N: 5, Readable: zeta, MaxRows: hidden + 2})
			if len(got) != 2 || !truncated {
				t.Fatalf("zeta's dependents within %d read: %v, truncated %v; want both, truncated (the bound was reached)", hidden+2, got, truncated)
			}
			// Everyone's, all at once and by the page of 7.
			all, truncated := list(meta.DependentsQuery{N: 1000})
			if len(all) != hidden+2 || truncated {
				t.Fatalf("all dependents: %d, truncated %v; want %d, not truncated", len(all), truncated, hidden+2)
			}
			if deps, err := g.Dependents(ctx, "pub/base", base.Digest, false, 7); err != nil || len(deps) != 7 {
				t.Fatalf("the first 7 dependents: %d, %v", len(deps), err)
			}
		})
	}
}
