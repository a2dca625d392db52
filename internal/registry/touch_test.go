package registry_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/storage/fs"
	"github.com/berth-dev/berth/internal/wire"
)

// touchBlobs answers TouchBlobLink with touch's answer.
type touchBlobs struct {
	registry.BlobStore
	touch func() (bool, error)
}

func (b touchBlobs) TouchBlobLink(context.Context, string, digest.Digest, time.Time) (bool, error) {
	return b.touch()
}

// TestBlobServedWhenLinkConfirmationFails: a pull whose confirmation of
// the blob's link fails (a busy, locked or full database) is still served,
// as a manifest pull is; before, a blob HEAD or GET answered 500 (or 507)
// for a write the pull does not need. A link that is gone by then is
// still 404.
func TestBlobServedWhenLinkConfirmationFails(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			db := metatest.Open(t, dialect)
			driver, err := fs.New(t.TempDir(), fs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			touch := func() (bool, error) { return false, errors.New("database is locked") }
			stores := wire.RegistryStores(db)
			stores.Blobs = touchBlobs{stores.Blobs, func() (bool, error) { return touch() }}
			srv := httptest.NewServer(registry.New(stores, driver, registry.Options{
				Policy:  oci.ArtifactPolicy{Allowed: oci.DefaultAllowedArtifacts(), AllowV11Artifacts: true},
				Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
				GCDelay: time.Millisecond, // every link is old enough to be confirmed
			}))
			t.Cleanup(srv.Close)
			blob := []byte("a layer pulled while the database is busy")
			d := digest.FromBytes(blob)
			resp, err := http.Post(srv.URL+"/v2/app/blobs/uploads/?digest="+d.String(), "application/octet-stream", bytes.NewReader(blob))
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusCreated {
				t.Fatalf("push: %d", resp.StatusCode)
			}
			time.Sleep(5 * time.Millisecond)
			pull := func(method string) (int, []byte) {
				t.Helper()
				req, _ := http.NewRequest(method, srv.URL+"/v2/app/blobs/"+d.String(), nil)
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					t.Fatal(err)
				}
				defer resp.Body.Close()
				body, _ := io.ReadAll(resp.Body)
				return resp.StatusCode, body
			}
			if code, _ := pull(http.MethodHead); code != http.StatusOK {
				t.Errorf("HEAD with a failing confirmation: %d, want 200", code)
			}
			if code, body := pull(http.MethodGet); code != http.StatusOK || !bytes.Equal(body, blob) {
				t.Errorf("GET with a failing confirmation: %d, %d bytes; want 200 and the blob", code, len(body))
			}
			touch = func() (bool, error) { return false, nil } // the link went meanwhile
			if code, _ := pull(http.MethodGet); code != http.StatusNotFound {
				t.Errorf("GET of a link gone meanwhile: %d, want 404", code)
			}
		})
	}
}
