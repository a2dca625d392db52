package meta_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

func orgWithRepo(t *testing.T, db *meta.DB) {
	t.Helper()
	ctx := context.Background()
	u, err := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Organizations().CreateOrganization(ctx, "acme", u.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Organizations().CreateOrganization(ctx, "acme_x", u.ID); err != nil {
		t.Fatal(err)
	}
}

// TestImmutabilityPolicies: Quay's contract. A tag an organization's or
// repository's policy covers is pushed once and then cannot be moved,
// deleted, expired or have its manifest deleted; the refusal names the
// policy; tags the pattern does not cover (or that a tagPatternMatches:
// false policy excludes) move freely; the policy of an organization does
// not reach another whose name shares its prefix.
func TestImmutabilityPolicies(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			put := func(repo, tag, content string) error {
				return db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: manifestOf(content), Tag: tag})
			}
			for _, r := range []string{"acme/app", "acme/tools", "acme_x/app"} {
				if err := put(r, "latest", "first of "+r); err != nil {
					t.Fatal(err)
				}
			}
			org, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme",
				TagPattern: `^v[0-9]+\.[0-9]+\.[0-9]+$`, TagPatternMatches: true})
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", Repository: "acme/tools",
				TagPattern: `^dev-`, TagPatternMatches: false}); err != nil {
				t.Fatal(err)
			}
			if err := put("acme/app", "v1.2.3", "release"); err != nil {
				t.Fatalf("first push of a covered tag: %v", err)
			}
			var imm *meta.ImmutableTagError
			if err := put("acme/app", "v1.2.3", "overwrite"); !errors.As(err, &imm) || !strings.Contains(err.Error(), org.UUID) {
				t.Fatalf("overwrite of v1.2.3: %v", err)
			}
			if err := db.Manifests().DeleteTag(ctx, "acme/app", "v1.2.3", "alice"); !errors.As(err, &imm) {
				t.Fatalf("delete of v1.2.3: %v", err)
			}
			if err := db.Manifests().DeleteManifest(ctx, "acme/app", manifestOf("release").Digest, "alice"); !errors.As(err, &imm) {
				t.Fatalf("delete of v1.2.3's manifest: %v", err)
			}
			if err := db.Manifests().SetTagExpiration(ctx, "acme/app", "v1.2.3", time.Now().Add(time.Hour)); !errors.As(err, &imm) {
				t.Fatalf("expiration of v1.2.3: %v", err)
			}
			if err := put("acme/app", "latest", "second"); err != nil {
				t.Fatalf("latest is not covered: %v", err)
			}
			// acme/tools: every tag but dev-* is immutable (its own policy).
			if err := put("acme/tools", "latest", "second of tools"); !errors.As(err, &imm) {
				t.Fatalf("latest of acme/tools: %v", err)
			}
			if err := put("acme/tools", "dev-1", "a"); err != nil {
				t.Fatal(err)
			}
			if err := put("acme/tools", "dev-1", "b"); err != nil {
				t.Fatalf("dev-1 is excluded: %v", err)
			}
			// acme_x is another organization.
			if err := put("acme_x/app", "v1.0.0", "x1"); err != nil {
				t.Fatal(err)
			}
			if err := put("acme_x/app", "v1.0.0", "x2"); err != nil {
				t.Fatalf("a policy of acme reached acme_x: %v", err)
			}
			ps, _ := db.Policies().TagPolicies(ctx, meta.PolicyImmutability, "acme", "")
			if len(ps) != 1 || ps[0].UUID != org.UUID {
				t.Fatalf("organization policies: %+v", ps)
			}
			if err := db.Policies().DeleteTagPolicy(ctx, meta.PolicyImmutability, org.UUID); err != nil {
				t.Fatal(err)
			}
			if err := put("acme/app", "v1.2.3", "overwrite"); err != nil {
				t.Fatalf("after the policy was deleted: %v", err)
			}
		})
	}
}

