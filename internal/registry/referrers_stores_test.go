package registry_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/wire"
)

// failingReferrers fails every referrer read.
type failingReferrers struct{}

func (failingReferrers) ReferrerEntries(context.Context, meta.ReferrerQuery) ([]meta.ReferrerEntry, error) {
	return nil, errors.New("referrer entries read")
}

func (failingReferrers) ReferrerAnnotations(context.Context, string, []digest.Digest) (map[digest.Digest]string, error) {
	return nil, errors.New("referrer annotations read")
}

// TestReferrersAreReadThroughTheirStore: the referrers API reads the
// referrers through Stores.Referrers, and through nothing else: with it
// failing every read the listing fails, whatever the manifest store is;
// with it the database's, a manifest store that hides the database's
// referrer methods lists them all.
func TestReferrersAreReadThroughTheirStore(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	put := putIn(t, db, "acme/app")
	subject := ociManifest(t, "the image", "", oci.MediaTypeLayerGzip, "")
	put(subject, "1")
	sig := annotatedReferrer(t, subject.Digest, "application/vnd.dev.cosign.artifact.sig.v1+json", map[string]string{"n": "sig"})
	put(sig, "")

	stores := wire.RegistryStores(db)
	stores.Referrers = failingReferrers{}
	rec := referrersOf(t, stores, nil, "acme/app", subject.Digest)
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("referrers with a failing Stores.Referrers: %d %s, want 500", rec.Code, rec.Body)
	}

	stores = wire.RegistryStores(db)
	stores.Manifests = struct{ registry.ManifestStore }{db.Manifests()}
	rec = referrersOf(t, stores, nil, "acme/app", subject.Digest)
	if rec.Code != http.StatusOK || !strings.Contains(rec.Body.String(), sig.Digest.String()) || !strings.Contains(rec.Body.String(), `"n":"sig"`) {
		t.Errorf("referrers: %d %s, want 200 listing %s annotated", rec.Code, rec.Body, sig.Digest)
	}
}

// TestNewRefusesManifestsWithoutReferrers: a registry given a manifest
// store and no referrer store is refused when it is made, not when its
// first referrers request comes.
func TestNewRefusesManifestsWithoutReferrers(t *testing.T) {
	defer func() {
		if r := recover(); r == nil || !strings.Contains(fmt.Sprint(r), "Referrers") {
			t.Errorf("New with Manifests and no Referrers: recovered %v, want a panic naming Referrers", r)
		}
	}()
	registry.New(registry.Stores{Manifests: meta.Manifests{}}, nil, registry.Options{})
}
