package registry_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"regexp"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/oci"
	"github.com/berth-dev/berth/internal/registry"
)

// TestReferrersArePaged: a subject's referrers are listed in pages no
// larger than a manifest may be (what clients read an index up to), each
// page naming the next in a Link header as the spec requires when the list
// does not fit one response; following the links lists every referrer
// once, oldest first, the artifactType filter kept.
func TestReferrersArePaged(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			const limit = 8192
			reg := newRegistry(t, dialect, registry.Options{MaxManifestBytes: limit})
			subject := reg.imageManifest("app", []byte("the subject's layer"))
			raw := mustJSON(t, subject)
			if resp, body := reg.do("PUT", "/v2/app/manifests/v1", raw, "Content-Type", oci.MediaTypeImageManifest); resp.StatusCode != 201 {
				t.Fatalf("subject: %d %s", resp.StatusCode, body)
			}
			sd := digest.FromBytes(raw)
			var pushed []digest.Digest
			for i := range 12 {
				at := "application/vnd.example.sbom"
				if i%3 == 0 {
					at = "application/vnd.example.signature"
				}
				ref := map[string]any{"schemaVersion": 2, "mediaType": oci.MediaTypeImageManifest, "artifactType": at,
					"config":      map[string]any{"mediaType": oci.MediaTypeEmptyJSON, "digest": oci.EmptyJSONDigest, "size": 2},
					"layers":      []map[string]any{},
					"subject":     map[string]any{"mediaType": oci.MediaTypeImageManifest, "digest": sd, "size": len(raw)},
					"annotations": map[string]string{"n": fmt.Sprint(i), "pad": strings.Repeat("p", 1500)}}
				b := mustJSON(t, ref)
				if resp, body := reg.do("PUT", "/v2/app/manifests/"+digest.FromBytes(b).String(), b, "Content-Type", oci.MediaTypeImageManifest); resp.StatusCode != 201 {
					t.Fatalf("referrer %d: %d %s", i, resp.StatusCode, body)
				}
				if at == "application/vnd.example.signature" {
					pushed = append(pushed, digest.FromBytes(b))
				}
			}
			link := regexp.MustCompile(`^<([^>]+)>; rel="next"$`)
			list := func(first string) (seen []digest.Digest, pages int) {
				next := first
				for next != "" {
					resp, body := reg.do("GET", next, nil)
					if resp.StatusCode != 200 {
						t.Fatalf("GET %s: %d %s", next, resp.StatusCode, body)
					}
					if len(body) > limit {
						t.Fatalf("a page of %d bytes, over the %d a client reads", len(body), limit)
					}
					var idx oci.Manifest
					if err := json.Unmarshal(body, &idx); err != nil {
						t.Fatal(err)
					}
					if len(idx.Manifests) == 0 {
						t.Fatalf("an empty page: %s", next)
					}
					for _, d := range idx.Manifests {
						seen = append(seen, d.Digest)
					}
					pages++
					next = ""
					if l := resp.Header.Get("Link"); l != "" {
						m := link.FindStringSubmatch(l)
						if m == nil {
							t.Fatalf("Link %q", l)
						}
						next = m[1]
					}
				}
				return seen, pages
			}
			all, pages := list("/v2/app/referrers/" + sd.String())
			if len(all) != 12 || pages < 3 {
				t.Fatalf("%d referrers in %d pages, want 12 in several", len(all), pages)
			}
			once := map[digest.Digest]bool{}
			for _, d := range all {
				if once[d] {
					t.Fatalf("%s listed twice", d)
				}
				once[d] = true
			}
			sigs, _ := list("/v2/app/referrers/" + sd.String() + "?artifactType=application/vnd.example.signature")
			if fmt.Sprint(sigs) != fmt.Sprint(pushed) {
				t.Fatalf("filtered: %v, want %v (oldest first)", sigs, pushed)
			}
			resp, body := reg.do("GET", "/v2/app/referrers/"+sd.String()+"?last=nonsense", nil)
			expectError(t, resp, body, http.StatusBadRequest, registry.CodeUnsupported)
		})
	}
}