// TestExpirationAndTimeMachine: an expired tag is deleted by ExpireTag
// (with tag_deleted "expired"), its manifest stays out of collection for
// the time machine's window and can be restored meanwhile; a moved tag
// loses its expiration; repo_image_expiry is announced once per
// notification, tag and expiration, only within the notification's days.
func TestExpirationAndTimeMachine(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			m, moved := manifestOf("expiring"), manifestOf("moved")
			now := time.Now()
			for _, p := range []meta.PutManifest{
				{Repository: "acme/app", Manifest: m, Tag: "nightly", ExpiresAt: now.Add(2 * 24 * time.Hour)},
				{Repository: "acme/app", Manifest: moved, Tag: "weekly", ExpiresAt: now.Add(time.Hour)},
				{Repository: "acme/app", Manifest: manifestOf("stays"), Tag: "stable"},
			} {
				if err := db.Manifests().PutManifest(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			page, _ := db.Manifests().TagsPage(ctx, "acme/app", meta.TagQuery{Name: "nightly", Limit: 1})
			if len(page) != 1 || page[0].ExpiresAt.IsZero() {
				t.Fatalf("nightly's expiration: %+v", page)
			}
			// Moving weekly clears its expiration.
			if err := db.Manifests().MoveTag(ctx, "acme/app", "weekly", m.Digest, "alice"); err != nil {
				t.Fatal(err)
			}
			// Notifications: 1 day hears nothing yet, 3 days hears nightly once.
			for _, days := range []int{1, 3} {
				if _, err := db.Notifications().CreateNotification(ctx, meta.Notification{UUID: fmt.Sprint("expiry-", days), Scope: "repository", Target: "acme/app",
					Event: "repo_image_expiry", Method: "webhook", Config: json.RawMessage(`{"url":"https://example.com"}`),
					EventConfig: json.RawMessage(fmt.Sprintf(`{"days":%d}`, days))}); err != nil {
					t.Fatal(err)
				}
			}
			for range 2 {
				n, err := db.Manifests().NoticeExpiringTags(ctx, now)
				if err != nil {
					t.Fatal(err)
				}
				if n > 1 {
					t.Fatalf("%d notices", n)
				}
			}
			evs, _ := db.Outbox().EventsAfter(ctx, 0, 1000)
			var notices []map[string]any
			for _, e := range evs {
				if e.Kind == "repo_image_expiry" {
					var d map[string]any
					json.Unmarshal(e.Data, &d)
					notices = append(notices, d)
				}
			}
			if len(notices) != 1 || fmt.Sprint(notices[0]["tags"]) != "[nightly]" || notices[0]["expiring_in"] != "3 days" {
				t.Fatalf("repo_image_expiry events: %v", notices)
			}

			later := now.Add(3 * 24 * time.Hour)
			expired, err := db.Manifests().ExpiredTags(ctx, later, 100)
			if err != nil || len(expired) != 1 || expired[0].Tag != "nightly" {
				t.Fatalf("expired tags: %+v %v", expired, err)
			}
			if ok, err := db.Manifests().ExpireTag(ctx, expired[0], later, "berth-expiry"); !ok || err != nil {
				t.Fatalf("expire: %v %v", ok, err)
			}
			if ok, _ := db.Manifests().ExpireTag(ctx, expired[0], later, "berth-expiry"); ok {
				t.Fatal("expired twice")
			}
			if _, err := db.Manifests().GetManifest(ctx, "acme/app", "nightly", "", false); !errors.Is(err, meta.ErrManifestNotFound) {
				t.Fatalf("nightly after expiry: %v", err)
			}
			// weekly (moved onto m) still holds m; the moved manifest was
			// left by weekly: the time machine keeps it from collection.
			gc := db.Collector().WithTimeMachine(time.Hour)
			dangling, _ := gc.DanglingManifests(ctx, time.Now().Add(time.Hour), 100)
			if slices.ContainsFunc(dangling, func(c meta.GCCandidate) bool { return c.Digest == moved.Digest }) {
				t.Fatal("the time machine does not keep a manifest a tag left")
			}
			keep, _ := gc.ManifestGCKeepers(ctx, "acme/app", moved.Digest)
			if keep.RestorableUntil.IsZero() {
				t.Fatalf("keepers: %+v", keep)
			}
			dangling, _ = db.Collector().DanglingManifests(ctx, time.Now().Add(time.Hour), 100)
			if !slices.ContainsFunc(dangling, func(c meta.GCCandidate) bool { return c.Digest == moved.Digest }) {
				t.Fatal("without a time machine the left manifest is not collectable")
			}
			if err := db.Manifests().RestoreTag(ctx, "acme/app", "weekly", moved.Digest, "alice"); err != nil {
				t.Fatal(err)
			}
			if got, _ := db.Manifests().GetManifest(ctx, "acme/app", "weekly", "", false); got.Digest != moved.Digest {
				t.Fatal("restore did not bring weekly back")
			}
		})
	}
}

