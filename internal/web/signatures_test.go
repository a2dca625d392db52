package web_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/sigstore/sigstore/pkg/cryptoutils"

	"github.com/berth-dev/berth/internal/gate"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/mem"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// countingDriver counts the blobs read; with fail set, every read fails
// with an error that names a server path.
type countingDriver struct {
	storage.Driver
	reads *atomic.Int64
	fail  bool
}

func (c countingDriver) Reader(ctx context.Context, path string, offset int64) (io.ReadCloser, error) {
	c.reads.Add(1)
	if c.fail {
		return nil, errors.New("open /var/lib/berth/data" + path + ": permission denied")
	}
	return c.Driver.Reader(ctx, path, offset)
}

// signedRepo is a repository of images, each with a cosign signature
// manifest of sigLayers simple-signing layers and an attestation manifest
// of attLayers DSSE layers (the same stored payload each), read through a
// counting storage driver by the gate's verifier.
type signedRepo struct {
	db    *meta.DB
	reads *atomic.Int64
	ui    *web.UI
	first digest.Digest
}

const signedRepoName = "acme/signed"

func newSignedRepo(t *testing.T, images, sigLayers, attLayers int, keyed, failReads bool) signedRepo {
	t.Helper()
	ctx := context.Background()
	db := metatest.Open(t, "sqlite")
	driver := mem.New()
	payload := []byte(`{"critical":{"type":"cosign container image signature"}}`)
	pd := digest.FromBytes(payload)
	if err := driver.PutContent(ctx, storage.BlobPath(pd), payload); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Blobs().StoreBlob(ctx, signedRepoName, meta.Blob{Digest: pd, Size: int64(len(payload))}, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
		t.Fatal(err)
	}
	layers := func(n int, mediaType string) []oci.Descriptor {
		var out []oci.Descriptor
		for range n {
			out = append(out, oci.Descriptor{MediaType: mediaType, Digest: pd, Size: int64(len(payload)),
				Annotations: map[string]string{"dev.cosignproject.cosign/signature": "c2lnbmF0dXJl"}})
		}
		return out
	}
	var first digest.Digest
	for i := range images {
		d := putManifest(t, db, signedRepoName, fmt.Sprintf("v%d", i), meta.Manifest{Content: image(fmt.Sprint("signed ", i))})
		if i == 0 {
			first = d
		}
		for suffix, ls := range map[string][]oci.Descriptor{".sig": layers(sigLayers, oci.MediaTypeCosignSimpleSigning), ".att": layers(attLayers, oci.MediaTypeDSSE)} {
			if len(ls) == 0 {
				continue
			}
			body, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageManifest, "layers": ls})
			putManifest(t, db, signedRepoName, strings.Replace(d.String(), ":", "-", 1)+suffix, meta.Manifest{Content: body})
		}
	}
	if keyed {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		pub, _ := cryptoutils.MarshalPublicKeyToPEM(&key.PublicKey)
		cfg, _ := json.Marshal(gate.Config{Tags: []string{"release-*"}, Keys: []string{string(pub)}})
		if err := db.Gates().PutGate(ctx, meta.Gate{Repository: signedRepoName, Tags: []string{"release-*"}, Config: cfg}); err != nil {
			t.Fatal(err)
		}
	}
	reads := &atomic.Int64{}
	counted := countingDriver{Driver: driver, reads: reads, fail: failReads}
	st := wire.WebStores(db)
	st.Blobs = counted
	st.Signatures = gate.New(gate.Stores{Gates: db.Gates(), Content: db.Manifests(), Blobs: db.Blobs(), Storage: counted}, nil)
	return signedRepo{db: db, reads: reads, ui: newUI(t, st, web.Options{}), first: first}
}

// TestTagsPageBoundsSignatureReads: the tags page of 30 signed images
// (the gate trusting a key, so each could be verified) reads a bounded
// number of payloads, and says "not checked" for the rows past the bound:
// when each signature manifest lists 64 signature layers, at most two
// verifications' worth; when each image also has 64 attestation layers
// (which the page does not show), none of those: the page verifies
// signatures only (ten verifications of one signature each).
func TestTagsPageBoundsSignatureReads(t *testing.T) {
	for _, c := range []struct {
		sigLayers, attLayers int
		max                  int64
	}{
		{gate.MaxSignatureLayers, 0, 2 * gate.MaxSignatureLayers},
		{1, gate.MaxSignatureLayers, 10},
	} {
		r := newSignedRepo(t, 30, c.sigLayers, c.attLayers, true, false)
		status, body := get(t, r.ui, "/repository/"+signedRepoName, false)
		if status != http.StatusOK || !strings.Contains(body, "signed (not checked)") {
			t.Errorf("%d signature and %d attestation layers: GET the tags page = %d, says not checked: %v",
				c.sigLayers, c.attLayers, status, strings.Contains(body, "signed (not checked)"))
		}
		if n := r.reads.Load(); n == 0 || n > c.max {
			t.Errorf("%d signature and %d attestation layers: the tags page read %d payloads, want 1 to %d",
				c.sigLayers, c.attLayers, n, c.max)
		}
	}
}

// TestTagsPageOfAnUngatedRepositoryReadsNoSignature: without a gate no
// signature can verify, and the tags page reads no payload, not even the
// attestations' (the verifier reads those without a key).
func TestTagsPageOfAnUngatedRepositoryReadsNoSignature(t *testing.T) {
	r := newSignedRepo(t, 30, 1, gate.MaxSignatureLayers, false, false)
	status, body := get(t, r.ui, "/repository/"+signedRepoName, false)
	if status != http.StatusOK || !strings.Contains(body, "signed (unverified)") {
		t.Fatalf("GET the tags page = %d, says unverified: %v", status, strings.Contains(body, "signed (unverified)"))
	}
	if n := r.reads.Load(); n != 0 {
		t.Errorf("the tags page read %d payloads, want none", n)
	}
}

// TestSignatureReadErrorsStayInTheLog: a payload that cannot be read is
// "could not be read" on the tags and manifest pages, which do not repeat
// the storage error (it names the server's paths).
func TestSignatureReadErrorsStayInTheLog(t *testing.T) {
	r := newSignedRepo(t, 1, 1, 0, true, true)
	for _, path := range []string{"/repository/" + signedRepoName, "/repository/" + signedRepoName + "/manifest/" + r.first.String()} {
		status, body := get(t, r.ui, path, false)
		if status != http.StatusOK || strings.Contains(body, "/var/lib/berth") || !strings.Contains(body, "could not be read") {
			t.Errorf("GET %s = %d, names the path: %v, says could not be read: %v", path, status,
				strings.Contains(body, "/var/lib/berth"), strings.Contains(body, "could not be read"))
		}
	}
	if r.reads.Load() == 0 {
		t.Error("no payload was read")
	}
}
