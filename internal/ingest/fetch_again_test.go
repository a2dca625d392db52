package ingest_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/ingest"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
)

// TestFetchAgainWhatWentMissing: a reference the copier brought in and
// that is gone when the manifest is stored (garbage collection took it
// while a slow copy fetched the others) is asked for once more, alone,
// and the manifest stored. A fetcher that never brings it is asked twice,
// then the store's refusal is returned. Before, the first refusal was
// returned: "manifest references unknown blob".
func TestFetchAgainWhatWentMissing(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, ingest.Options{})
			cfg := e.blob(oci.MediaTypeImageConfig, `{"os":"linux"}`)
			l1, l2 := e.blob(oci.MediaTypeLayerGzip, "one"), e.blob(oci.MediaTypeLayerGzip, "two")
			gone := l1["digest"].(digest.Digest)
			var asked []string
			taken := false
			fetch := ingest.Fetch(func(ctx context.Context, r oci.Ref) error {
				asked = append(asked, string(e.upstream[r.Digest]))
				if r.Digest == gone && !taken {
					taken = true // as if linked, then collected before the put
					return nil
				}
				return e.link(repo, r.Digest)
			})
			res, err := e.in.Ingest(ctx, ingest.Request{Repository: repo, Tags: []string{"v1"}, Body: body(t, image(cfg, l1, l2))}, fetch)
			if err != nil {
				t.Fatalf("a layer gone before the put: %v", err)
			}
			if got, want := strings.Join(asked, "|"), `{"os":"linux"}|one|two|one`; got != want {
				t.Errorf("Fetch asked for %q, want %q", got, want)
			}
			if !e.stored(repo, res.Manifest.Digest) {
				t.Error("manifest not stored")
			}

			asked = nil
			never := e.blob(oci.MediaTypeLayerGzip, "never brought")
			lazy := ingest.Fetch(func(ctx context.Context, r oci.Ref) error {
				asked = append(asked, string(e.upstream[r.Digest]))
				if r.Digest == never["digest"].(digest.Digest) {
					return nil
				}
				return e.link(repo, r.Digest)
			})
			var me *meta.MissingRefsError
			if _, err := e.in.Ingest(ctx, ingest.Request{Repository: repo, Body: body(t, image(cfg, never))}, lazy); !errors.As(err, &me) || me.Count != 1 {
				t.Fatalf("a layer never brought: %v, want it refused as missing", err)
			}
			if got, want := strings.Join(asked, "|"), `{"os":"linux"}|never brought|never brought`; got != want {
				t.Errorf("Fetch asked for %q, want %q", got, want)
			}
		})
	}
}
