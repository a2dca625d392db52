package meta_test

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestReadableDependentsPages: a listing of dependents goes on from where
// the one before stopped (DependentsPage.Next, passed as
// DependentsQuery.After), whether it stopped at N readable dependents or
// at MaxRows dependents read, and every dependent is listed once across
// the pages: one built on two platforms of an index at two levels once,
// at the lower level, even when the two fall on different pages.
func TestReadableDependentsPages(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			metatest.Orgs(t, db, "pub", "aaa", "bbb", "ccc")
			m, g := db.Manifests(), db.Graph()
			put := func(p meta.PutManifest) {
				t.Helper()
				if err := m.PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			// The base: an index of two platforms.
			b1, b2, idx := manifestOf("page base 1"), manifestOf("page base 2"), indexOf("page base index")
			put(meta.PutManifest{Repository: "pub/base", Manifest: b1})
			put(meta.PutManifest{Repository: "pub/base", Manifest: b2})
			put(meta.PutManifest{Repository: "pub/base", Manifest: idx, Tag: "1",
				Refs: []meta.Ref{{Digest: b1.Digest, IsManifest: true}, {Digest: b2.Digest, IsManifest: true}}})
			base, err := db.Repositories().Repository(ctx, "pub/base")
			if err != nil {
				t.Fatal(err)
			}
			on := func(d digest.Digest, level int) meta.BaseLink {
				return meta.BaseLink{RepositoryID: base.ID, Digest: d, Method: "layers", Level: level, Layers: level}
			}
			dependent := func(repo string, links ...meta.BaseLink) {
				t.Helper()
				app := manifestOf("page dependent " + repo)
				put(meta.PutManifest{Repository: repo, Manifest: app, Tag: "v1"})
				if err := g.SetBases(ctx, repo, app.Digest, links); err != nil {
					t.Fatal(err)
				}
			}
			var want []string
			for i := range 10 {
				dependent(fmt.Sprintf("aaa/r-%d", i), on(b1.Digest, 1))
				want = append(want, fmt.Sprintf("1:aaa/r-%d", i))
			}
			// aaa/x is built on both platforms, at two levels: listed once,
			// at level 1, though its level-2 row comes pages later.
			dependent("aaa/x", on(b1.Digest, 1), on(b2.Digest, 2))
			want = append(want, "1:aaa/x")
			for i := range 4 {
				dependent(fmt.Sprintf("ccc/z-%d", i), on(b2.Digest, 1))
				want = append(want, fmt.Sprintf("1:ccc/z-%d", i))
			}
			dependent("bbb/y", on(b1.Digest, 2))
			want = append(want, "2:bbb/y")

			// pages lists every page of q, from the start.
			pages := func(q meta.DependentsQuery) ([]string, int) {
				t.Helper()
				var got []string
				n := 0
				for {
					n++
					p, err := g.ReadableDependentsPage(ctx, "pub/base", idx.Digest, q)
					if err != nil {
						t.Fatal(err)
					}
					for _, d := range p.Dependents {
						got = append(got, fmt.Sprintf("%d:%s", d.Base.Level, d.Repository))
					}
					if !p.More {
						if p.Next != (meta.DependentsPosition{}) {
							t.Errorf("the last page has a next position: %+v", p.Next)
						}
						return got, n
					}
					if p.Next == (meta.DependentsPosition{}) || p.Next == q.After {
						t.Fatalf("page %d: more, but next %+v does not go on from %+v", n, p.Next, q.After)
					}
					if n > 40 {
						t.Fatalf("no end after %d pages: %v", n, got)
					}
					q.After = p.Next
				}
			}
			all := strings.Join(want, " ")
			for _, q := range []meta.DependentsQuery{
				{Transitive: true, N: 100},
				{Transitive: true, N: 2},
				{Transitive: true, N: 1},
				{Transitive: true, N: 100, MaxRows: 3},
				{Transitive: true, N: 100, MaxRows: 1},
			} {
				if got, n := pages(q); strings.Join(got, " ") != all {
					t.Errorf("N %d, MaxRows %d: %d pages list %v; want %v", q.N, q.MaxRows, n, got, want)
				}
			}
			// Only level 1, and only what the caller may read.
			direct := strings.Join(want[:len(want)-1], " ")
			if got, _ := pages(meta.DependentsQuery{N: 2, MaxRows: 3}); strings.Join(got, " ") != direct {
				t.Errorf("direct dependents, by pages: %v; want %v", got, direct)
			}
			asked := 0
			notAAA := func(repo string) (bool, error) { asked++; return !strings.HasPrefix(repo, "aaa/"), nil }
			got, n := pages(meta.DependentsQuery{Transitive: true, N: 1, MaxRows: 4, Readable: notAAA})
			if strings.Join(got, " ") != "1:ccc/z-0 1:ccc/z-1 1:ccc/z-2 1:ccc/z-3 2:bbb/y" {
				t.Errorf("the dependents outside aaa, by pages: %v", got)
			}
			if asked > len(want)+n {
				t.Errorf("asked %d times over %d pages whether a dependent may be read; want once per dependent read and one more per page at most", asked, n)
			}
		})
	}
}
