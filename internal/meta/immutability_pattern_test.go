package meta_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestImmutabilityPatternAnchored: an immutability policy's tagPattern
// is matched from the start of the tag, as Quay's (a regular expression
// match, not a search): "dev" covers dev-1 but not feature-dev nor
// pr-dev. With tagPatternMatches false, feature-dev is covered: pushed
// once, it cannot be moved. The tag list shows what the store enforces.
// Auto-prune keeps searching anywhere in the tag, as Quay's does.
func TestImmutabilityPatternAnchored(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			n := 0
			put := func(repo, tag string) error {
				n++
				return db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: manifestOf(fmt.Sprint("build ", n)), Tag: tag})
			}
			for _, r := range []string{"acme/notdev", "acme/dev"} {
				if err := put(r, "latest"); err != nil {
					t.Fatal(err)
				}
			}
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", Repository: "acme/notdev",
				TagPattern: "dev", TagPatternMatches: false}); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", Repository: "acme/dev",
				TagPattern: "dev", TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			var imm *meta.ImmutableTagError
			// tagPatternMatches false: every tag that does not start with dev.
			if err := put("acme/notdev", "feature-dev"); err != nil {
				t.Fatalf("first push of feature-dev: %v", err)
			}
			if err := put("acme/notdev", "feature-dev"); !errors.As(err, &imm) {
				t.Fatalf("second push of feature-dev, which does not start with dev: %v", err)
			}
			for _, tag := range []string{"dev-1", "devel"} {
				for range 2 {
					if err := put("acme/notdev", tag); err != nil {
						t.Fatalf("%s starts with dev (excluded): %v", tag, err)
					}
				}
			}
			// tagPatternMatches true: only the tags that start with dev.
			for range 2 {
				if err := put("acme/dev", "pr-dev"); err != nil {
					t.Fatalf("pr-dev does not start with dev (not covered): %v", err)
				}
			}
			if err := put("acme/dev", "dev-1"); err != nil {
				t.Fatal(err)
			}
			if err := put("acme/dev", "dev-1"); !errors.As(err, &imm) {
				t.Fatalf("second push of dev-1: %v", err)
			}
			rows, _, err := db.Manifests().TagRows(ctx, "acme/dev", meta.TagRowQuery{Limit: 10})
			if err != nil {
				t.Fatal(err)
			}
			shown := map[string]bool{}
			for _, r := range rows {
				shown[r.Name] = r.Immutable != ""
			}
			if !shown["dev-1"] || shown["pr-dev"] || shown["latest"] {
				t.Fatalf("tag list's immutable tags: %v, want dev-1 only", shown)
			}
			ps, _ := db.Policies().TagPolicies(ctx, meta.PolicyImmutability, "acme", "acme/dev")
			if err := meta.ImmutableByPolicy(ps, "pr-dev"); err != nil {
				t.Fatalf("ImmutableByPolicy covers pr-dev: %v", err)
			}
			if err := meta.ImmutableByPolicy(ps, "dev-2"); !errors.As(err, &imm) {
				t.Fatalf("ImmutableByPolicy does not cover dev-2: %v", err)
			}

			// Auto-prune: "dev" anywhere in the tag.
			for i := range 3 {
				if err := put("acme/app", fmt.Sprint("pr-dev-", i)); err != nil {
					t.Fatal(err)
				}
				time.Sleep(2 * time.Millisecond)
			}
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyAutoPrune, Namespace: "acme", Repository: "acme/app",
				Method: meta.PruneByCount, Value: "1", TagPattern: "dev", TagPatternMatches: true}); err != nil {
				t.Fatal(err)
			}
			gone, err := db.Manifests().PruneRepository(ctx, "acme/app", time.Now(), "berth-autoprune")
			if err != nil || !slices.Equal(gone, []string{"pr-dev-0", "pr-dev-1"}) {
				t.Fatalf("auto-prune of pattern dev pruned %v (%v), want pr-dev-0 and pr-dev-1", gone, err)
			}
		})
	}
}

