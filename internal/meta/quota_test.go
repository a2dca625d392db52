package meta_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// quotaEnv pushes content into a store and checks its namespaces' books.
type quotaEnv struct {
	t   *testing.T
	db  *meta.DB
	ctx context.Context
}

func forQuota(t *testing.T, f func(t *testing.T, e *quotaEnv)) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			f(t, &quotaEnv{t: t, db: metatest.Open(t, d), ctx: context.Background()})
		})
	}
}

// sized is a blob of the given size (meta trusts the size it is given).
func sized(name string, size int64) meta.Blob {
	return meta.Blob{Digest: digest.FromString(name), Size: size}
}

// store records blobs linked to repo.
func (e *quotaEnv) store(repo string, bs ...meta.Blob) {
	e.t.Helper()
	for _, b := range bs {
		if _, err := e.db.Blobs().StoreBlob(e.ctx, repo, b, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
			e.t.Fatalf("store %s in %s: %v", b.Digest, repo, err)
		}
	}
}

// image is a manifest that references bs, named by name.
func image(name string, bs ...meta.Blob) (meta.Manifest, []meta.Ref) {
	refs := make([]meta.Ref, 0, len(bs))
	for _, b := range bs {
		refs = append(refs, meta.Ref{Digest: b.Digest})
	}
	return manifestOf("image " + name), refs
}

// push stores blobs and an image of them, tagged.
func (e *quotaEnv) push(repo, tag, name string, bs ...meta.Blob) (meta.Manifest, error) {
	e.t.Helper()
	e.store(repo, bs...)
	m, refs := image(name, bs...)
	return m, e.db.Manifests().PutManifest(e.ctx, meta.PutManifest{Repository: repo, Manifest: m, Refs: refs, Tag: tag, Actor: "alice"})
}

func (e *quotaEnv) mustPush(repo, tag, name string, bs ...meta.Blob) meta.Manifest {
	e.t.Helper()
	m, err := e.push(repo, tag, name, bs...)
	if err != nil {
		e.t.Fatalf("push %s:%s: %v", repo, tag, err)
	}
	return m
}

// exact checks that the namespace's counted usage and reference counts
// equal their recomputation, and returns the usage.
func (e *quotaEnv) exact(ns string) int64 {
	e.t.Helper()
	c, err := e.db.Quotas().VerifyNamespaceUsage(e.ctx, ns)
	if err != nil {
		e.t.Fatal(err)
	}
	if !c.Exact() {
		e.t.Fatalf("namespace %s drifted: %+v", ns, c)
	}
	u, err := e.db.Quotas().NamespaceUsage(e.ctx, ns)
	if err != nil || u != c.Counted {
		e.t.Fatalf("NamespaceUsage(%s) = %d, %v; verified %d", ns, u, err, c.Counted)
	}
	return u
}

func (e *quotaEnv) wantUsage(ns string, want int64) {
	e.t.Helper()
	if got := e.exact(ns); got != want {
		e.t.Fatalf("usage of %s = %d, want %d", ns, got, want)
	}
}

// quotaEvents returns the data of the events of a kind.
func (e *quotaEnv) quotaEvents(kind string) []map[string]any {
	e.t.Helper()
	evs, err := e.db.Outbox().EventsAfter(e.ctx, 0, 10000)
	if err != nil {
		e.t.Fatal(err)
	}
	var out []map[string]any
	for _, ev := range evs {
		if ev.Kind != kind {
			continue
		}
		var d map[string]any
		if err := json.Unmarshal(ev.Data, &d); err != nil {
			e.t.Fatal(err)
		}
		d["_repository"] = ev.Repository
		out = append(out, d)
	}
	return out
}

func (e *quotaEnv) setQuota(ns string, limit int64, limits ...meta.QuotaLimit) meta.Quota {
	e.t.Helper()
	if _, err := e.db.Organizations().CreateOrganization(e.ctx, ns, 0); err != nil && !errors.Is(err, meta.ErrExists) {
		e.t.Fatal(err)
	}
	q, err := e.db.Quotas().CreateQuota(e.ctx, ns, limit, "admin")
	if err != nil {
		e.t.Fatal(err)
	}
	for _, l := range limits {
		if _, err := e.db.Quotas().CreateQuotaLimit(e.ctx, ns, q.ID, l.Type, l.ThresholdPercent); err != nil {
			e.t.Fatal(err)
		}
	}
	return q
}

