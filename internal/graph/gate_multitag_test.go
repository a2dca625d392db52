package graph_test

import (
	"compress/gzip"
	"context"
	"strings"
	"testing"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestGateBaseStaleThroughAnyTag: berth/base fails when any tag the
// candidate's base was reached through has moved on, not only the first
// in the graph's order: a base tagged :0 and :1 whose :1 moved, and an
// index one of whose platforms is built on a base that moved. The base
// shown is the one that moved. Before, the gate read the first level-1
// base only (team/base:0, the first platform's base): once its check
// passed, the candidate passed berth/base too and was promoted while the
// graph's bases said moved.
func TestGateBaseStaleThroughAnyTag(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect)
			f := newFeed(e, 0)
			old := image(t, nil, "linux/amd64", layer(t, "os 1", gzip.BestSpeed))
			e.push("team/base:0", old)
			e.push("team/base:1", old)
			current := image(t, nil, "linux/amd64", layer(t, "a os", gzip.BestSpeed))
			e.push("team/abase:1", current)
			stale := image(t, nil, "linux/arm64", layer(t, "z os 1", gzip.BestSpeed))
			e.push("team/zbase:1", stale)
			e.push("team/app:scratch", image(t, nil, "linux/amd64", layer(t, "scratch", gzip.BestSpeed)))
			f.run()
			g := newGated(t, e, f, "team/app", `{"tags":["prod"],"required_checks":["berth/base","e2e"]}`)
			// A candidate built on team/base, indexed while both tags
			// point at it, waits for its e2e check...
			app := e.push("team/app:prod", image(t, old, "", layer(t, "app", gzip.BestSpeed)))
			f.run()
			g.subscriber()
			if c := g.candidate("team/app"); c.State != meta.CandidatePending {
				t.Fatalf("before e2e: %s %q", c.State, c.Reasons)
			}
			// ... while :1 moves on; :0 stays.
			e.push("team/base:1", image(t, nil, "linux/amd64", layer(t, "os 2", gzip.BestSpeed)))
			f.run()
			g.subscriber()
			bases, err := e.db.Graph().Bases(ctx, "team/app", app)
			if err != nil {
				t.Fatal(err)
			}
			moved := false
			for _, b := range bases {
				moved = moved || b.Level == 1 && b.Moved
			}
			if !moved {
				t.Fatalf("the graph does not say the base moved: %+v", bases)
			}
			pass := func(d digest.Digest) {
				t.Helper()
				if err := e.db.Gates().PostCheck(ctx, "team/app", d, meta.Check{Name: "e2e", Status: "pass", Actor: "ci"}); err != nil {
					t.Fatal(err)
				}
				g.subscriber()
			}
			pass(app)
			c := g.candidate("team/app")
			if c.State != meta.CandidateBlocked || len(c.Reasons) != 1 ||
				!strings.HasPrefix(c.Reasons[0], `check "berth/base" failed: built on reg.example/team/base:1 (`) {
				t.Fatalf("built on team/base:0 and :1, :1 moved: %s %q", c.State, c.Reasons)
			}

			// An index: its amd64 platform is built on team/abase:1, which
			// stays; its arm64 platform on team/zbase:1, which moves on.
			idx := mutate.AppendManifests(mutate.IndexMediaType(empty.Index, types.OCIImageIndex),
				mutate.IndexAddendum{Add: image(t, current, "", layer(t, "app amd64", gzip.BestSpeed)),
					Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "amd64"}}},
				mutate.IndexAddendum{Add: image(t, stale, "", layer(t, "app arm64", gzip.BestSpeed)),
					Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: "arm64"}}})
			id := e.push("team/app:prod", idx)
			f.run()
			g.subscriber()
			e.push("team/zbase:1", image(t, nil, "linux/arm64", layer(t, "z os 2", gzip.BestSpeed)))
			f.run()
			g.subscriber()
			pass(id)
			c = g.candidate("team/app")
			if c.Digest != id || c.State != meta.CandidateBlocked || len(c.Reasons) != 1 ||
				!strings.HasPrefix(c.Reasons[0], `check "berth/base" failed: built on reg.example/team/zbase:1 (`) {
				t.Fatalf("an index whose arm64 base moved: %s %q", c.State, c.Reasons)
			}
		})
	}
}
