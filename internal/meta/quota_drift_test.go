package meta_test

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// quotaModel tracks what a random sequence stored, to pick its next step.
type quotaModel struct {
	manifests map[string][]digest.Digest // repository → manifests pushed (maybe deleted since)
	tags      map[string][]string
}

// TestQuotaDrift runs long seeded random sequences of pushes (of images
// sharing blobs, indexes, pull-through cache fills), retags, tag and
// manifest deletes, garbage collection passes and repository deletes,
// with a Reject limit refusing some pushes, and checks after every step
// that each namespace's counted usage and reference counts equal their
// recomputation from the manifests.
func TestQuotaDrift(t *testing.T) {
	steps := 400
	if testing.Short() {
		steps = 100
	}
	for _, seed := range []uint64{1, 2} {
		t.Run(fmt.Sprint("seed", seed), func(t *testing.T) {
			forQuota(t, func(t *testing.T, e *quotaEnv) { quotaDrift(t, e, seed, steps) })
		})
	}
}

func quotaDrift(t *testing.T, e *quotaEnv, seed uint64, steps int) {
	rng := rand.New(rand.NewPCG(seed, seed*7919))
	ctx, db := e.ctx, e.db
	repos := []string{"acme/a", "acme/b", "acme/c/d", "acme", "acmex/a", "acme0/a", "other/a"}
	cacheRepo := "hub/lib/x"
	namespaces := []string{"acme", "acmex", "acme0", "other", "hub"}
	pool := make([]meta.Blob, 16)
	for i := range pool {
		pool[i] = sized(fmt.Sprintf("pool blob %d", i), int64(1+rng.IntN(1000)))
	}
	e.setQuota("other", 4000, meta.QuotaLimit{Type: meta.QuotaReject, ThresholdPercent: 100},
		meta.QuotaLimit{Type: meta.QuotaWarning, ThresholdPercent: 50})
	e.setQuota("acme", 6000, meta.QuotaLimit{Type: meta.QuotaReject, ThresholdPercent: 90})
	model := quotaModel{manifests: map[string][]digest.Digest{}, tags: map[string][]string{}}
	future := func() time.Time { return time.Now().Add(time.Hour) }
	var refused, pushed, sboms int
	pick := func(n int) []meta.Blob {
		var out []meta.Blob
		for range n {
			out = append(out, pool[rng.IntN(len(pool))])
		}
		return out
	}
	for step := range steps {
		repo := repos[rng.IntN(len(repos))]
		tag := fmt.Sprintf("t%d", rng.IntN(4))
		var what string
		switch op := rng.IntN(20); {
		case op < 7: // an image of random pool blobs (duplicates included)
			bs := pick(1 + rng.IntN(4))
			name := fmt.Sprintf("img %d", step)
			if rng.IntN(3) == 0 {
				tag = "" // by digest
			}
			m, err := e.push(repo, tag, name, bs...)
			var qe *meta.QuotaExceededError
			switch {
			case errors.As(err, &qe):
				refused++
			case err != nil:
				t.Fatalf("step %d: push: %v", step, err)
			default:
				pushed++
				model.manifests[repo] = append(model.manifests[repo], m.Digest)
				if tag != "" {
					model.tags[repo] = append(model.tags[repo], tag)
				}
			}
			what = "push " + repo
		case op < 8: // an index of manifests of the repository
			ms := model.manifests[repo]
			if len(ms) == 0 {
				continue
			}
			refs := []meta.Ref{{Digest: ms[rng.IntN(len(ms))], IsManifest: true}, {Digest: ms[rng.IntN(len(ms))], IsManifest: true}}
			idx := manifestOf(fmt.Sprintf("index %d", step))
			err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: idx, Refs: refs, Tag: tag})
			var missing *meta.MissingRefsError
			if err != nil && !errors.As(err, &missing) {
				t.Fatalf("step %d: index push: %v", step, err)
			}
			if err == nil {
				model.manifests[repo] = append(model.manifests[repo], idx.Digest)
				model.tags[repo] = append(model.tags[repo], tag)
			}
			what = "index " + repo
		case op < 9 && rng.IntN(2) == 0: // Berth's SBOM of a manifest, deleted with it
			ms := model.manifests[repo]
			if len(ms) == 0 {
				continue
			}
			sbom := sized(fmt.Sprintf("sbom %d", step), int64(1+rng.IntN(300)))
			if _, err := db.Blobs().StoreBlob(ctx, "", sbom, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
				t.Fatal(err)
			}
			m := manifestOf(fmt.Sprintf("sbom manifest %d", step))
			m.Subject = ms[rng.IntN(len(ms))]
			err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: m, Refs: []meta.Ref{{Digest: sbom.Digest}},
				LinkBlobs: []meta.Blob{sbom}, Generated: true, DeletedWithSubject: true})
			var missing *meta.MissingRefsError
			if err != nil && !errors.As(err, &missing) {
				t.Fatalf("step %d: sbom push: %v", step, err)
			}
			if err == nil {
				sboms++
			}
			what = "sbom " + repo
		case op < 9: // a pull-through cache fill, blobs fetched or not
			bs := pick(1 + rng.IntN(3))
			m, refs := image(fmt.Sprintf("cached %d", step), bs...)
			if err := db.ProxyCaches().PutProxyManifest(ctx, meta.PutManifest{Repository: cacheRepo, Manifest: m, Refs: refs, Tag: tag}, time.Now()); err != nil {
				t.Fatalf("step %d: cache fill: %v", step, err)
			}
			model.manifests[cacheRepo] = append(model.manifests[cacheRepo], m.Digest)
			what = "cache fill"
		case op < 10: // the cache fetches a blob
			e.store(cacheRepo, pick(1)...)
			what = "cache fetch"
		case op < 12: // retag
			ms := model.manifests[repo]
			if len(ms) == 0 {
				continue
			}
			err := db.Manifests().MoveTag(ctx, repo, tag, ms[rng.IntN(len(ms))], "alice")
			if err != nil && !errors.Is(err, meta.ErrNotFound) {
				t.Fatalf("step %d: retag: %v", step, err)
			}
			what = "retag " + repo
		case op < 14: // tag delete
			ts := model.tags[repo]
			if len(ts) == 0 {
				continue
			}
			err := db.Manifests().DeleteTag(ctx, repo, ts[rng.IntN(len(ts))], "alice")
			if err != nil && !errors.Is(err, meta.ErrNotFound) {
				t.Fatalf("step %d: tag delete: %v", step, err)
			}
			what = "tag delete " + repo
		case op < 16: // manifest delete
			r := repo
			if rng.IntN(4) == 0 {
				r = cacheRepo
			}
			ms := model.manifests[r]
			if len(ms) == 0 {
				continue
			}
			err := db.Manifests().DeleteManifest(ctx, r, ms[rng.IntN(len(ms))], "alice")
			var inUse *meta.InUseError
			if err != nil && !errors.Is(err, meta.ErrNotFound) && !errors.As(err, &inUse) {
				t.Fatalf("step %d: manifest delete: %v", step, err)
			}
			what = "manifest delete " + r
		case op < 19: // a garbage collection pass
			c := db.Collector()
			dangling, err := c.DanglingManifests(ctx, future(), 1000)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.CollectManifests(ctx, dangling, future()); err != nil {
				t.Fatalf("step %d: collect manifests: %v", step, err)
			}
			stale, err := c.StaleLinks(ctx, future(), future(), 1000)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.CollectLinks(ctx, stale, future(), future()); err != nil {
				t.Fatalf("step %d: collect links: %v", step, err)
			}
			orphans, err := c.OrphanBlobs(ctx, future(), 1000)
			if err != nil {
				t.Fatal(err)
			}
			var ds []digest.Digest
			for _, o := range orphans {
				ds = append(ds, o.Digest)
			}
			if _, err := c.CondemnBlobs(ctx, ds, future()); err != nil {
				t.Fatalf("step %d: condemn blobs: %v", step, err)
			}
			pending, _ := c.PendingBlobDeletes(ctx, 1000)
			if _, err := c.FinishBlobDeletes(ctx, pending, func(context.Context, digest.Digest) error { return nil }); err != nil {
				t.Fatal(err)
			}
			what = fmt.Sprintf("gc (%d manifests, %d links, %d blobs)", len(dangling), len(stale), len(ds))
		default: // repository delete
			if rng.IntN(3) == 0 {
				repo = cacheRepo
			}
			err := db.Repositories().DeleteRepository(ctx, repo, "alice")
			if err != nil && !errors.Is(err, meta.ErrNotFound) {
				t.Fatalf("step %d: repository delete: %v", step, err)
			}
			delete(model.manifests, repo)
			delete(model.tags, repo)
			what = "delete " + repo
		}
		for _, ns := range namespaces {
			c, err := db.Quotas().VerifyNamespaceUsage(ctx, ns)
			if err != nil {
				t.Fatal(err)
			}
			if !c.Exact() {
				t.Fatalf("step %d (%s): namespace %s drifted: %+v", step, what, ns, c)
			}
		}
		// The Reject limits held.
		if u, _ := db.Quotas().NamespaceUsage(ctx, "acme"); u > 5400 {
			t.Fatalf("step %d: acme uses %d, over its 5400 limit", step, u)
		}
		if u, _ := db.Quotas().NamespaceUsage(ctx, "other"); u > 4000 {
			t.Fatalf("step %d: other uses %d, over its 4000 limit", step, u)
		}
	}
	if pushed == 0 || refused == 0 {
		t.Fatalf("%d pushes, %d refused: the sequence should have both", pushed, refused)
	}
	t.Logf("%d steps: %d pushes stored, %d refused, %d SBOMs, %d quota warnings", steps, pushed, refused, sboms, len(e.quotaEvents(meta.EventQuotaWarning)))
}

