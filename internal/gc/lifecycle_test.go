package gc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/storage/fs"
)

// TestPassAppliesTagPolicies: a pass deletes expired tags and applies
// auto-prune policies before collecting, and the time machine keeps what
// they left until its window ends; a dry run changes nothing.
func TestPassAppliesTagPolicies(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := openNoMinimum(t, dialect) // pr-1 expires in 20ms
			store, err := fs.New(t.TempDir(), fs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			collector := func(window time.Duration) *Collector {
				c := db.Collector().WithTimeMachine(window)
				return New(Stores{Uploads: db.Uploads(), Collector: c, Retention: c, Lifecycle: db.Manifests()}, store,
					Options{Delay: time.Millisecond, UploadExpiry: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			}
			m := meta.Manifest{Digest: digest.FromString("short-lived"), MediaType: "application/vnd.oci.image.manifest.v1+json", Content: []byte("short-lived")}
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "ns/app", Manifest: m, Tag: "pr-1", ExpiresAt: time.Now().Add(20 * time.Millisecond)}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(30 * time.Millisecond)
			if rep, err := collector(time.Hour).Pass(ctx, true); err != nil || rep.ExpiredTags != 0 {
				t.Fatalf("dry run: %+v %v", rep, err)
			}
			rep, err := collector(time.Hour).Pass(ctx, false)
			if err != nil || rep.ExpiredTags != 1 || rep.Collected.Manifests != 0 {
				t.Fatalf("pass with a time machine: %+v %v", rep, err)
			}
			if _, err := db.Manifests().GetManifest(ctx, "ns/app", "", m.Digest, false); err != nil {
				t.Fatalf("the time machine did not keep the expired tag's manifest: %v", err)
			}
			rep, err = collector(0).Pass(ctx, false)
			if err != nil || rep.Collected.Manifests != 1 {
				t.Fatalf("pass without a time machine: %+v %v", rep, err)
			}
		})
	}
}

// flakyLifecycle is the store's lifecycle, with a repository deleted once
// the pass has listed it and another whose pruning fails.
type flakyLifecycle struct {
	meta.Manifests
	db              *meta.DB
	deleted, broken string
}

func (f flakyLifecycle) PrunedRepositories(ctx context.Context) ([]string, error) {
	repos, err := f.Manifests.PrunedRepositories(ctx)
	if err != nil {
		return nil, err
	}
	return repos, f.db.Repositories().DeleteRepository(ctx, f.deleted, "alice")
}

func (f flakyLifecycle) PruneRepository(ctx context.Context, repo string, now time.Time, actor string) ([]string, error) {
	if repo == f.broken {
		return nil, errors.New("disk on fire")
	}
	return f.Manifests.PruneRepository(ctx, repo, now, actor)
}

// TestPassPrunesPastAFailingRepository: a repository deleted while the
// pass runs is skipped, one whose pruning fails is reported, and every
// other repository is still pruned (the first stopped the pass for all
// the repositories after it).
func TestPassPrunesPastAFailingRepository(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			u, err := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: "x"})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Organizations().CreateOrganization(ctx, "acme", u.ID); err != nil {
				t.Fatal(err)
			}
			for _, repo := range []string{"acme/a", "acme/b", "acme/c"} {
				for i := range 2 {
					m := meta.Manifest{Digest: digest.FromString(repo + fmt.Sprint(i)), MediaType: "application/vnd.oci.image.manifest.v1+json", Content: []byte(repo + fmt.Sprint(i))}
					if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: m, Tag: fmt.Sprint("build-", i)}); err != nil {
						t.Fatal(err)
					}
					time.Sleep(2 * time.Millisecond)
				}
			}
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyAutoPrune, Namespace: "acme", Method: meta.PruneByCount, Value: "1", TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			c := New(Stores{Uploads: db.Uploads(), Collector: db.Collector(), Retention: db.Collector(),
				Lifecycle: flakyLifecycle{Manifests: db.Manifests(), db: db, deleted: "acme/a", broken: "acme/b"}}, nil,
				Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			rep := Report{}
			err = c.lifecycle(ctx, &rep)
			if err == nil || !strings.Contains(err.Error(), "acme/b") || strings.Contains(err.Error(), "acme/a") {
				t.Fatalf("pass error: %v", err)
			}
			if rep.PrunedTags != 1 {
				t.Fatalf("pruned %d tags, want acme/c's build-0", rep.PrunedTags)
			}
			if tags, _ := db.Manifests().ListTags(ctx, "acme/c", "", 10); len(tags) != 1 || tags[0] != "build-1" {
				t.Fatalf("acme/c: %v", tags)
			}
		})
	}
}

// TestPassBoundsTheTimeMachine: a pass prunes the periods of tags that
// ended before the time machine's window, never the open ones, and
// restore no longer finds them.
func TestPassBoundsTheTimeMachine(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			store, err := fs.New(t.TempDir(), fs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			collector := func(window time.Duration) *Collector {
				c := db.Collector().WithTimeMachine(window)
				return New(Stores{Uploads: db.Uploads(), Collector: c, Retention: c, Lifecycle: db.Manifests()}, store,
					Options{Delay: time.Hour, UploadExpiry: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			}
			var ds []digest.Digest
			for i := range 3 { // latest flips a, b, a
				m := meta.Manifest{Digest: digest.FromString(fmt.Sprint("image ", i%2)), MediaType: "application/vnd.oci.image.manifest.v1+json", Content: []byte(fmt.Sprint("image ", i%2))}
				if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "ns/app", Manifest: m, Tag: "latest"}); err != nil {
					t.Fatal(err)
				}
				ds = append(ds, m.Digest)
			}
			if rep, err := collector(time.Hour).Pass(ctx, false); err != nil || rep.Pruned.TagHistory != 0 {
				t.Fatalf("pass inside the window: %+v %v", rep.Pruned, err)
			}
			if h, _ := db.Manifests().TagHistory(ctx, "ns/app", "latest", 10); len(h) != 3 {
				t.Fatalf("history inside the window: %+v", h)
			}
			time.Sleep(2 * time.Millisecond)
			if rep, err := collector(time.Millisecond).Pass(ctx, false); err != nil || rep.Pruned.TagHistory != 2 {
				t.Fatalf("pass past the window: %+v %v", rep.Pruned, err)
			}
			h, _ := db.Manifests().TagHistory(ctx, "ns/app", "latest", 10)
			if len(h) != 1 || !h[0].Until.IsZero() || h[0].Digest != ds[2] {
				t.Fatalf("history past the window: %+v", h)
			}
			if err := db.Manifests().RestoreTag(ctx, "ns/app", "latest", ds[1], "alice"); !errors.Is(err, meta.ErrTagHistoryNotFound) {
				t.Fatalf("restore past the window: %v", err)
			}
		})
	}
}

// openNoMinimum is metatest.Open with no minimum of tag expirations
// (Quay's is an hour from the tag's start): for tags that expire in
// milliseconds.
func openNoMinimum(t *testing.T, dialect string) *meta.DB {
	t.Helper()
	db, err := meta.Open(context.Background(), metatest.DSN(t, dialect), meta.TagExpirationBounds(0, meta.DefaultExpirationMaximum))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
