package meta_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// BenchmarkPutManifest measures the push transaction of a new image
// manifest (a config, 4 layers every image shares and one of its own, all
// stored beforehand): what namespace quota accounting adds to a push.
func BenchmarkPutManifest(b *testing.B) {
	for _, d := range metatest.Dialects() {
		b.Run(d, func(b *testing.B) {
			ctx := context.Background()
			db := metatest.Open(b, d)
			store := func(bl meta.Blob) {
				if _, err := db.Blobs().StoreBlob(ctx, "bench/app", bl, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
					b.Fatal(err)
				}
			}
			var refs []meta.Ref
			for i := range 5 {
				bl := meta.Blob{Digest: digest.FromString(fmt.Sprint("shared ", i)), Size: 1 << 20}
				store(bl)
				refs = append(refs, meta.Ref{Digest: bl.Digest})
			}
			own := make([]meta.Ref, b.N)
			for i := range b.N {
				bl := meta.Blob{Digest: digest.FromString(fmt.Sprint("own ", i)), Size: 1 << 20}
				store(bl)
				own[i] = meta.Ref{Digest: bl.Digest}
			}
			b.ResetTimer()
			for i := range b.N {
				m := manifestOf(fmt.Sprint("bench image ", i))
				if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "bench/app", Manifest: m,
					Refs: append(refs[:5:5], own[i]), Tag: fmt.Sprint("v", i)}); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