// TestAutoPrune: number_of_tags keeps the newest N tags its pattern
// covers; creation_date deletes those older than its age; immutable tags
// are never pruned nor counted among the newest N; a repository policy and its organization's apply
// together; pruned tags are announced and restorable.
func TestAutoPrune(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			for i := range 6 {
				if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf(fmt.Sprint("build ", i)),
					Tag: fmt.Sprintf("build-%d", i)}); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * time.Millisecond) // distinct push times
			}
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("rel"), Tag: "v1"}); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", TagPattern: "^build-(0|5)$", TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyAutoPrune, Namespace: "acme", Method: meta.PruneByCount, Value: "3",
				TagPattern: "^build-", TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			repos, err := db.Manifests().PrunedRepositories(ctx)
			if err != nil || !slices.Equal(repos, []string{"acme/app"}) {
				t.Fatalf("pruned repositories: %v %v", repos, err)
			}
			gone, err := db.Manifests().PruneRepository(ctx, "acme/app", time.Now(), "berth-autoprune")
			if err != nil {
				t.Fatal(err)
			}
			// build-4, 3, 2 kept (the newest 3 that may be pruned); build-1
			// pruned; build-5 and build-0 immutable, and not counted.
			if !slices.Equal(gone, []string{"build-1"}) {
				t.Fatalf("pruned: %v", gone)
			}
			if again, _ := db.Manifests().PruneRepository(ctx, "acme/app", time.Now(), "berth-autoprune"); len(again) != 0 {
				t.Fatalf("pruned again: %v", again)
			}
			// A repository policy by age prunes every tag older than an hour
			// an hour from now, v1 included, build-0 and build-5 excepted.
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyAutoPrune, Namespace: "acme", Repository: "acme/app",
				Method: meta.PruneByAge, Value: "1h", TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			gone, _ = db.Manifests().PruneRepository(ctx, "acme/app", time.Now().Add(2*time.Hour), "berth-autoprune")
			if !slices.Equal(gone, []string{"build-2", "build-3", "build-4", "v1"}) {
				t.Fatalf("pruned by age: %v", gone)
			}
			evs, _ := db.Outbox().EventsAfter(ctx, 0, 1000)
			pruned := 0
			for _, e := range evs {
				if e.Kind == meta.EventTagDeleted && strings.Contains(string(e.Data), `"pruned":true`) {
					pruned++
				}
			}
			if pruned != 5 {
				t.Fatalf("%d tag_deleted events for 5 pruned tags", pruned)
			}
			if err := db.Manifests().RestoreTag(ctx, "acme/app", "v1", manifestOf("rel").Digest, "alice"); err != nil {
				t.Fatalf("restore a pruned tag: %v", err)
			}
		})
	}
}

// TestExpiryNoticeOncePerReplica: replicas noticing the same expiring tag
// at the same moment announce it once: only the transaction that records
// the notice appends the event (both appended it on PostgreSQL).
func TestExpiryNoticeOncePerReplica(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			if _, err := db.Notifications().CreateNotification(ctx, meta.Notification{UUID: "expiry", Scope: "repository", Target: "acme/app",
				Event: "repo_image_expiry", Method: "webhook", Config: json.RawMessage(`{"url":"https://example.com"}`),
				EventConfig: json.RawMessage(`{"days":3}`)}); err != nil {
				t.Fatal(err)
			}
			const rounds = 15
			for i := range rounds {
				tag := fmt.Sprint("t", i)
				if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf(tag), Tag: tag}); err != nil {
					t.Fatal(err)
				}
				if err := db.Manifests().SetTagExpiration(ctx, "acme/app", tag, time.Now().Add(24*time.Hour)); err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				for range 3 {
					wg.Go(func() {
						if _, err := db.Manifests().NoticeExpiringTags(ctx, time.Now()); err != nil {
							t.Error(err)
						}
					})
				}
				wg.Wait()
			}
			evs, _ := db.Outbox().EventsAfter(ctx, 0, 1000)
			n := 0
			for _, e := range evs {
				if e.Kind == "repo_image_expiry" {
					n++
				}
			}
			if n != rounds {
				t.Fatalf("%d repo_image_expiry events for %d tags", n, rounds)
			}
		})
	}
}

