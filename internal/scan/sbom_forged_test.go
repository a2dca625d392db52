package scan_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/scan/index"
)

// TestClientSBOMNamedBerthsIsNotBerths: a referrer a client pushed with
// Berth's SBOM annotation (oras attach --annotation dev.berth.sbom=spdx,
// or one copied from another Berth) does not stand in for Berth's own:
// the scan still attaches its SBOM, stored to go with the image, and the
// referrers listing tells the two apart.
func TestClientSBOMNamedBerthsIsNotBerths(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, index.Limits{})
			dgst, _ := e.push("acme/one", "1", debianLayer(t))
			subject := mustDigest(t, dgst)
			content := fmt.Appendf(nil, `{"schemaVersion":2,"mediaType":%q,"artifactType":%q,"config":{"mediaType":%q,"digest":%q,"size":2},"layers":[],"subject":{"digest":%q},"annotations":{"dev.berth.sbom":"spdx"}}`,
				oci.MediaTypeImageManifest, oci.MediaTypeSPDX, oci.MediaTypeEmptyJSON, oci.EmptyJSONDigest, subject)
			forged := meta.Manifest{Digest: digest.FromBytes(content), MediaType: oci.MediaTypeImageManifest, ArtifactType: oci.MediaTypeSPDX,
				Size: int64(len(content)), Content: content, Subject: subject, Annotations: map[string]string{"dev.berth.sbom": "spdx"}}
			if err := e.db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/one", Manifest: forged}); err != nil {
				t.Fatal(err)
			}
			if _, _, err := runScanJob(t, e, e.svc); err != nil {
				t.Fatal(err)
			}
			entries, err := e.db.Manifests().ReferrerEntries(ctx, meta.ReferrerQuery{Repository: "acme/one", Subject: subject, ArtifactType: oci.MediaTypeSPDX})
			if err != nil {
				t.Fatal(err)
			}
			berths := 0
			for _, en := range entries {
				if en.BerthSBOM {
					berths++
					if en.Digest == forged.Digest {
						t.Errorf("the client's referrer %s passes for Berth's SBOM", en.Digest)
					}
				}
			}
			if len(entries) != 2 || berths != 1 {
				t.Fatalf("SPDX referrers after the scan: %+v, want the client's and Berth's own", entries)
			}
		})
	}
}
