package meta_test

import (
	"encoding/json"
	"fmt"
	"slices"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
)

// indexReferrerOf is an OCI image index (real JSON) of one platform whose
// subject is subject.
func indexReferrerOf(t *testing.T, platform meta.Manifest, subject digest.Digest) meta.Manifest {
	t.Helper()
	m := oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageIndex,
		Manifests: []oci.Descriptor{{MediaType: oci.MediaTypeImageManifest, Digest: platform.Digest, Size: int64(len(platform.Content))}},
		Subject:   &oci.Descriptor{MediaType: oci.MediaTypeImageManifest, Digest: subject, Size: 100}}
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oci.ParseManifest(b, oci.MediaTypeImageIndex); err != nil {
		t.Fatal(err)
	}
	return meta.Manifest{Digest: digest.FromBytes(b), MediaType: oci.MediaTypeImageIndex, Size: int64(len(b)), Content: b, Subject: subject}
}

// TestGateReleaseKeepsRunnableReferrersHeld: with every tag guarded, a
// runnable image and an index (with its platform) pushed by digest with a
// candidate as their subject stay held when the candidate is promoted,
// and when a writer later restores the guarded tag to it: only the
// candidate's signature is released with it. A reader pulling them by
// digest is refused, and the referrers listing a reader gets names only
// the signature.
//
// Whether a referrer only describes its subject is recorded when it is
// stored (migration 36); stored before ("unrecorded": the column NULL),
// it is read from the content, with the same outcome.
func TestGateReleaseKeepsRunnableReferrersHeld(t *testing.T) {
	for _, tc := range []struct{ dialect, stored string }{{"sqlite", "recorded"}, {"sqlite", "unrecorded"}, {"postgres", "recorded"}, {"postgres", "unrecorded"}} {
		dialect := tc.dialect
		if !slices.Contains(metatest.Dialects(), dialect) {
			continue
		}
		t.Run(dialect+"/"+tc.stored, func(t *testing.T) {
			e := newGateEnv(t, dialect)
			if err := e.db.Gates().PutGate(e.ctx, meta.Gate{Repository: "mirror/node", Tags: []string{"*"}, Checkers: []string{"ci+tester"},
				Config: json.RawMessage(`{"tags":["*"]}`)}); err != nil {
				t.Fatal(err)
			}
			// CI pushes the candidate.
			candidate := manifestOf("the candidate CI pushed to v1")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: candidate, Tag: "v1"})
			c := e.live("v1")
			if len(c) != 1 || c[0].Digest != candidate.Digest {
				t.Fatalf("candidates of v1: %+v", c)
			}

			// A user who may push, not a checker, pushes by digest what
			// names the candidate as its subject.
			image := referrerOf(t, "runnable image naming the candidate", "", "application/vnd.oci.image.layer.v1.tar+gzip", candidate.Digest)
			platform := manifestOf("a platform only the index naming the candidate lists")
			index := indexReferrerOf(t, platform, candidate.Digest)
			sig := referrerOf(t, "cosign signature of the candidate", "application/vnd.dev.cosign.artifact.sig.v1+json",
				"application/vnd.dev.cosign.simplesigning.v1+json", candidate.Digest)
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: image})
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: platform})
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: index, Refs: []meta.Ref{{Digest: platform.Digest, IsManifest: true}}})
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: sig})
			if tc.stored == "unrecorded" {
				if err := e.db.Exec(e.ctx, "UPDATE manifests SET describes = NULL"); err != nil {
					t.Fatal(err)
				}
			}

			if _, err := e.db.Gates().Promote(e.ctx, meta.Promotion{CandidateID: c[0].ID,
				RollbackTag: func(n int64) string { return fmt.Sprintf("v1-%d", n) }}); err != nil {
				t.Fatal(err)
			}
			// Pushed after the promotion, with the candidate readable.
			late := referrerOf(t, "runnable image naming the candidate after its promotion", "", "application/vnd.oci.image.layer.v1.tar+gzip", candidate.Digest)
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: late})

			check := func(when string) {
				t.Helper()
				if e.manifest(candidate.Digest).Held {
					t.Fatalf("%s: the candidate is held", when)
				}
				for _, tt := range []struct {
					name string
					d    digest.Digest
					held bool
				}{
					{"a runnable image naming the candidate", image.Digest, true},
					{"an index naming the candidate", index.Digest, true},
					{"the platform of an index naming the candidate", platform.Digest, true},
					{"a runnable image naming the promoted candidate", late.Digest, true},
					{"a cosign signature of the candidate", sig.Digest, false},
				} {
					if got := e.manifest(tt.d).Held; got != tt.held {
						t.Errorf("%s: %s: held = %v, want %v (held: a reader's pull by digest is refused)", when, tt.name, got, tt.held)
					}
				}
				readable, err := e.db.Manifests().ReadableReferrersAfter(e.ctx, "mirror/node", candidate.Digest, "", meta.ReferrerKey{}, 0)
				if err != nil {
					t.Fatal(err)
				}
				if len(readable) != 1 || readable[0].Digest != sig.Digest {
					var got []digest.Digest
					for _, r := range readable {
						got = append(got, r.Digest)
					}
					t.Errorf("%s: a reader's referrers of the candidate: %v, want only the signature %s", when, got, sig.Digest)
				}
			}
			check("after the promotion")

			// A writer moves v1 on, then restores it to the candidate.
			next := manifestOf("the next candidate CI pushed to v1")
			e.put(meta.PutManifest{Repository: "mirror/node", Manifest: next, Tag: "v1"})
			c = e.live("v1")
			if len(c) != 1 {
				t.Fatalf("candidates of v1: %+v", c)
			}
			if _, err := e.db.Gates().Promote(e.ctx, meta.Promotion{CandidateID: c[0].ID,
				RollbackTag: func(n int64) string { return fmt.Sprintf("v1-%d", n) }}); err != nil {
				t.Fatal(err)
			}
			if err := e.db.Manifests().RestoreTag(e.ctx, "mirror/node", "v1", candidate.Digest, "alice"); err != nil {
				t.Fatal(err)
			}
			if e.tagged("v1") != candidate.Digest {
				t.Fatal("v1 was not restored to the candidate")
			}
			check("after a restore to the candidate")
		})
	}
}