// TestImmutableTagRacingFirstPushes: pushes of different images that all
// create the same tag an immutability policy covers, at once: exactly one
// is acknowledged, the others are refused as immutable, and the tag and
// its history hold the winner's digest alone. On PostgreSQL every push
// used to find no tag, and the last to commit moved it.
func TestImmutableTagRacingFirstPushes(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("first"), Tag: "latest"}); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme",
				TagPattern: `^v`, TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			const pushers = 6
			for round := range 5 {
				tag := fmt.Sprintf("v%d", round)
				errs := make([]error, pushers)
				var fns []func()
				for i := range pushers {
					fns = append(fns, func() {
						errs[i] = db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app",
							Manifest: manifestOf(fmt.Sprintf("%s by %d", tag, i)), Tag: tag})
					})
				}
				together(fns...)
				winner := -1
				for i, err := range errs {
					var imm *meta.ImmutableTagError
					switch {
					case err == nil && winner >= 0:
						t.Fatalf("%s: pushes %d and %d were both acknowledged", tag, winner, i)
					case err == nil:
						winner = i
					case !errors.As(err, &imm):
						t.Fatalf("%s: push %d: %v", tag, i, err)
					}
				}
				if winner < 0 {
					t.Fatalf("%s: no push was acknowledged", tag)
				}
				want := manifestOf(fmt.Sprintf("%s by %d", tag, winner)).Digest
				m, err := db.Manifests().GetManifest(ctx, "acme/app", tag, "", false)
				if err != nil || m.Digest != want {
					t.Fatalf("%s points at %s (%v), the acknowledged push was %s", tag, m.Digest, err, want)
				}
				hist, err := db.Manifests().TagHistory(ctx, "acme/app", tag, 10)
				if err != nil || len(hist) != 1 || hist[0].Digest != want {
					t.Fatalf("%s's history: %+v %v", tag, hist, err)
				}
			}
		})
	}
}

// TestImmutableTagsLeaveTheExpiredList: a push that asks for an
// expiration (quay.expires-after) onto a tag an immutability policy
// covers gets none, and a tag that becomes immutable after it was given
// one loses it with the policy, and stays (readable at once: an expired
// tag is not). Before, both stayed at the head of the expired list for
// ever: once a batch of them filled it, no other tag in the registry
// expired.
func TestImmutableTagsLeaveTheExpiredList(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := openNoMinimum(t, dialect) // tags that expired already
			orgWithRepo(t, db)
			past := time.Now().Add(-time.Minute)
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("old"), Tag: "old-1", ExpiresAt: past}); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme",
				TagPattern: `^(v|old-)`, TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("release"), Tag: "v1", ExpiresAt: past}); err != nil {
				t.Fatal(err)
			}
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("scratch"), Tag: "scratch", ExpiresAt: past}); err != nil {
				t.Fatal(err)
			}
			names := func() []string {
				t.Helper()
				exp, err := db.Manifests().ExpiredTags(ctx, time.Now(), 100)
				if err != nil {
					t.Fatal(err)
				}
				var out []string
				for _, e := range exp {
					out = append(out, e.Tag)
				}
				slices.Sort(out)
				return out
			}
			if got := names(); !slices.Equal(got, []string{"scratch"}) {
				t.Fatalf("expired tags: %v (an immutable tag kept its expiration)", got)
			}
			for tag, live := range map[string]bool{"old-1": true, "v1": true, "scratch": false} {
				if _, err := db.Manifests().GetManifest(ctx, "acme/app", tag, "", false); (err == nil) != live {
					t.Fatalf("before a pass, %s: %v", tag, err)
				}
			}
			exp, _ := db.Manifests().ExpiredTags(ctx, time.Now(), 100)
			for _, e := range exp {
				deleted, err := db.Manifests().ExpireTag(ctx, e, time.Now(), "expiry")
				if err != nil || deleted != (e.Tag == "scratch") {
					t.Fatalf("expire %s: deleted %v, %v", e.Tag, deleted, err)
				}
			}
			if got := names(); len(got) != 0 {
				t.Fatalf("still expired after a pass: %v", got)
			}
			for _, tag := range []string{"old-1", "v1"} {
				if _, err := db.Manifests().GetManifest(ctx, "acme/app", tag, "", false); err != nil {
					t.Fatalf("immutable %s: %v", tag, err)
				}
			}
		})
	}
}

