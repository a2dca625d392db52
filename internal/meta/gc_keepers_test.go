package meta_test

import (
	"slices"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestManifestGCKeepersHeldParents: the indexes that list a manifest come
// apart, readable and held, so that the report to a reader leaves the
// held ones out.
func TestManifestGCKeepersHeldParents(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newGateEnv(t, dialect)
			platform := manifestOf("a platform published before the candidate")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: platform, Tag: "latest"})
			published := indexOf("a published index")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: published, Tag: "latest-multi",
				Refs: []meta.Ref{{Digest: platform.Digest, IsManifest: true}}})
			candidate := indexOf("a candidate index listing the platform")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: candidate, Tag: "15-alpine",
				Refs: []meta.Ref{{Digest: platform.Digest, IsManifest: true}}})
			if !e.manifest(candidate.Digest).Held || e.manifest(platform.Digest).Held {
				t.Fatal("the candidate is not held, or the published platform is")
			}
			k, err := e.db.Collector().ManifestGCKeepers(e.ctx, "mirror/node", platform.Digest)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(k.Parents, []digest.Digest{published.Digest}) || !slices.Equal(k.HeldParents, []digest.Digest{candidate.Digest}) {
				t.Fatalf("parents %v, held parents %v", k.Parents, k.HeldParents)
			}
		})
	}
}

// TestManifestGCKeepersCachedUntil: a manifest no tag keeps in a proxy
// cache organization's repository is kept by the cache until the
// organization's expiration after it was stored, as DanglingManifests
// decides; in an organization whose name only starts with the proxy
// cache's, it is not.
func TestManifestGCKeepersCachedUntil(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := &gateEnv{t: t, ctx: t.Context(), db: metatest.Open(t, dialect)}
			ctx, db := e.ctx, e.db
			owner := e.account("alice", "")
			for _, org := range []string{"hub", "hubx", "quick"} {
				if _, err := db.Organizations().CreateOrganization(ctx, org, owner); err != nil {
					t.Fatal(err)
				}
			}
			for org, exp := range map[string]int64{"hub": 3600, "quick": 1} {
				if err := db.ProxyCaches().SetProxyCache(ctx, meta.ProxyCache{Namespace: org, Upstream: "docker.io", ExpirationS: exp, CreatedBy: "alice"}); err != nil {
					t.Fatal(err)
				}
			}
			keepers := func(repo string, m meta.Manifest) meta.ManifestKeepers {
				t.Helper()
				k, err := db.Collector().ManifestGCKeepers(ctx, repo, m.Digest)
				if err != nil {
					t.Fatal(err)
				}
				return k
			}
			dangling := func(m meta.Manifest) bool {
				t.Helper()
				ds, err := db.Collector().DanglingManifests(ctx, time.Now().Add(time.Hour), 1000)
				if err != nil {
					t.Fatal(err)
				}
				return slices.ContainsFunc(ds, func(c meta.GCCandidate) bool { return c.Digest == m.Digest })
			}
			cached, other, quick := manifestOf("pulled by digest"), manifestOf("in an organization named like it"), manifestOf("cached for a second")
			before := time.Now()
			e.put(meta.PutManifest{Repository: "hub/alpine", Manifest: cached})
			e.put(meta.PutManifest{Repository: "hubx/alpine", Manifest: other})
			e.put(meta.PutManifest{Repository: "quick/alpine", Manifest: quick})

			k := keepers("hub/alpine", cached)
			if k.CachedUntil.Before(before.Add(time.Hour)) || k.CachedUntil.After(time.Now().Add(time.Hour)) || dangling(cached) {
				t.Fatalf("cached until %v (want an hour after it was stored), dangling %v", k.CachedUntil, dangling(cached))
			}
			if k := keepers("hubx/alpine", other); !k.CachedUntil.IsZero() || !dangling(other) {
				t.Fatalf("outside the proxy cache: cached until %v, dangling %v", k.CachedUntil, dangling(other))
			}
			time.Sleep(1100 * time.Millisecond) // past quick's expiration
			if k := keepers("quick/alpine", quick); !k.CachedUntil.IsZero() || !dangling(quick) {
				t.Fatalf("past the expiration: cached until %v, dangling %v", k.CachedUntil, dangling(quick))
			}
		})
	}
}
