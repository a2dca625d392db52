package meta_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// BenchmarkDeleteManifestOfManyTags: deleting a manifest that 2,000 tags
// point at, in a namespace with five immutability policies (none of which
// covers them): the immutability of all its tags is read in a few
// statements, not two per tag.
func BenchmarkDeleteManifestOfManyTags(b *testing.B) {
	ctx := context.Background()
	db := metatest.Open(b, "sqlite")
	u, err := db.Users().CreateUser(ctx, meta.User{Username: "owner", SecretHash: "x"})
	if err != nil {
		b.Fatal(err)
	}
	if _, err := db.Organizations().CreateOrganization(ctx, "acme", u.ID); err != nil {
		b.Fatal(err)
	}
	for i := range 5 {
		if _, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme",
			TagPattern: fmt.Sprintf(`^release-%d\.`, i), TagPatternMatches: true}); err != nil {
			b.Fatal(err)
		}
	}
	var tags []string
	for i := range 2000 {
		tags = append(tags, fmt.Sprintf("build-%04d", i))
	}
	m := manifestOf("many tags")
	for b.Loop() {
		b.StopTimer()
		if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: m, Tag: tags[0], MoreTags: tags[1:]}); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if err := db.Manifests().DeleteManifest(ctx, "acme/app", m.Digest, "alice"); err != nil {
			b.Fatal(err)
		}
	}
}