// TestTagPoliciesPerScopeAreCapped: an organization, and each of its
// repositories, may have at most MaxTagPoliciesPerScope policies of a
// kind (each applies to every tag a push or a pruning pass touches); the
// kinds and scopes count apart.
func TestTagPoliciesPerScopeAreCapped(t *testing.T) {
	ctx := context.Background()
	db := metatest.Open(t, "sqlite")
	orgWithRepo(t, db)
	if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("x"), Tag: "latest"}); err != nil {
		t.Fatal(err)
	}
	create := func(kind, repo string, i int) error {
		p := meta.TagPolicy{Kind: kind, Namespace: "acme", Repository: repo, TagPattern: fmt.Sprintf("^v%d", i), TagPatternMatches: true}
		if kind == meta.PolicyAutoPrune {
			p.Method, p.Value = "number_of_tags", "10"
		}
		_, err := db.Policies().CreateTagPolicy(ctx, p)
		return err
	}
	for _, scope := range []struct{ kind, repo string }{{meta.PolicyImmutability, ""}, {meta.PolicyImmutability, "acme/app"}, {meta.PolicyAutoPrune, ""}} {
		for i := range meta.MaxTagPoliciesPerScope {
			if err := create(scope.kind, scope.repo, i); err != nil {
				t.Fatalf("%s %q policy %d: %v", scope.kind, scope.repo, i, err)
			}
		}
		if err := create(scope.kind, scope.repo, 99); !errors.Is(err, meta.ErrTooManyPolicies) {
			t.Fatalf("%s %q: one more: %v", scope.kind, scope.repo, err)
		}
	}
	// The compiled patterns apply as before: v1 is immutable.
	if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("v1"), Tag: "v1"}); err != nil {
		t.Fatal(err)
	}
	var imm *meta.ImmutableTagError
	if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("v1 again"), Tag: "v1"}); !errors.As(err, &imm) {
		t.Fatalf("v1 moved: %v", err)
	}
}

// TestDeleteTagRaces: of deletes of one tag at once, one deletes it and
// the others find it gone, with one tag_deleted event; a delete racing a
// push that moves the tag names, in its event, the digest it deleted.
func TestDeleteTagRaces(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			const deleters = 4
			for round := range 5 {
				tag := fmt.Sprintf("t%d", round)
				if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf(tag), Tag: tag}); err != nil {
					t.Fatal(err)
				}
				errs := make([]error, deleters)
				var fns []func()
				for i := range deleters {
					fns = append(fns, func() { errs[i] = db.Manifests().DeleteTag(ctx, "acme/app", tag, "alice") })
				}
				var moved error
				moving := manifestOf(tag + " moved")
				fns = append(fns, func() {
					moved = db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: moving, Tag: tag})
				})
				together(fns...)
				if moved != nil {
					t.Fatal(moved)
				}
				deleted := 0
				for i, err := range errs {
					switch {
					case err == nil:
						deleted++
					case !errors.Is(err, meta.ErrManifestNotFound):
						t.Fatalf("%s: delete %d: %v", tag, i, err)
					}
				}
				evs, err := db.Outbox().EventsAfter(ctx, 0, 10000)
				if err != nil {
					t.Fatal(err)
				}
				var events []string
				for _, e := range evs {
					if e.Kind == meta.EventTagDeleted && strings.Contains(string(e.Data), `"tag":"`+tag+`"`) {
						events = append(events, string(e.Data))
					}
				}
				if deleted != len(events) || deleted < 1 || deleted > 2 {
					t.Fatalf("%s: %d deletes acknowledged, %d tag_deleted events: %v", tag, deleted, len(events), events)
				}
				// The push came first (a delete removed the moved tag), last
				// (it made the tag again after a delete), or between two
				// deletes: whenever the tag is gone, the last delete removed
				// the moved tag, and its event must say so.
				m, err := db.Manifests().GetManifest(ctx, "acme/app", tag, "", false)
				switch {
				case err == nil && m.Digest != moving.Digest:
					t.Fatalf("%s points at %s, not the pushed %s", tag, m.Digest, moving.Digest)
				case errors.Is(err, meta.ErrManifestNotFound) && !strings.Contains(events[len(events)-1], moving.Digest.String()):
					t.Fatalf("%s: the delete removed the moved tag (%s), but its event says %s", tag, moving.Digest, events[len(events)-1])
				case err != nil && !errors.Is(err, meta.ErrManifestNotFound):
					t.Fatal(err)
				}
			}
		})
	}
}

