package meta_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestBestCopyRanking: of the copies of a base, the graph's lookups
// return one per depth, ranked for the dependent: the repository its
// base annotation names, then its own namespace, then the copy stored
// first (a pull-through cache organization's copy earns nothing: its
// admins choose the upstream); 150 later copies elsewhere (more than the
// lookups ever read) change nothing.
func TestBestCopyRanking(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			m, g := db.Manifests(), db.Graph()
			u, err := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: "x"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Organizations().CreateOrganization(ctx, "hub", u.ID); err != nil {
				t.Fatal(err)
			}
			if err := db.ProxyCaches().SetProxyCache(ctx, meta.ProxyCache{Namespace: "hub", Upstream: "registry-1.docker.io", ExpirationS: 3600}); err != nil {
				t.Fatal(err)
			}
			osM, rtM := manifestOf("os image"), manifestOf("runtime image")
			osChain, rtChain := chainOf("os"), chainOf("os", "rt")
			store := func(repo string, man meta.Manifest, chain []digest.Digest) {
				t.Helper()
				if err := m.PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: man, Tag: "1"}); err != nil {
					t.Fatal(err)
				}
				if err := g.RecordImage(ctx, meta.GraphImage{Repository: repo, Digest: man.Digest, Platform: "linux/amd64", Chain: chain}); err != nil {
					t.Fatal(err)
				}
			}
			appChain := chainOf("os", "rt", "app")
			expect := func(dependent string, want ...string) {
				t.Helper()
				nodes, err := g.BestWithChains(ctx, dependent, appChain[:2])
				if err != nil {
					t.Fatal(err)
				}
				var got []string
				for _, n := range nodes {
					got = append(got, fmt.Sprintf("%s@%d", n.Repository, n.Layers))
				}
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Fatalf("best copies for %s: %v, want %v", dependent, got, want)
				}
			}
			store("platform/os", osM, osChain)
			store("aaa/rt", rtM, rtChain)
			expect("team/app", "aaa/rt@2", "platform/os@1") // the first stored
			store("hub/library/rt", rtM, rtChain)
			expect("team/app", "aaa/rt@2", "platform/os@1") // not a later pull-through cache's
			store("team_x/rt", rtM, rtChain)                // not team's namespace
			store("team/rt", rtM, rtChain)
			store("rt", rtM, rtChain)                        // a name without a namespace part ranks too
			expect("team/app", "team/rt@2", "platform/os@1") // its own namespace
			expect("other/app", "aaa/rt@2", "platform/os@1")
			expect("hub/app", "hub/library/rt@2", "platform/os@1")
			for i := range 150 {
				store(fmt.Sprintf("aaa/c%03d", i), rtM, rtChain)
				store(fmt.Sprintf("aaa/o%03d", i), osM, osChain)
			}
			expect("team/app", "team/rt@2", "platform/os@1")
			expect("aaa/app", "aaa/rt@2", "aaa/o000@1") // its own namespace, the first stored there
			// By digest: the repository the annotation names, else the best.
			for _, c := range []struct{ dependent, name, want string }{
				{"team/app", "aaa/rt", "aaa/rt"},
				{"team/app", "library/rt", "team/rt"},
				{"other/app", "", "aaa/rt"},
				{"other/app", "team_x/rt", "team_x/rt"},
			} {
				n, ok, err := g.BestByDigest(ctx, rtM.Digest, c.dependent, c.name)
				if err != nil || !ok || n.Repository != c.want || n.Layers != 2 || n.TopChain != rtChain[1] {
					t.Fatalf("best copy by digest for %s naming %q: %+v %v %v, want %s", c.dependent, c.name, n, ok, err, c.want)
				}
			}
		})
	}
}