// TestImmutabilityPolicyValidation: as Quay's, an immutability policy's
// tagPattern is trimmed of surrounding white space, at most 256
// characters, and unique among the immutability policies of its scope
// (the organization's, or one repository's) whatever its
// tagPatternMatches; a change to another's pattern is refused too.
func TestImmutabilityPolicyValidation(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("x"), Tag: "latest"}); err != nil {
				t.Fatal(err)
			}
			create := func(repo, pattern string, matches bool) (meta.TagPolicy, error) {
				return db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", Repository: repo,
					TagPattern: pattern, TagPatternMatches: matches})
			}
			p, err := create("", "  ^v[0-9]+\t\n", true)
			if err != nil {
				t.Fatal(err)
			}
			if got, _ := db.Policies().TagPolicy(ctx, meta.PolicyImmutability, "acme", "", p.UUID); got.TagPattern != "^v[0-9]+" {
				t.Fatalf("stored pattern %q, want it trimmed", got.TagPattern)
			}
			if _, err := create("", "   ", true); !errors.Is(err, meta.ErrInvalidPolicy) {
				t.Fatalf("a pattern of white space only: %v", err)
			}
			if _, err := create("", strings.Repeat("é", 257), true); !errors.Is(err, meta.ErrInvalidPolicy) {
				t.Fatalf("a pattern of 257 characters: %v", err)
			}
			if _, err := create("", strings.Repeat("é", 256), true); err != nil {
				t.Fatalf("a pattern of 256 characters: %v", err)
			}
			for _, matches := range []bool{true, false} {
				if _, err := create("", " ^v[0-9]+ ", matches); !errors.Is(err, meta.ErrDuplicatePolicy) {
					t.Fatalf("the same pattern again (matches %v): %v", matches, err)
				}
			}
			// Another scope may have it; auto-prune policies are not
			// concerned.
			if _, err := create("acme/app", "^v[0-9]+", true); err != nil {
				t.Fatalf("the organization's pattern on a repository: %v", err)
			}
			if _, err := create("acme/app", "^v[0-9]+", true); !errors.Is(err, meta.ErrDuplicatePolicy) {
				t.Fatalf("the repository's pattern again: %v", err)
			}
			for range 2 {
				if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyAutoPrune, Namespace: "acme", Method: meta.PruneByCount, Value: "5",
					TagPattern: "^v[0-9]+", TagPatternMatches: true}); err != nil {
					t.Fatalf("auto-prune policies of one pattern: %v", err)
				}
			}
			other, err := create("", "^release-", true)
			if err != nil {
				t.Fatal(err)
			}
			other.TagPattern = "^v[0-9]+"
			if err := db.Policies().UpdateTagPolicy(ctx, other); !errors.Is(err, meta.ErrDuplicatePolicy) {
				t.Fatalf("a change to another policy's pattern: %v", err)
			}
			other.TagPattern, other.TagPatternMatches = " ^release- ", false
			if err := db.Policies().UpdateTagPolicy(ctx, other); err != nil {
				t.Fatalf("a change keeping its own pattern: %v", err)
			}
			if got, _ := db.Policies().TagPolicy(ctx, meta.PolicyImmutability, "acme", "", other.UUID); got.TagPattern != "^release-" || got.TagPatternMatches {
				t.Fatalf("after the change: %+v", got)
			}
			other.TagPattern = strings.Repeat("x", 300)
			if err := db.Policies().UpdateTagPolicy(ctx, other); !errors.Is(err, meta.ErrInvalidPolicy) {
				t.Fatalf("a change to a pattern of 300 characters: %v", err)
			}
		})
	}
}

