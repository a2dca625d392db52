package web_test

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/random"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/remote/transport"
	"github.com/google/go-containerregistry/pkg/v1/types"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/web"
	"github.com/berth-dev/berth/internal/wire"
)

// rawIndex is an index manifest pushed as it is (remote.Put).
type rawIndex []byte

func (m rawIndex) RawManifest() ([]byte, error)        { return m, nil }
func (m rawIndex) MediaType() (types.MediaType, error) { return types.OCIImageIndex, nil }

// hostileIndex is an index of entries entries, all naming child, each
// platform's fields of platformLen bytes.
func hostileIndex(child string, entries, platformLen int) rawIndex {
	v := strings.Repeat("x", platformLen)
	entry := fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":1,"platform":{"architecture":%q,"os":%q,"variant":%q,"os.version":%q}}`,
		oci.MediaTypeImageManifest, child, v, v, v, v)
	return rawIndex(`{"schemaVersion":2,"mediaType":"` + oci.MediaTypeImageIndex + `","manifests":[` +
		strings.TrimSuffix(strings.Repeat(entry+",", entries), ",") + `]}`)
}

// TestHostileIndexKeepsTheTagsPageSmall: an index of thousands of
// entries whose platform fields are as long as a push may make them
// (oci.MaxPlatformField), tagged 50 times in a public repository, makes
// an anonymous visitor's tags page list 16 platforms per row and a
// "+N more" link, not every platform of every row; an index whose os is
// 1 MiB long is refused at push with MANIFEST_INVALID.
func TestHostileIndexKeepsTheTagsPageSmall(t *testing.T) {
	e := testenv.New(t, testenv.Options{Open: true})
	repo, err := name.NewRepository(e.Host+"/acme/app", name.Insecure)
	if err != nil {
		t.Fatal(err)
	}
	img, err := random.Image(64, 1)
	if err != nil {
		t.Fatal(err)
	}
	child, err := img.Digest()
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.Write(repo.Tag("child"), img); err != nil {
		t.Fatal(err)
	}

	huge := hostileIndex(child.String(), 1, 1<<20)
	err = remote.Put(repo.Tag("huge"), huge)
	var te *transport.Error
	if !errors.As(err, &te) || len(te.Errors) == 0 || te.Errors[0].Code != transport.ManifestInvalidErrorCode {
		t.Fatalf("push of an index with a 1 MiB os: %v, want MANIFEST_INVALID", err)
	}

	const entries, tags = 3000, 50
	idx := hostileIndex(child.String(), entries, oci.MaxPlatformField)
	if err := remote.Put(repo.Tag("t00"), idx); err != nil {
		t.Fatalf("push of an index of %d bytes: %v", len(idx), err)
	}
	d := digest.FromBytes(idx).String()
	for i := 1; i < tags; i++ {
		res, body := e.Do("", http.MethodPut, fmt.Sprintf("/api/v1/repository/acme/app/tag/t%02d", i), []byte(`{"manifest_digest":"`+d+`"}`),
			"Content-Type", "application/json")
		if res.StatusCode/100 != 2 {
			t.Fatalf("tag t%02d: %d %s", i, res.StatusCode, body)
		}
	}

	ui := newUI(t, wire.WebStores(e.DB), web.Options{Auth: readOnlyPublic{map[string]bool{"acme/app": true}}})
	status, body := get(t, ui, "/repository/acme/app", false)
	if status != http.StatusOK || strings.Count(body, `class="copy"`) != tags {
		t.Fatalf("GET the tags page = %d with %d rows, want 200 and %d\n%.2000s", status, strings.Count(body, `class="copy"`), tags, body)
	}
	// 16 platforms of 3 fields of 128 bytes on each of 50 rows are
	// 300 KiB; all 3,000 would be 55 MiB.
	if len(body) > 512<<10 {
		t.Errorf("the tags page is %d bytes, want at most 512 KiB", len(body))
	}
	if more := fmt.Sprintf("+%d more</a>", entries-16); strings.Count(body, more) != tags {
		t.Errorf("the page shows %q on %d rows, want %d", more, strings.Count(body, more), tags)
	}
}
