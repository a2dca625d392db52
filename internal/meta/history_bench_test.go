package meta_test

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// BenchmarkTagsPageHistory times the first page of Quay's default tag
// list (the tags' history) in a repository whose tags moved many times
// (BERTH_BENCH_TAG_MOVES, default 20000: 100 tags, each moved between two
// manifests), and the same page narrowed to one tag:
//
//	go test ./internal/meta -run '^$' -bench TagsPageHistory
func BenchmarkTagsPageHistory(b *testing.B) {
	n := 20000
	if v, err := strconv.Atoi(os.Getenv("BERTH_BENCH_TAG_MOVES")); err == nil && v > 0 {
		n = v
	}
	for _, dialect := range metatest.Dialects() {
		b.Run(dialect, func(b *testing.B) {
			ctx := context.Background()
			db := metatest.Open(b, dialect)
			m := db.Manifests()
			x, y := manifestOf("history x"), manifestOf("history y")
			for _, man := range []meta.Manifest{x, y} {
				if err := m.PutManifest(ctx, meta.PutManifest{Repository: "ns/app", Manifest: man, Tag: "seed"}); err != nil {
					b.Fatal(err)
				}
			}
			for i := range n {
				man := x
				if i/100%2 == 1 {
					man = y
				}
				if err := m.MoveTag(ctx, "ns/app", fmt.Sprintf("t%d", i%100), man.Digest, "bench"); err != nil {
					b.Fatal(err)
				}
			}
			if dialect == "postgres" {
				// What autovacuum does on a live database: without the
				// statistics the planner expects one row and sorts them all.
				if err := db.Exec(ctx, "ANALYZE"); err != nil {
					b.Fatal(err)
				}
			}
			for _, q := range []meta.TagQuery{{History: true, Limit: 51}, {History: true, Name: "t42", Limit: 51}} {
				b.Run(map[bool]string{true: "all", false: "one tag"}[q.Name == ""], func(b *testing.B) {
					for b.Loop() {
						if page, err := m.TagsPage(ctx, "ns/app", q); err != nil || len(page) != 51 {
							b.Fatalf("%d periods, %v", len(page), err)
						}
					}
				})
			}
		})
	}
}