// TestUpgradeKeepsImmutabilityPatternsMeaning: a pattern stored before
// patterns were matched from the start of the tag (schema 36) covers,
// after the upgrade, the tags it covered before: "prod" still protects
// app-prod, with tagPatternMatches false "dev" still leaves feature-dev
// alone, and a pattern that began with ^ is left as it was.
func TestUpgradeKeepsImmutabilityPatternsMeaning(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db, err := meta.OpenAt(ctx, metatest.DSN(t, dialect), 36)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			orgWithRepo(t, db)
			n := 0
			put := func(repo, tag string) error {
				n++
				return db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: manifestOf(fmt.Sprint("upgrade build ", n)), Tag: tag})
			}
			for _, r := range []string{"acme/prod", "acme/notdev", "acme/anchored", "acme/either"} {
				if err := put(r, "latest"); err != nil {
					t.Fatal(err)
				}
			}
			for _, p := range []meta.TagPolicy{
				{Repository: "acme/prod", TagPattern: "prod", TagPatternMatches: true},
				{Repository: "acme/notdev", TagPattern: "dev", TagPatternMatches: false},
				{Repository: "acme/anchored", TagPattern: "^v[0-9]", TagPatternMatches: true},
				{Repository: "acme/either", TagPattern: "^v[0-9]+|stable", TagPatternMatches: true},
			} {
				p.Kind, p.Namespace = meta.PolicyImmutability, "acme"
				if _, err := db.Policies().CreateTagPolicy(ctx, p); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			var imm *meta.ImmutableTagError
			twice := func(repo, tag string, immutable bool) {
				t.Helper()
				if err := put(repo, tag); err != nil {
					t.Fatalf("first push of %s:%s: %v", repo, tag, err)
				}
				err := put(repo, tag)
				if immutable != errors.As(err, &imm) || (!immutable && err != nil) {
					t.Fatalf("second push of %s:%s (immutable %v): %v", repo, tag, immutable, err)
				}
			}
			twice("acme/prod", "app-prod", true)
			twice("acme/prod", "prod-1", true)
			twice("acme/prod", "staging", false)
			twice("acme/notdev", "feature-dev", false)
			twice("acme/notdev", "release", true)
			twice("acme/anchored", "v1", true)
			twice("acme/anchored", "rc-v1", false)
			twice("acme/either", "x-stable", true)
			twice("acme/either", "v2", true)
			twice("acme/either", "rc-v2", false)
			// The rewritten pattern, sent back as it shows, is accepted.
			ps, err := db.Policies().TagPolicies(ctx, meta.PolicyImmutability, "acme", "acme/either")
			if err != nil || len(ps) != 1 || ps[0].TagPattern != ".*(?:^v[0-9]+|stable)" {
				t.Fatalf("pattern with an alternation after the upgrade: %+v, %v", ps, err)
			}
			ps[0].TagPatternMatches = false
			if err := db.Policies().UpdateTagPolicy(ctx, ps[0]); err != nil {
				t.Fatalf("update with the pattern as shown: %v", err)
			}
			ps, err = db.Policies().TagPolicies(ctx, meta.PolicyImmutability, "acme", "acme/anchored")
			if err != nil || len(ps) != 1 || ps[0].TagPattern != "^v[0-9]" {
				t.Fatalf("anchored pattern after the upgrade: %+v, %v", ps, err)
			}
		})
	}
}

// TestStoredPatternSentBackIsAccepted: Quay's 256 characters bound what a
// create or a change of the pattern asks for, not a pattern sent back as
// it is stored (one stored before the bound, or that the upgrade to
// schema 37 lengthened), so that Quay's UI can flip tagPatternMatches.
func TestStoredPatternSentBackIsAccepted(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			long := ".*(?:" + strings.Repeat("a", 256) + ")"
			if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", TagPattern: long, TagPatternMatches: true}); !errors.Is(err, meta.ErrInvalidPolicy) {
				t.Fatalf("a new pattern of %d characters: %v, want refused", len(long), err)
			}
			p, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", TagPattern: "^v", TagPatternMatches: true})
			if err != nil {
				t.Fatal(err)
			}
			stored := strings.Repeat("b", 300)
			if err := db.Exec(ctx, "UPDATE tag_policies SET tag_pattern = ? WHERE uuid = ?", stored, p.UUID); err != nil {
				t.Fatal(err)
			}
			p.TagPattern, p.TagPatternMatches = stored, false
			if err := db.Policies().UpdateTagPolicy(ctx, p); err != nil {
				t.Fatalf("the stored pattern of 300 characters sent back: %v", err)
			}
			p.TagPattern = stored + "c"
			if err := db.Policies().UpdateTagPolicy(ctx, p); !errors.Is(err, meta.ErrInvalidPolicy) {
				t.Fatalf("a changed pattern of 301 characters: %v, want refused", err)
			}
		})
	}
}