// TestDeleteManifestOfManyTags: a manifest's delete checks all its tags'
// immutability at once (it ran two queries and compiled the policies per
// tag, in the delete's write transaction): a tag immutable by name past
// the first batch of names, or by a policy, still refuses it, naming the
// tag; without one, the delete removes every tag.
func TestDeleteManifestOfManyTags(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			m := manifestOf("many tags")
			var tags []string
			for i := range 700 {
				tags = append(tags, fmt.Sprintf("t-%04d", i))
			}
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: m, Tag: tags[0], MoreTags: tags[1:]}); err != nil {
				t.Fatal(err)
			}
			if err := db.Exec(ctx, `INSERT INTO immutable_tags (repository_id, name, reason, created_at)
				SELECT id, 't-0650', 'a rollback tag', 0 FROM repositories WHERE name = 'acme/app'`); err != nil {
				t.Fatal(err)
			}
			var imm *meta.ImmutableTagError
			if err := db.Manifests().DeleteManifest(ctx, "acme/app", m.Digest, "alice"); !errors.As(err, &imm) || imm.Tag != "t-0650" || imm.Reason != "a rollback tag" {
				t.Fatalf("delete with a tag immutable by name: %v", err)
			}
			if err := db.Exec(ctx, "DELETE FROM immutable_tags"); err != nil {
				t.Fatal(err)
			}
			p, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", TagPattern: `^t-06`, TagPatternMatches: true})
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Manifests().DeleteManifest(ctx, "acme/app", m.Digest, "alice"); !errors.As(err, &imm) || imm.Tag != "t-0600" || !strings.Contains(imm.Reason, p.UUID) {
				t.Fatalf("delete with tags immutable by policy: %v", err)
			}
			if err := db.Policies().DeleteTagPolicy(ctx, meta.PolicyImmutability, p.UUID); err != nil {
				t.Fatal(err)
			}
			if err := db.Manifests().DeleteManifest(ctx, "acme/app", m.Digest, "alice"); err != nil {
				t.Fatal(err)
			}
			if left, err := db.Manifests().ListTags(ctx, "acme/app", "", 1000); err != nil || len(left) != 0 {
				t.Fatalf("tags left: %d %v", len(left), err)
			}
		})
	}
}

// TestDirectPermissionsKeepAMember: a user in no team of an organization
// but granted one of its repositories directly (a creator team's member
// who pushed it, removed from the team since) is listed among the
// members with that repository, and removing it from the organization
// takes the permission away (it was "not a member", and kept it).
func TestDirectPermissionsKeepAMember(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			if err := db.Repositories().EnsureRepository(ctx, "acme/app", meta.Writer{Actor: "owner"}); err != nil {
				t.Fatal(err)
			}
			bob, err := db.Users().CreateUser(ctx, meta.User{Username: "bob", SecretHash: "x"})
			if err != nil {
				t.Fatal(err)
			}
			ri, err := db.Repositories().Repository(ctx, "acme/app")
			if err != nil || !ri.Exists {
				t.Fatalf("acme/app: %+v %v", ri, err)
			}
			if err := db.Access().SetPermission(ctx, ri.ID, bob.ID, 0, "admin"); err != nil {
				t.Fatal(err)
			}
			members, err := db.Organizations().OrgMembers(ctx, "acme")
			if err != nil {
				t.Fatal(err)
			}
			found := false
			for _, m := range members {
				if m.User.Username == "bob" {
					found = len(m.Teams) == 0 && slices.Equal(m.Repositories, []string{"acme/app"})
				}
			}
			if !found {
				t.Fatalf("bob is not listed with acme/app: %+v", members)
			}
			if _, err := db.Organizations().RemoveOrgMember(ctx, "acme", "", bob.ID); err != nil {
				t.Fatalf("remove bob: %v", err)
			}
			st, err := db.Access().StandingOf(ctx, bob, "acme/app")
			if err != nil || st.Role != "" {
				t.Fatalf("bob's standing on acme/app after his removal: %+v %v", st, err)
			}
			if _, err := db.Organizations().RemoveOrgMember(ctx, "acme", "", bob.ID); !errors.Is(err, meta.ErrUserNotFound) {
				t.Fatalf("a second removal: %v", err)
			}
		})
	}
}