// TestQuotaConcurrentPushes pushes images sharing a layer to two
// repositories of a namespace at once (and deletes some), then checks the
// books; with a Reject limit, the limit holds under concurrency.
func TestQuotaConcurrentPushes(t *testing.T) {
	forQuota(t, func(t *testing.T, e *quotaEnv) {
		ctx, db := e.ctx, e.db
		shared := sized("shared layer", 1000)
		e.store("acme/a", shared)
		e.store("acme/b", shared)
		const perRepo = 12
		own := func(repo string, i int) meta.Blob { return sized(fmt.Sprintf("%s own %d", repo, i), 100) }
		for _, repo := range []string{"acme/a", "acme/b"} {
			for i := range perRepo {
				e.store(repo, own(repo, i))
			}
		}
		e.setQuota("acme", 2000, meta.QuotaLimit{Type: meta.QuotaReject, ThresholdPercent: 100})
		var wg sync.WaitGroup
		var mu sync.Mutex
		var stored, refused int
		for _, repo := range []string{"acme/a", "acme/b"} {
			for w := range 3 {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for i := w; i < perRepo; i += 3 {
						m, refs := image(fmt.Sprintf("%s %d", repo, i), shared, own(repo, i))
						err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: m, Refs: refs, Tag: fmt.Sprint("v", i)})
						var qe *meta.QuotaExceededError
						mu.Lock()
						switch {
						case errors.As(err, &qe):
							refused++
						case err != nil:
							t.Errorf("push %s %d: %v", repo, i, err)
						default:
							stored++
						}
						mu.Unlock()
						if err == nil && i%4 == 0 {
							if err := db.Manifests().DeleteManifest(ctx, repo, m.Digest, ""); err != nil {
								t.Errorf("delete: %v", err)
							}
						}
					}
				}()
			}
		}
		wg.Wait()
		u := e.exact("acme")
		if u > 2000 {
			t.Fatalf("usage %d over the 2000 limit", u)
		}
		if refused == 0 || stored < 10 {
			t.Fatalf("%d stored, %d refused", stored, refused)
		}
		t.Logf("%d stored, %d refused, usage %d", stored, refused, u)
	})
}

