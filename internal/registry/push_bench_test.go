package registry_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
)

// BenchmarkManifestPush measures a manifest PUT that stores a new image
// manifest: its blobs (a config and 5 layers, 4 of them shared by every
// image, one its own) are uploaded before the timer runs, so each
// iteration is the manifest transaction alone (references checked and
// recorded, tag set, event appended, and the namespace's quota usage
// updated).
func BenchmarkManifestPush(b *testing.B) {
	for _, dialect := range metatest.Dialects() {
		b.Run(dialect, func(b *testing.B) {
			url := benchServer(b, dialect)
			const shared = 4
			var layers []string
			upload := func(content string) string {
				d := digest.FromString(content)
				if resp := benchDo(b, "POST", url+"/v2/bench/app/blobs/uploads/?digest="+d.String(), []byte(content)); resp.StatusCode != 201 {
					b.Fatalf("blob push: %d", resp.StatusCode)
				}
				return fmt.Sprintf(`{"mediaType":"%s","digest":"%s","size":%d}`, oci.MediaTypeLayerGzip, d, len(content))
			}
			for i := range shared {
				layers = append(layers, upload(fmt.Sprintf("shared layer %d", i)))
			}
			cfg := `{"architecture":"amd64","os":"linux"}`
			cd := digest.FromString(cfg)
			benchDo(b, "POST", url+"/v2/bench/app/blobs/uploads/?digest="+cd.String(), []byte(cfg))
			own := make([]string, b.N)
			for i := range b.N {
				own[i] = upload(fmt.Sprintf("own layer %d", i))
			}
			b.ResetTimer()
			for i := range b.N {
				m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"%s","config":{"mediaType":"%s","digest":"%s","size":%d},"layers":[%s]}`,
					oci.MediaTypeImageManifest, oci.MediaTypeImageConfig, cd, len(cfg), strings.Join(append(layers[:shared:shared], own[i]), ","))
				if resp := benchDo(b, "PUT", fmt.Sprintf("%s/v2/bench/app/manifests/v%d", url, i), []byte(m), "Content-Type", oci.MediaTypeImageManifest); resp.StatusCode != 201 {
					b.Fatalf("push: %d", resp.StatusCode)
				}
			}
		})
	}
}
