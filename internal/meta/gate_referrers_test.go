package meta_test

import (
	"encoding/json"
	"fmt"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
)

// referrerOf is an OCI image manifest (as the registry stores it: real
// JSON) of one layer of a media type, whose subject is subject.
func referrerOf(t *testing.T, name, artifactType, layerType string, subject digest.Digest) meta.Manifest {
	t.Helper()
	cfg := oci.Descriptor{MediaType: oci.MediaTypeEmptyJSON, Digest: digest.FromString("{}"), Size: 2}
	layer := oci.Descriptor{MediaType: layerType, Digest: digest.FromString(name), Size: int64(len(name))}
	m := oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest, ArtifactType: artifactType, Config: &cfg,
		Layers: []oci.Descriptor{layer}, Subject: &oci.Descriptor{MediaType: oci.MediaTypeImageManifest, Digest: subject, Size: 100}}
	if artifactType == "" {
		cfg.MediaType = "application/vnd.oci.image.config.v1+json"
	}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oci.ParseManifest(b, oci.MediaTypeImageManifest); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return meta.Manifest{Digest: digest.FromBytes(b), MediaType: oci.MediaTypeImageManifest, ArtifactType: artifactType,
		Size: int64(len(b)), Content: b, Subject: subject}
}

// TestGateHoldsReferrersThatPublish: with every tag guarded, a manifest
// pushed by digest stays readable only when it describes readable content
// (a signature or SBOM of a published image); a runnable image that names
// a published image as its subject, or anything whose subject the
// repository does not have, is held, so a pusher cannot publish by digest
// what no check saw; ReadableReferrersAfter lists only the signature. A
// description pushed before its subject is released when its subject is
// promoted.
func TestGateHoldsReferrersThatPublish(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newGateEnv(t, dialect)
			if err := e.db.Gates().PutGate(e.ctx, meta.Gate{Repository: "mirror/node", Tags: []string{"*"}, Checkers: []string{"ci+tester"},
				Config: json.RawMessage(`{"tags":["*"]}`)}); err != nil {
				t.Fatal(err)
			}
			published := e.tagged("14")
			if published == "" || e.manifest(published).Held {
				t.Fatal("the image published before the gate is not readable")
			}
			absent := digest.FromString("a subject the repository does not have")

			image := referrerOf(t, "runnable image naming a published subject", "", "application/vnd.oci.image.layer.v1.tar+gzip", published)
			orphanImage := referrerOf(t, "runnable image naming an absent subject", "", "application/vnd.oci.image.layer.v1.tar+gzip", absent)
			sig := referrerOf(t, "signature of the published image", "application/vnd.dev.cosign.artifact.sig.v1+json",
				"application/vnd.dev.cosign.simplesigning.v1+json", published)
			earlySig := referrerOf(t, "signature of an image pushed later", "application/vnd.dev.cosign.artifact.sig.v1+json",
				"application/vnd.dev.cosign.simplesigning.v1+json", absent)
			// oras attach gives a file with no type of its own the OCI
			// layer type, under the empty config: no runtime runs it.
			sbom := referrerOf(t, "an SBOM oras attached to the published image", "application/spdx+json",
				"application/vnd.oci.image.layer.v1.tar", published)
			for _, m := range []meta.Manifest{image, orphanImage, sig, earlySig, sbom} {
				e.put(meta.PutManifest{Repository: "mirror/node", Manifest: m})
			}
			for _, tt := range []struct {
				name string
				d    digest.Digest
				held bool
			}{
				{"an image with a filesystem layer whose subject is published", image.Digest, true},
				{"an image with a filesystem layer whose subject is absent", orphanImage.Digest, true},
				{"a description whose subject is absent", earlySig.Digest, true},
				{"a description of the published image", sig.Digest, false},
				{"an artifact oras attached to the published image", sbom.Digest, false},
			} {
				if got := e.manifest(tt.d).Held; got != tt.held {
					t.Errorf("%s: held = %v, want %v", tt.name, got, tt.held)
				}
			}
			// A listing for whoever may not see held content reads only
			// the readable referrers.
			all, err := e.db.Manifests().ReferrersAfter(e.ctx, "mirror/node", published, "", meta.ReferrerKey{}, 0)
			if err != nil || len(all) != 3 {
				t.Fatalf("referrers of the published image: %d %v, want 3", len(all), err)
			}
			readable, err := e.db.Manifests().ReadableReferrersAfter(e.ctx, "mirror/node", published, "", meta.ReferrerKey{}, 0)
			if err != nil || len(readable) != 2 || readable[0].Held || readable[1].Held {
				t.Fatalf("readable referrers of the published image: %+v %v, want the signature and the SBOM", readable, err)
			}

			// The subject arrives as a candidate; its promotion releases
			// the signature pushed before it.
			subject := meta.Manifest{Digest: absent, MediaType: oci.MediaTypeImageManifest, Content: []byte("a subject the repository does not have")}
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: subject, Tag: "15"})
			c := e.live("15")
			if len(c) != 1 {
				t.Fatalf("candidates of 15: %+v", c)
			}
			if _, err := e.db.Gates().Promote(e.ctx, meta.Promotion{CandidateID: c[0].ID,
				RollbackTag: func(n int64) string { return fmt.Sprintf("15-%d", n) }}); err != nil {
				t.Fatal(err)
			}
			if e.manifest(earlySig.Digest).Held {
				t.Error("a signature pushed before its subject is held after the subject's promotion")
			}
		})
	}
}