// TestQuotaPushRacesRepositoryDelete pushes into a repository while it is
// deleted, again and again: whichever wins, the books stay exact and
// neither side fails with anything but what the race explains (the
// repository or the pushed blob gone).
func TestQuotaPushRacesRepositoryDelete(t *testing.T) {
	forQuota(t, func(t *testing.T, e *quotaEnv) {
		ctx, db := e.ctx, e.db
		layer := sized("race layer", 100)
		start := time.Now()
		for i := range 25 {
			own := sized(fmt.Sprint("race own ", i), 10)
			e.store("acme/app", layer, own)
			m, refs := image(fmt.Sprint("race ", i), layer, own)
			var wg sync.WaitGroup
			var pushErr, delErr error
			wg.Add(2)
			go func() {
				defer wg.Done()
				pushErr = db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: m, Refs: refs, Tag: fmt.Sprint("v", i%2)})
			}()
			go func() {
				defer wg.Done()
				delErr = db.Repositories().DeleteRepository(ctx, "acme/app", "")
			}()
			wg.Wait()
			var missing *meta.MissingRefsError
			if pushErr != nil && !errors.As(pushErr, &missing) {
				t.Fatalf("round %d: push: %v", i, pushErr)
			}
			if delErr != nil && !errors.Is(delErr, meta.ErrRepositoryNotFound) {
				t.Fatalf("round %d: delete: %v", i, delErr)
			}
			e.exact("acme")
		}
		t.Logf("25 rounds in %v", time.Since(start))
	})
}
