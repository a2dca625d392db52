package api_test

import (
	"context"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
)

// storeGraph is the store's graph, once the environment has made the
// store.
type storeGraph struct{ db *meta.DB }

func (g *storeGraph) Bases(ctx context.Context, repo string, d digest.Digest) ([]meta.GraphBase, error) {
	return g.db.Graph().Bases(ctx, repo, d)
}

func (g *storeGraph) Dependents(ctx context.Context, repo string, d digest.Digest, transitive bool, n int) ([]meta.GraphDependent, error) {
	return g.db.Graph().Dependents(ctx, repo, d, transitive, n)
}

// TestTransitiveDependentHidesPrivateBaseMove: a readable image listed
// among the transitive dependents of a readable base is stale only for a
// caller who may read its immediate base: for one who may not, stale
// would tell that the private base's tag moved. Before, stale was
// answered to all.
func TestTransitiveDependentHidesPrivateBaseMove(t *testing.T) {
	for _, dialect := range testenv.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			g := &storeGraph{}
			e := newUREnv(t, dialect, api.Options{Graph: g})
			g.db = e.db
			root := e.user("root", true)
			e.user("alice", false)
			for _, ns := range []string{"x", "corp", "team"} {
				e.org(ns, root)
			}
			base := e.repo("x/base", "public")
			runtime := e.repo("corp/runtime", "private")
			e.repo("team/app", "public")
			bd := e.image("x/base", "1", 10)
			rd := e.image("corp/runtime", "1", 10)
			ad := e.image("team/app", "v1", 10)
			if err := e.db.Graph().SetBases(ctx, "team/app", ad, []meta.BaseLink{
				{RepositoryID: runtime.ID, Digest: rd, Method: "layers", Level: 1, Layers: 2},
				{RepositoryID: base.ID, Digest: bd, Method: "layers", Level: 2, Layers: 1},
			}); err != nil {
				t.Fatal(err)
			}
			// The private runtime's tag moves.
			e.image("corp/runtime", "1", 11)
			path := "/api/v1/repository/x/base/manifest/" + bd.String() + "/dependents?transitive=true"
			for _, c := range []struct {
				as    string
				stale bool
			}{{"alice", false}, {"root", true}} {
				deps, _ := e.want(c.as, "GET", path, nil, 200).obj(t)["dependents"].([]any)
				if len(deps) != 1 {
					t.Fatalf("dependents as %s: %v", c.as, deps)
				}
				dep, _ := deps[0].(map[string]any)
				if dep["repository"] != "team/app" || dep["level"] != float64(2) || dep["stale"] != c.stale {
					t.Fatalf("dependent as %s: %v, want stale %v", c.as, dep, c.stale)
				}
			}
		})
	}
}
