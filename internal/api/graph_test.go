package api_test

import (
	"context"
	"fmt"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/testenv"
)

// storeGraph is the store's graph, once the environment has made the
// store.
type storeGraph struct{ db *meta.DB }

func (g *storeGraph) Bases(ctx context.Context, repo string, d digest.Digest) ([]meta.GraphBase, error) {
	return g.db.Graph().Bases(ctx, repo, d)
}

func (g *storeGraph) ReadableDependents(ctx context.Context, repo string, d digest.Digest, q meta.DependentsQuery) ([]meta.GraphDependent, bool, error) {
	return g.db.Graph().ReadableDependents(ctx, repo, d, q)
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

// TestDependentsFoundPastUnreadable: a caller who may read one dependent
// of a shared public base finds it past the dependents they may not read
// that come before it (within the dependents one answer reads, 1,000:
// TestDependentsBoundsDecisions), and truncated says whether more may be
// read, not that unreadable ones exist. (Once, the first 5,001
// dependents by name were read, then filtered: a tenant past them got
// none, truncated true. The store's listing is tested on every dialect in
// meta; storing 900 images once is enough here.)
func TestDependentsFoundPastUnreadable(t *testing.T) {
	for _, dialect := range testenv.Dialects()[:1] {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			g := &storeGraph{}
			e := newUREnv(t, dialect, api.Options{Graph: g})
			g.db = e.db
			root := e.user("root", true)
			e.user("zeta", false) // zeta/app is in zeta's own namespace
			e.org("pub", root)
			e.org("aaa", root)
			base := e.repo("pub/base", "public")
			bd := e.image("pub/base", "1", 10)
			link := []meta.BaseLink{{RepositoryID: base.ID, Digest: bd, Method: "layers", Level: 1, Layers: 1}}
			// dependent stores an image in repo, recorded as built on the
			// base (untagged, without an event: only the graph reads them).
			dependent := func(repo string, i int) (digest.Digest, error) {
				content := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"layers":[],"n":"%s %d"}`, oci.MediaTypeImageManifest, repo, i)
				m := meta.Manifest{Digest: digest.FromBytes(content), MediaType: oci.MediaTypeImageManifest, Size: int64(len(content)), Content: content}
				if err := e.db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: m, Generated: true}); err != nil {
					return "", err
				}
				return m.Digest, e.db.Graph().SetBases(ctx, repo, m.Digest, link)
			}
			const hidden = 900
			for i := range 60 {
				e.repo(fmt.Sprintf("aaa/r-%02d", i), "private")
			}
			// Stored by a few writers at once (as many pushes would be).
			var wg sync.WaitGroup
			errs := make(chan error, 2)
			for w := range 2 {
				wg.Go(func() {
					for i := w; i < hidden; i += 2 {
						if _, err := dependent(fmt.Sprintf("aaa/r-%02d", i%60), i); err != nil {
							errs <- err
							return
						}
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Fatal(err)
			}
			e.repo("zeta/app", "private")
			zd, err := dependent("zeta/app", 0)
			if err != nil {
				t.Fatal(err)
			}
			path := "/api/v1/repository/pub/base/manifest/" + bd.String() + "/dependents"
			got := e.want("zeta", "GET", path, nil, 200).obj(t)
			deps, _ := got["dependents"].([]any)
			if len(deps) != 1 || got["truncated"] != false {
				t.Fatalf("zeta's dependents of pub/base: %d, truncated %v; want zeta/app alone, not truncated", len(deps), got["truncated"])
			}
			if dep, _ := deps[0].(map[string]any); dep["repository"] != "zeta/app" || dep["digest"] != zd.String() {
				t.Fatalf("zeta's dependent: %v", dep)
			}
		})
	}
}
