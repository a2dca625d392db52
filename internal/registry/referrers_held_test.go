package registry_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/wire"
)

// countingReferrers is the referrer store, counting the held referrers
// its listings return.
type countingReferrers struct {
	registry.ReferrerReader
	held atomic.Int64
}

func (c *countingReferrers) ReferrerEntries(ctx context.Context, q meta.ReferrerQuery) ([]meta.ReferrerEntry, error) {
	es, err := c.ReferrerReader.ReferrerEntries(ctx, q)
	for _, e := range es {
		if e.Held {
			c.held.Add(1)
		}
	}
	return es, err
}

// pullOnly lets every caller pull and no caller check a gate's
// candidates (see held content).
type pullOnly struct{}

func (pullOnly) Authorize(_ *http.Request, res registry.Resource) (authz.Decision, error) {
	if slices.Contains(res.Actions, auth.ActionChecks) {
		return authz.Decision{Verdict: authz.Denied, Reason: "may not check"}, nil
	}
	return authz.Decision{Verdict: authz.Allow}, nil
}

// TestReferrersOfHeldContentAreNotRead: a subject's referrers that a gate
// holds are left out of the listing for a caller who may not see them,
// and the store reads no more than one batch of them however many there
// are (each may carry annotations up to a manifest's size); whoever may
// see held content has them all listed.
func TestReferrersOfHeldContentAreNotRead(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			db := metatest.Open(t, dialect)
			put := putIn(t, db, "acme/app")
			subject := gatedSubject(t, db)
			const heldN = 60
			var readable []digest.Digest
			sig := func(name string) {
				m := ociManifest(t, name, "application/vnd.dev.cosign.artifact.sig.v1+json", "application/vnd.dev.cosign.simplesigning.v1+json", subject.Digest)
				put(m, "")
				readable = append(readable, m.Digest)
			}
			sig("a signature pushed first")
			for i := range heldN {
				// An image pushed by digest naming the subject: held.
				put(ociManifest(t, fmt.Sprint("held image ", i), "", oci.MediaTypeLayerGzip, subject.Digest), "")
			}
			sig("a signature pushed last")

			list := func(a registry.Authorizer) ([]digest.Digest, int64) {
				t.Helper()
				store := &countingReferrers{ReferrerReader: db.Manifests()}
				stores := wire.RegistryStores(db)
				stores.Referrers = store
				rec := referrersOf(t, stores, a, "acme/app", subject.Digest)
				if rec.Code != http.StatusOK || rec.Header().Get("Link") != "" {
					t.Fatalf("referrers: %d (Link %q) %s", rec.Code, rec.Header().Get("Link"), rec.Body)
				}
				var idx oci.Manifest
				if err := json.Unmarshal(rec.Body.Bytes(), &idx); err != nil {
					t.Fatal(err)
				}
				var ds []digest.Digest
				for _, d := range idx.Manifests {
					ds = append(ds, d.Digest)
				}
				return ds, store.held.Load()
			}

			got, heldRead := list(pullOnly{})
			if !slices.Equal(got, readable) {
				t.Errorf("listed for a caller who may not see held content: %v, want %v", got, readable)
			}
			if heldRead > 16 {
				t.Errorf("the store read %d held referrers for a caller who may not see them, want at most one batch (16)", heldRead)
			}
			got, _ = list(registry.AllowAll{})
			if len(got) != heldN+2 || got[0] != readable[0] || got[len(got)-1] != readable[1] {
				t.Errorf("listed for a checker: %d referrers (first %v), want %d, oldest first", len(got), got[:min(len(got), 1)], heldN+2)
			}
		})
	}
}

// putIn is a function storing manifests in repo of db, tagged when a
// tag is given.
func putIn(t *testing.T, db *meta.DB, repo string) func(m meta.Manifest, tag string) {
	return func(m meta.Manifest, tag string) {
		t.Helper()
		if err := db.Manifests().PutManifest(context.Background(), meta.PutManifest{Repository: repo, Manifest: m, Tag: tag}); err != nil {
			t.Fatal(err)
		}
	}
}

// gatedSubject stores an image tagged 1 in acme/app, behind a gate on
// every tag (so that what names it by digest is held), and returns it.
func gatedSubject(t *testing.T, db *meta.DB) meta.Manifest {
	t.Helper()
	subject := ociManifest(t, "the published image", "", oci.MediaTypeLayerGzip, "")
	putIn(t, db, "acme/app")(subject, "1")
	if err := db.Gates().PutGate(context.Background(), meta.Gate{Repository: "acme/app", Tags: []string{"*"}, Config: json.RawMessage(`{"tags":["*"]}`)}); err != nil {
		t.Fatal(err)
	}
	return subject
}

// referrersOf is the registry's answer to a GET of subject's referrers
// in repo, the registry serving stores and a as its authorizer (when not
// nil).
func referrersOf(t *testing.T, stores registry.Stores, a registry.Authorizer, repo string, subject digest.Digest) *httptest.ResponseRecorder {
	t.Helper()
	reg := registry.New(stores, nil, registry.Options{Auth: a})
	rec := httptest.NewRecorder()
	reg.ServeHTTP(rec, httptest.NewRequest("GET", "/v2/"+repo+"/referrers/"+subject.String(), nil))
	return rec
}

// ociManifest is an OCI image manifest of one layer of a media type
// (stored as the registry would: its JSON), with a subject unless it is
// "".
func ociManifest(t *testing.T, name, artifactType, layerType string, subject digest.Digest) meta.Manifest {
	t.Helper()
	cfg := oci.Descriptor{MediaType: oci.MediaTypeImageConfig, Digest: digest.FromString("config"), Size: 6}
	if artifactType != "" {
		cfg = oci.Descriptor{MediaType: oci.MediaTypeEmptyJSON, Digest: oci.EmptyJSONDigest, Size: 2}
	}
	m := oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest, ArtifactType: artifactType, Config: &cfg,
		Layers: []oci.Descriptor{{MediaType: layerType, Digest: digest.FromString(name), Size: int64(len(name))}}}
	if subject != "" {
		m.Subject = &oci.Descriptor{MediaType: oci.MediaTypeImageManifest, Digest: subject, Size: 100}
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
