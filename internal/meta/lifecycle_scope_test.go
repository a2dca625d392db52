package meta_test

import (
	"context"
	"errors"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestPolicyOfADeletedScope: a policy whose repository, or organization,
// was deleted between CreateTagPolicy's look-up of it and its insert is
// refused as not found (ErrRepositoryNotFound, ErrNamespaceNotFound),
// not with the foreign key's refusal (which the API answered 500).
func TestPolicyOfADeletedScope(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			orgWithRepo(t, db)
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("x"), Tag: "latest"}); err != nil {
				t.Fatal(err)
			}
			nsID, repoID, err := db.Policies().PolicyScopeIDs(ctx, "acme", "acme/app")
			if err != nil || repoID == nil {
				t.Fatalf("scope of acme/app: %v %v", repoID, err)
			}
			if err := db.Repositories().DeleteRepository(ctx, "acme/app", "alice"); err != nil {
				t.Fatal(err)
			}
			for _, kind := range []string{meta.PolicyImmutability, meta.PolicyAutoPrune} {
				p := meta.TagPolicy{Kind: kind, Namespace: "acme", Repository: "acme/app", Method: meta.PruneByCount, Value: "1", TagPattern: "^v", TagPatternMatches: true}
				if err := db.Policies().InsertTagPolicyAt(ctx, p, nsID, repoID); !errors.Is(err, meta.ErrRepositoryNotFound) {
					t.Fatalf("%s policy of a repository deleted since its look-up: %v", kind, err)
				}
			}
			xID, _, err := db.Policies().PolicyScopeIDs(ctx, "acme_x", "")
			if err != nil {
				t.Fatal(err)
			}
			if err := db.Organizations().DeleteOrganization(ctx, "acme_x"); err != nil {
				t.Fatal(err)
			}
			p := meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme_x", TagPattern: "^v", TagPatternMatches: true}
			if err := db.Policies().InsertTagPolicyAt(ctx, p, xID, nil); !errors.Is(err, meta.ErrNamespaceNotFound) {
				t.Fatalf("policy of an organization deleted since its look-up: %v", err)
			}
			if _, err := db.Policies().CreateTagPolicy(ctx, p); !errors.Is(err, meta.ErrNamespaceNotFound) {
				t.Fatalf("policy of a deleted organization: %v", err)
			}
		})
	}
}
