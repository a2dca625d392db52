package meta_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestTagRowsPlatformBasesAndAliases: a multi-platform index shows the
// base of each platform (the first platform's as its base), and each tag
// lists the other tags on its manifest.
func TestTagRowsPlatformBasesAndAliases(t *testing.T) {
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
			bAmd, bArm := manifestOf("base amd64"), manifestOf("base arm64")
			put(meta.PutManifest{Repository: "mirror/base", Manifest: bAmd, Tag: "amd"})
			put(meta.PutManifest{Repository: "mirror/base", Manifest: bArm, Tag: "arm"})
			cAmd, cArm, idx := manifestOf("app amd64"), manifestOf("app arm64"), indexOf("app index")
			put(meta.PutManifest{Repository: "team/app", Manifest: cAmd})
			put(meta.PutManifest{Repository: "team/app", Manifest: cArm})
			refs := []meta.Ref{{Digest: cAmd.Digest, IsManifest: true}, {Digest: cArm.Digest, IsManifest: true}}
			for _, tag := range []string{"v1", "latest", "stable"} {
				put(meta.PutManifest{Repository: "team/app", Manifest: idx, Refs: refs, Tag: tag})
			}
			put(meta.PutManifest{Repository: "team/app", Manifest: manifestOf("other"), Tag: "other"})
			for _, img := range []meta.GraphImage{
				{Repository: "mirror/base", Digest: bAmd.Digest, Platform: "linux/amd64", Chain: chainOf("a")},
				{Repository: "mirror/base", Digest: bArm.Digest, Platform: "linux/arm64", Chain: chainOf("r")},
				{Repository: "team/app", Digest: cAmd.Digest, Platform: "linux/amd64", Chain: chainOf("a", "app")},
				{Repository: "team/app", Digest: cArm.Digest, Platform: "linux/arm64", Chain: chainOf("r", "app")},
			} {
				if err := g.RecordImage(ctx, img); err != nil {
					t.Fatal(err)
				}
			}
			for child, base := range map[*meta.Manifest]meta.Manifest{&cAmd: bAmd, &cArm: bArm} {
				found, err := g.ImagesWithChains(ctx, chainOf(map[string]string{bAmd.Digest.String(): "a", bArm.Digest.String(): "r"}[base.Digest.String()]), 10)
				if err != nil || len(found) != 1 {
					t.Fatalf("base image: %+v %v", found, err)
				}
				link := []meta.BaseLink{{RepositoryID: found[0].RepositoryID, Digest: base.Digest, Method: "layers", Level: 1, Layers: 1}}
				if err := g.SetBases(ctx, "team/app", child.Digest, link); err != nil {
					t.Fatal(err)
				}
			}
			rows, total, err := m.TagRows(ctx, "team/app", meta.TagRowQuery{Sort: meta.SortName, Limit: 10})
			if err != nil || total != 4 {
				t.Fatalf("tag rows: %d %v", total, err)
			}
			byName := map[string]meta.TagRow{}
			for _, r := range rows {
				byName[r.Name] = r
			}
			v1 := byName["v1"]
			if got := fmt.Sprint(v1.PlatformBases); got != "[{linux/amd64 mirror/base:amd mirror/base false} {linux/arm64 mirror/base:arm mirror/base false}]" || v1.Base != "mirror/base:amd" {
				t.Errorf("index bases: %s, base %q", got, v1.Base)
			}
			if fmt.Sprint(v1.Aliases) != "[latest stable]" || fmt.Sprint(byName["latest"].Aliases) != "[stable v1]" || len(byName["other"].Aliases) != 0 {
				t.Errorf("aliases: v1 %v, latest %v, other %v", v1.Aliases, byName["latest"].Aliases, byName["other"].Aliases)
			}
		})
	}
}