func TestQuotaSharedLayerCountedOnce(t *testing.T) {
	forQuota(t, func(t *testing.T, e *quotaEnv) {
		cfg, shared, a, b := sized("cfg", 10), sized("shared", 1000), sized("a", 100), sized("b", 200)
		ma := e.mustPush("acme/a", "v1", "a", cfg, shared, a)
		e.wantUsage("acme", 1110)
		mb := e.mustPush("acme/b", "v1", "b", cfg, shared, b)
		e.wantUsage("acme", 1310) // cfg and the shared layer once
		// The same layer in another namespace counts there too.
		e.mustPush("other/c", "v1", "c", shared)
		e.wantUsage("other", 1000)
		e.wantUsage("acme", 1310)
		// A second manifest of a repository naming the same blobs, and a
		// retag, add nothing.
		e.mustPush("acme/a", "v2", "a2", cfg, shared, a)
		if err := e.db.Manifests().MoveTag(e.ctx, "acme/a", "v1", ma.Digest, "alice"); err != nil {
			t.Fatal(err)
		}
		e.wantUsage("acme", 1310)
		if got, _ := e.db.Quotas().RepositoryUsage(e.ctx, "acme/a"); got != 1110 {
			t.Fatalf("RepositoryUsage(acme/a) = %d, want 1110", got)
		}
		// Deleting one repository's manifest keeps the shared layer.
		if err := e.db.Manifests().DeleteManifest(e.ctx, "acme/b", mb.Digest, "alice"); err != nil {
			t.Fatal(err)
		}
		e.wantUsage("acme", 1110)
		// Tags alone do not count: an untagged manifest stays counted
		// until it is deleted or collected.
		if err := e.db.Manifests().DeleteTag(e.ctx, "acme/a", "v1", "alice"); err != nil {
			t.Fatal(err)
		}
		e.wantUsage("acme", 1110)
		n, err := e.db.Collector().CollectManifests(e.ctx, []meta.GCCandidate{{RepositoryID: repoID(t, e.db, "acme/a"), Digest: ma.Digest}}, time.Now().Add(time.Hour))
		if err != nil || n != 1 {
			t.Fatalf("CollectManifests = %d, %v", n, err)
		}
		e.wantUsage("acme", 1110) // a2 still names the same blobs
		if err := e.db.Repositories().DeleteRepository(e.ctx, "acme/a", "alice"); err != nil {
			t.Fatal(err)
		}
		e.wantUsage("acme", 0)
		e.wantUsage("other", 1000)
	})
}

func repoID(t *testing.T, db *meta.DB, repo string) int64 {
	t.Helper()
	ri, err := db.Repositories().Repository(context.Background(), repo)
	if err != nil || !ri.Exists {
		t.Fatalf("repository %s: %+v, %v", repo, ri, err)
	}
	return ri.ID
}

