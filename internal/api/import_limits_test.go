package api_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/mirror"
	"github.com/berth-dev/berth/internal/oci"
)

// rawIndex pushes index bytes as they are.
type rawIndex []byte

func (m rawIndex) RawManifest() ([]byte, error)        { return m, nil }
func (m rawIndex) MediaType() (types.MediaType, error) { return types.OCIImageIndex, nil }

// TestImportOfDeeplyNestedIndexes: an import whose upstream nests 20
// indexes in each other answers 502 saying they nest too deep, and the
// repository made for it goes with it. The import runs under
// mirror.DefaultImportTimeout.
func TestImportOfDeeplyNestedIndexes(t *testing.T) {
	e := newImportEnv(t)
	ctx := context.Background()
	repo, _ := name.NewRepository(e.upstream + "/library/deep")
	opts := []remote.Option{remote.WithTransport(e.imp.transport)}
	img, err := random.Image(256, 1)
	if err != nil {
		t.Fatal(err)
	}
	d, _ := img.Digest()
	if err := remote.Write(repo.Digest(d.String()), img, opts...); err != nil {
		t.Fatal(err)
	}
	body, _ := img.RawManifest()
	below := map[string]any{"mediaType": oci.MediaTypeImageManifest, "digest": d.String(), "size": len(body)}
	for i := 2; i <= 20; i++ {
		idx, _ := json.Marshal(map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageIndex, "manifests": []any{below}})
		id := digest.FromBytes(idx)
		var ref name.Reference = repo.Digest(id.String())
		if i == 20 {
			ref = repo.Tag("deep")
		}
		if err := remote.Put(ref, rawIndex(idx), opts...); err != nil {
			t.Fatal(err)
		}
		below = map[string]any{"mediaType": oci.MediaTypeImageIndex, "digest": id.String(), "size": len(idx)}
	}
	// (Not e.expect, which refuses any digest in an answer: this one
	// names the index.)
	req, _ := http.NewRequest(http.MethodPost, e.url+"/api/v1/import",
		strings.NewReader(`{"source":"`+e.upstream+`/library/deep:deep","repository":"acme/deep","tags":["1"]}`))
	req.Header.Set("Content-Type", "application/json")
	req.SetBasicAuth("alice", e.env.Secret("alice"))
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	var out map[string]any
	json.NewDecoder(res.Body).Decode(&out)
	if msg, _ := out["error_message"].(string); res.StatusCode != http.StatusBadGateway || !strings.Contains(msg, "nest too deep") {
		t.Fatalf("import of 20 nested indexes: %d %v, want 502 saying the indexes nest too deep", res.StatusCode, out)
	}
	if ri, err := e.db.Repositories().Repository(ctx, "acme/deep"); err != nil || ri.Exists {
		t.Fatalf("the refused import left repository acme/deep (%v)", err)
	}
	if got := time.Duration(e.imp.timeout.Load()); got != mirror.DefaultImportTimeout {
		t.Fatalf("the import ran with timeout %s, want %s", got, mirror.DefaultImportTimeout)
	}
}
