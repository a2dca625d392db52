package mirror_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/static"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
)

// rawManifest pushes manifest bytes as they are.
type rawManifest struct {
	body      []byte
	mediaType types.MediaType
}

func (m rawManifest) RawManifest() ([]byte, error)        { return m.body, nil }
func (m rawManifest) MediaType() (types.MediaType, error) { return m.mediaType, nil }

func (f *fixture) putRaw(t *testing.T, repo, tag string, m map[string]any) []byte {
	t.Helper()
	body, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	r, err := name.NewRepository(f.upstream+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Put(r.Tag(tag), rawManifest{body, types.MediaType(m["mediaType"].(string))}, upAuth); err != nil {
		t.Fatal(err)
	}
	return body
}

func (f *fixture) writeBlob(t *testing.T, repo string, content []byte, mediaType types.MediaType) {
	t.Helper()
	r, err := name.NewRepository(f.upstream+"/"+repo, name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteLayer(r, static.NewLayer(content, mediaType), upAuth); err != nil {
		t.Fatal(err)
	}
}

// pullBlob reads a blob from the Berth serving the fixture's store.
func (f *fixture) pullBlob(t *testing.T, repo string, d digest.Digest) (int, []byte) {
	t.Helper()
	resp, err := http.Get("http://" + f.berth + "/v2/" + repo + "/blobs/" + d.String())
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// TestImportIndexEntryThatIsNotAManifest: an index entry of a media type
// that is not a manifest is content the index carries as a blob. The
// copier used to skip it (and record no reference), leaving an index that
// named what its repository could not serve; through the one ingest
// function it is copied and referenced like any blob.
func TestImportIndexEntryThatIsNotAManifest(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	img, _ := random.Image(512, 1)
	imgDigest := f.pushUpstream(t, "library/mixed:img", nil, img)
	imgBody, _ := img.RawManifest()
	thing := []byte("an entry that is not a manifest")
	f.writeBlob(t, "library/mixed", thing, "application/vnd.example.thing")
	idx := f.putRaw(t, "library/mixed", "1", map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageIndex,
		"manifests": []map[string]any{
			{"mediaType": oci.MediaTypeImageManifest, "digest": imgDigest.String(), "size": len(imgBody)},
			{"mediaType": "application/vnd.example.thing", "digest": digest.FromBytes(thing), "size": len(thing)},
		}})
	got, st, err := f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/mixed:1", Username: "up", Password: "secret",
		Insecure: true, Repo: "mirror/mixed", Tags: []string{"1"}})
	if err != nil {
		t.Fatal(err)
	}
	if got != digest.FromBytes(idx) || st.Manifests != 2 || st.BlobsFetched != 3 {
		t.Fatalf("import: %s %+v, want %s, 2 manifests, 3 blobs", got, st, digest.FromBytes(idx))
	}
	if code, b := f.pullBlob(t, "mirror/mixed", digest.FromBytes(thing)); code != 200 || string(b) != string(thing) {
		t.Fatalf("the index's blob entry: %d %q", code, b)
	}
}

// TestImportEmptyConfigUpstreamLacks: the empty config is supplied by the
// ingest, as for a push, so an artifact whose upstream never had the two
// bytes imports whole.
func TestImportEmptyConfigUpstreamLacks(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t)
	report := []byte("a report")
	f.writeBlob(t, "library/report", report, "text/plain")
	f.putRaw(t, "library/report", "1", map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageManifest,
		"artifactType": "application/vnd.example.report",
		"config":       map[string]any{"mediaType": oci.MediaTypeEmptyJSON, "digest": oci.EmptyJSONDigest, "size": 2},
		"layers":       []map[string]any{{"mediaType": "text/plain", "digest": digest.FromBytes(report), "size": len(report)}}})
	_, st, err := f.copier.Import(ctx, mirror.ImportRequest{Source: f.upstream + "/library/report:1", Username: "up", Password: "secret",
		Insecure: true, Repo: "mirror/report", Tags: []string{"1"}})
	if err != nil {
		t.Fatal(err)
	}
	if st.Manifests != 1 || st.BlobsFetched != 1 {
		t.Fatalf("import: %+v, want 1 manifest and 1 blob (the layer)", st)
	}
	if code, b := f.pullBlob(t, "mirror/report", oci.EmptyJSONDigest); code != 200 || string(b) != "{}" {
		t.Fatalf("empty config: %d %q", code, b)
	}
}