func TestQuotaHardLimit(t *testing.T) {
	forQuota(t, func(t *testing.T, e *quotaEnv) {
		e.setQuota("acme", 1000, meta.QuotaLimit{Type: meta.QuotaReject, ThresholdPercent: 90})
		base := sized("base", 600)
		m1 := e.mustPush("acme/app", "v1", "v1", base)
		e.wantUsage("acme", 600)

		// 600 + 400 > 900: refused, nothing of it stays.
		big := sized("big", 400)
		e.store("acme/app", big)
		m2, refs := image("v2", base, big)
		err := e.db.Manifests().PutManifest(e.ctx, meta.PutManifest{Repository: "acme/app", Manifest: m2, Refs: refs, Tag: "v2", Actor: "alice"})
		var qe *meta.QuotaExceededError
		if !errors.As(err, &qe) || qe.Namespace != "acme" || qe.Usage != 600 || qe.Added != 400 || qe.LimitBytes != 1000 || qe.ThresholdPercent != 90 {
			t.Fatalf("push over the limit: %v (%+v)", err, qe)
		}
		if !strings.Contains(err.Error(), "quota exceeded") || !strings.Contains(err.Error(), "acme") {
			t.Fatalf("message %q", err)
		}
		if _, err := e.db.Manifests().GetManifest(e.ctx, "acme/app", "", m2.Digest, false); !errors.Is(err, meta.ErrManifestNotFound) {
			t.Fatalf("refused manifest stored: %v", err)
		}
		if _, err := e.db.Manifests().GetManifest(e.ctx, "acme/app", "v2", "", false); !errors.Is(err, meta.ErrManifestNotFound) {
			t.Fatalf("refused tag set: %v", err)
		}
		e.wantUsage("acme", 600)
		// In a repository of its own, the push creates nothing either.
		m3, refs3 := image("v3", big)
		err = e.db.Manifests().PutManifest(e.ctx, meta.PutManifest{Repository: "acme/fresh", Manifest: m3, Refs: refs3, Tag: "v1",
			LinkBlobs: []meta.Blob{big}})
		if !errors.As(err, &qe) {
			t.Fatalf("push to a new repository over the limit: %v", err)
		}
		if ri, _ := e.db.Repositories().Repository(e.ctx, "acme/fresh"); ri.Exists {
			t.Fatal("a refused push created its repository")
		}
		errs := e.quotaEvents(meta.EventQuotaError)
		if len(errs) != 2 || errs[0]["refused"] != true || errs[0]["_repository"] != "acme/app" || errs[0]["namespace"] != "acme" ||
			errs[0]["threshold_percent"] != 90.0 || errs[0]["usage_bytes"] != 600.0 || errs[0]["limit_bytes"] != 1000.0 ||
			errs[0]["usage_percent"] != 60.0 || errs[0]["push_bytes"] != 400.0 || errs[0]["digest"] != m2.Digest.String() {
			t.Fatalf("quota_error events = %v", errs)
		}
		for _, k := range kinds(t, e.db) {
			if k == meta.EventRepoCreated {
				continue
			}
			if k == meta.EventRepoPush && len(e.quotaEvents(meta.EventRepoPush)) != 1 {
				t.Fatalf("events %v: a refused push announced", kinds(t, e.db))
			}
		}
		// The refused push's blobs are garbage: their links are stale and
		// collectable, and they were never counted.
		stale, err := e.db.Collector().StaleLinks(e.ctx, time.Now().Add(time.Hour), time.Now().Add(time.Hour), 100)
		if err != nil {
			t.Fatal(err)
		}
		var staleBig bool
		for _, c := range stale {
			staleBig = staleBig || c.Digest == big.Digest
		}
		if !staleBig {
			t.Fatalf("the refused push's blob is not collectable: %+v", stale)
		}
		if _, err := e.db.Collector().CollectLinks(e.ctx, stale, time.Now().Add(time.Hour), time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.Collector().CondemnBlobs(e.ctx, []digest.Digest{big.Digest}, time.Now().Add(time.Hour)); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.Blobs().StoredBlob(e.ctx, big.Digest); !errors.Is(err, meta.ErrBlobNotFound) {
			t.Fatalf("the refused push's blob survived collection: %v", err)
		}
		e.wantUsage("acme", 600)

		// Pushes that add nothing are never refused, even over the limit.
		if _, err := e.db.Quotas().UpdateQuota(e.ctx, "acme", quotaID(t, e), 500); err != nil {
			t.Fatal(err)
		}
		e.mustPush("acme/app", "again", "v1", base)                                                   // the same manifest, a new tag
		e.mustPush("acme/copy", "v1", "v1", base)                                                     // the same image in another repository
		e.mustPush("acme/app", "other", "v1-other", base)                                             // another manifest of the same blobs
		if err := e.db.Manifests().MoveTag(e.ctx, "acme/app", "v1", m1.Digest, "alice"); err != nil { // a retag
			t.Fatal(err)
		}
		e.wantUsage("acme", 600)
		if _, err := e.push("acme/app", "v4", "v4", base, sized("tiny", 1)); !errors.As(err, &qe) {
			t.Fatalf("a push adding bytes over the limit: %v", err)
		}
		// Other namespaces are not limited.
		e.mustPush("other/app", "v1", "v2", base, big)
		e.wantUsage("other", 1000)
		// Without the Reject limit the push goes through.
		q, _ := e.db.Quotas().NamespaceQuota(e.ctx, "acme", quotaID(t, e))
		if err := e.db.Quotas().DeleteQuotaLimit(e.ctx, "acme", q.ID, q.Limits[0].ID); err != nil {
			t.Fatal(err)
		}
		e.mustPush("acme/app", "v4", "v4", base, sized("tiny", 1))
		e.wantUsage("acme", 601)
	})
}

func quotaID(t *testing.T, e *quotaEnv) int64 {
	t.Helper()
	qs, err := e.db.Quotas().NamespaceQuotas(e.ctx, "acme")
	if err != nil || len(qs) != 1 {
		t.Fatalf("NamespaceQuotas = %+v, %v", qs, err)
	}
	return qs[0].ID
}

func TestQuotaWarning(t *testing.T) {
	forQuota(t, func(t *testing.T, e *quotaEnv) {
		e.setQuota("acme", 1000, meta.QuotaLimit{Type: meta.QuotaWarning, ThresholdPercent: 50},
			meta.QuotaLimit{Type: meta.QuotaWarning, ThresholdPercent: 80})
		e.mustPush("acme/app", "v1", "v1", sized("l1", 400))
		if n := len(e.quotaEvents(meta.EventQuotaWarning)); n != 0 {
			t.Fatalf("%d warnings under the threshold", n)
		}
		e.mustPush("acme/app", "v2", "v2", sized("l1", 400), sized("l2", 200)) // 600: past 50%
		w := e.quotaEvents(meta.EventQuotaWarning)
		if len(w) != 1 || w[0]["threshold_percent"] != 50.0 || w[0]["usage_bytes"] != 600.0 || w[0]["limit_bytes"] != 1000.0 ||
			w[0]["usage_percent"] != 60.0 || w[0]["_repository"] != "acme/app" || w[0]["limit_type"] != "Warning" {
			t.Fatalf("warnings = %v", w)
		}
		e.mustPush("acme/app", "v3", "v3", sized("l3", 100)) // 700: still between
		if n := len(e.quotaEvents(meta.EventQuotaWarning)); n != 1 {
			t.Fatalf("%d warnings, want 1 (no new crossing)", n)
		}
		e.mustPush("acme/app", "v4", "v4", sized("l4", 150)) // 850: past 80%
		if w := e.quotaEvents(meta.EventQuotaWarning); len(w) != 2 || w[1]["threshold_percent"] != 80.0 {
			t.Fatalf("warnings = %v", w)
		}
		// No Reject limit: over 100% is allowed and only warned of once.
		e.mustPush("acme/app", "v5", "v5", sized("l5", 500))
		if n := len(e.quotaEvents(meta.EventQuotaWarning)); n != 2 {
			t.Fatalf("%d warnings", n)
		}
		if n := len(e.quotaEvents(meta.EventQuotaError)); n != 0 {
			t.Fatalf("%d quota errors without a Reject limit", n)
		}
		e.wantUsage("acme", 1350)
	})
}

func TestQuotaConfig(t *testing.T) {
	forQuota(t, func(t *testing.T, e *quotaEnv) {
		ctx, qs := e.ctx, e.db.Quotas()
		if _, err := qs.CreateQuota(ctx, "ghost", 10, ""); !errors.Is(err, meta.ErrNamespaceNotFound) {
			t.Fatalf("quota of an unknown namespace: %v", err)
		}
		if _, err := e.db.Organizations().CreateOrganization(ctx, "acme", 0); err != nil {
			t.Fatal(err)
		}
		if _, err := qs.CreateQuota(ctx, "acme", 0, ""); !errors.Is(err, meta.ErrInvalidQuota) {
			t.Fatalf("zero limit: %v", err)
		}
		q, err := qs.CreateQuota(ctx, "acme", 1<<30, "admin")
		if err != nil || q.LimitBytes != 1<<30 || q.Namespace != "acme" || q.CreatedBy != "admin" || len(q.Limits) != 0 {
			t.Fatalf("CreateQuota = %+v, %v", q, err)
		}
		if _, err := qs.CreateQuota(ctx, "acme", 5, ""); !errors.Is(err, meta.ErrExists) {
			t.Fatalf("second quota: %v", err)
		}
		w, err := qs.CreateQuotaLimit(ctx, "acme", q.ID, meta.QuotaWarning, 80)
		if err != nil {
			t.Fatal(err)
		}
		r, err := qs.CreateQuotaLimit(ctx, "acme", q.ID, meta.QuotaReject, 100)
		if err != nil {
			t.Fatal(err)
		}
		for _, c := range []struct {
			typ  string
			pct  int
			want error
		}{
			{meta.QuotaWarning, 80, meta.ErrExists},
			{meta.QuotaReject, 95, meta.ErrExists},
			{"Block", 50, meta.ErrInvalidQuota},
			{meta.QuotaWarning, 0, meta.ErrInvalidQuota},
			{meta.QuotaWarning, 101, meta.ErrInvalidQuota},
		} {
			if _, err := qs.CreateQuotaLimit(ctx, "acme", q.ID, c.typ, c.pct); !errors.Is(err, c.want) {
				t.Fatalf("limit %s %d: %v, want %v", c.typ, c.pct, err, c.want)
			}
		}
		if _, err := qs.CreateQuotaLimit(ctx, "acme", q.ID+100, meta.QuotaWarning, 10); !errors.Is(err, meta.ErrQuotaNotFound) {
			t.Fatalf("limit of an unknown quota: %v", err)
		}
		got, err := qs.NamespaceQuota(ctx, "acme", q.ID)
		want := []meta.QuotaLimit{r, w}
		if err != nil || !slices.Equal(got.Limits, want) {
			t.Fatalf("NamespaceQuota = %+v, %v; want limits %+v", got, err, want)
		}
		pct := 90
		got, err = qs.UpdateQuotaLimit(ctx, "acme", q.ID, w.ID, nil, &pct)
		if err != nil || got.Limits[1].ThresholdPercent != 90 {
			t.Fatalf("UpdateQuotaLimit = %+v, %v", got, err)
		}
		reject := meta.QuotaReject
		if _, err := qs.UpdateQuotaLimit(ctx, "acme", q.ID, w.ID, &reject, nil); !errors.Is(err, meta.ErrExists) {
			t.Fatalf("a second Reject by update: %v", err)
		}
		if _, err := qs.UpdateQuotaLimit(ctx, "acme", q.ID, 9999, nil, &pct); !errors.Is(err, meta.ErrQuotaLimitNotFound) {
			t.Fatalf("update of an unknown limit: %v", err)
		}
		if got, err := qs.UpdateQuota(ctx, "acme", q.ID, 2<<30); err != nil || got.LimitBytes != 2<<30 || len(got.Limits) != 2 {
			t.Fatalf("UpdateQuota = %+v, %v", got, err)
		}
		if _, err := qs.UpdateQuota(ctx, "other", q.ID, 5); !errors.Is(err, meta.ErrQuotaNotFound) {
			t.Fatalf("update through another namespace: %v", err)
		}
		if err := qs.DeleteQuotaLimit(ctx, "acme", q.ID, w.ID); err != nil {
			t.Fatal(err)
		}
		if err := qs.DeleteQuotaLimit(ctx, "acme", q.ID, w.ID); !errors.Is(err, meta.ErrQuotaLimitNotFound) {
			t.Fatalf("second limit delete: %v", err)
		}
		if err := qs.DeleteQuota(ctx, "acme", q.ID); err != nil {
			t.Fatal(err)
		}
		if l, err := qs.NamespaceQuotas(ctx, "acme"); err != nil || len(l) != 0 {
			t.Fatalf("quotas after delete: %+v, %v", l, err)
		}
		// A new one after the old is deleted; deleting the organization
		// deletes it.
		if _, err := qs.CreateQuota(ctx, "acme", 7, ""); err != nil {
			t.Fatal(err)
		}
		if err := e.db.Organizations().DeleteOrganization(ctx, "acme"); err != nil {
			t.Fatal(err)
		}
		if _, err := e.db.Organizations().CreateOrganization(ctx, "acme", 0); err != nil {
			t.Fatal(err)
		}
		if l, err := qs.NamespaceQuotas(ctx, "acme"); err != nil || len(l) != 0 {
			t.Fatalf("a recreated organization inherited a quota: %+v, %v", l, err)
		}
	})
}

func TestThresholdBytes(t *testing.T) {
	for _, c := range []struct {
		limit int64
		pct   int
		want  int64
	}{
		{1000, 90, 900}, {999, 50, 499}, {1, 100, 1}, {1, 99, 0},
		{1<<63 - 1, 100, 1<<63 - 1}, {1<<63 - 1, 50, (1<<63 - 1) / 2},
	} {
		if got := meta.ThresholdBytes(c.limit, c.pct); got != c.want {
			t.Errorf("ThresholdBytes(%d, %d) = %d, want %d", c.limit, c.pct, got, c.want)
		}
	}
	for n, want := range map[int64]string{0: "0.0 Byte", 1023: "1023.0 Byte", 1536: "1.5 KiB", 1 << 30: "1.0 GiB"} {
		if got := meta.HumanBytes(n); got != want {
			t.Errorf("HumanBytes(%d) = %q, want %q", n, got, want)
		}
	}
}

// TestQuotaPullThroughCache: the cache stores manifests before their
// blobs; a reference counts its blob's bytes exactly while the blob row
// exists.
func TestQuotaPullThroughCache(t *testing.T) {
	forQuota(t, func(t *testing.T, e *quotaEnv) {
		cfg, layer := sized("cached cfg", 10), sized("cached layer", 1000)
		m, refs := image("cached", cfg, layer)
		if err := e.db.ProxyCaches().PutProxyManifest(e.ctx, meta.PutManifest{Repository: "hub/library/alpine", Manifest: m, Refs: refs, Tag: "3"}, time.Now()); err != nil {
			t.Fatal(err)
		}
		e.wantUsage("hub", 0) // nothing fetched yet
		e.store("hub/library/alpine", layer)
		e.wantUsage("hub", 1000)
		// The config is stored by another namespace first: counted here
		// as soon as its row exists.
		e.store("acme/app", cfg)
		e.wantUsage("hub", 1010)
		// Then collected there (never linked in hub): uncounted with its
		// row.
		if err := e.db.Blobs().UnlinkBlob(e.ctx, "acme/app", cfg.Digest); err != nil {
			t.Fatal(err)
		}
		if n, err := e.db.Collector().CondemnBlobs(e.ctx, []digest.Digest{cfg.Digest}, time.Now().Add(time.Hour)); err != nil || n != 1 {
			t.Fatalf("CondemnBlobs = %d, %v", n, err)
		}
		e.wantUsage("hub", 1000)
		e.store("hub/library/alpine", cfg)
		e.wantUsage("hub", 1010)
		// A cache fill past the Reject limit is refused as a push is
		// (the cache checks each blob download too: QuotaRoom).
		e.setQuota("hub", 2000, meta.QuotaLimit{Type: meta.QuotaReject, ThresholdPercent: 100})
		m2, refs2 := image("cached 2", sized("cached big", 5000))
		e.store("hub/library/alpine", sized("cached big", 5000))
		var qe *meta.QuotaExceededError
		if err := e.db.ProxyCaches().PutProxyManifest(e.ctx, meta.PutManifest{Repository: "hub/library/alpine", Manifest: m2, Refs: refs2, Tag: "4"}, time.Now()); !errors.As(err, &qe) {
			t.Fatalf("a cache fill over the quota: %v", err)
		}
		e.wantUsage("hub", 1010)
		if errs := e.quotaEvents(meta.EventQuotaError); len(errs) != 1 || errs[0]["refused"] != true {
			t.Fatalf("quota_error events = %v, want one for the refusal", errs)
		}
		if err := e.db.ProxyCaches().QuotaRoom(e.ctx, "hub", 990); err != nil {
			t.Fatalf("a download within the quota: %v", err)
		}
		if err := e.db.ProxyCaches().QuotaRoom(e.ctx, "hub", 991); !errors.As(err, &qe) {
			t.Fatalf("a download past the quota: %v", err)
		}
	})
}

// TestQuotaMigration: content stored before the quota migration is
// counted by it.
func TestQuotaMigration(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			dsn := metatest.DSN(t, d)
			db, err := meta.OpenAt(ctx, dsn, 16)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			exec := func(q string, args ...any) {
				t.Helper()
				if err := db.Exec(ctx, q, args...); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			for i, repo := range []string{"acme/a", "acme/b/c", "acme", "acmex/a", "acme0/a"} {
				exec("INSERT INTO repositories (id, name, created_at) VALUES (?, ?, 0)", i+1, repo)
			}
			for _, b := range []meta.Blob{sized("x", 100), sized("y", 20), sized("z", 3)} {
				exec("INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, 0)", b.Digest.String(), b.Size)
			}
			manifest := func(repoID int, name string, blobs ...string) {
				m := manifestOf(name)
				exec("INSERT INTO manifests (repository_id, digest, media_type, size, content, created_at) VALUES (?, ?, 'x', 1, ?, 0)", repoID, m.Digest.String(), []byte(name))
				for _, b := range blobs {
					exec("INSERT INTO manifest_references (repository_id, manifest_digest, ref_digest, is_manifest) VALUES (?, ?, ?, 0)",
						repoID, m.Digest.String(), digest.FromString(b).String())
				}
			}
			manifest(1, "m1", "x", "y")
			manifest(2, "m2", "x", "missing") // a blob without a row (a cache's)
			manifest(3, "m3", "z")
			manifest(4, "m4", "x")
			manifest(5, "m5", "y")
			if err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			for ns, want := range map[string]int64{"acme": 123, "acmex": 100, "acme0": 20} {
				c, err := db.Quotas().VerifyNamespaceUsage(ctx, ns)
				if err != nil || !c.Exact() || c.Counted != want {
					t.Fatalf("after migration, %s: %+v, %v; want %d", ns, c, err, want)
				}
			}
		})
	}
}
