package oci

import (
	"fmt"
	"strings"
	"testing"
)

const (
	dgC = "sha256:cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc"
	dgD = "sha256:dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd"
)

func TestReferences(t *testing.T) {
	desc := func(mt, d string) string {
		return fmt.Sprintf(`{"mediaType":%q,"digest":%q,"size":1}`, mt, d)
	}
	image := func(config string, layers ...string) string {
		return `{"schemaVersion":2,"mediaType":"` + MediaTypeImageManifest + `","config":` + config +
			`,"layers":[` + strings.Join(layers, ",") + `]`
	}
	index := func(children ...string) string {
		return `{"schemaVersion":2,"mediaType":"` + MediaTypeImageIndex + `","manifests":[` + strings.Join(children, ",") + `]`
	}
	subject := `,"subject":` + desc(MediaTypeImageManifest, dgD)
	artifact := `{"schemaVersion":2,"mediaType":"` + MediaTypeImageManifest + `","artifactType":"application/vnd.example",` +
		`"config":` + desc(MediaTypeEmptyJSON, EmptyJSONDigest) + `,"layers":[` + desc("text/plain", dgA) + `]` + subject + `}`
	// want: "kind digest-letter required manifest" per reference.
	tests := []struct {
		name, body string
		want       []string
	}{
		{"image", image(desc(MediaTypeImageConfig, dgA), desc(MediaTypeLayerGzip, dgB), desc(MediaTypeLayerGzip, dgC)) + `}`,
			[]string{"config a required blob", "layer b required blob", "layer c required blob"}},
		{"image without layers", image(desc(MediaTypeImageConfig, dgA)) + `}`,
			[]string{"config a required blob"}},
		{"repeated layer listed once", image(desc(MediaTypeImageConfig, dgA), desc(MediaTypeLayerGzip, dgB), desc(MediaTypeLayerGzip, dgB)) + `}`,
			[]string{"config a required blob", "layer b required blob"}},
		{"config that is also a layer", image(desc(MediaTypeImageConfig, dgA), desc(MediaTypeLayerGzip, dgA)) + `}`,
			[]string{"config a required blob"}},
		{"foreign layer not required", image(desc(MediaTypeDockerConfig, dgA), desc(MediaTypeDockerForeignLayer, dgB), desc(MediaTypeLayerNonDistributableZstd, dgC)) + `}`,
			[]string{"config a required blob", "layer b optional blob", "layer c optional blob"}},
		{"foreign and distributable copies of one layer: required", image(desc(MediaTypeImageConfig, dgA), desc(MediaTypeLayerNonDistributable, dgB), desc(MediaTypeLayer, dgB)) + `}`,
			[]string{"config a required blob", "layer b required blob"}},
		{"subject not required", image(desc(MediaTypeImageConfig, dgA), desc(MediaTypeLayerGzip, dgB)) + subject + `}`,
			[]string{"config a required blob", "layer b required blob", "subject d optional manifest"}},
		{"v1.1 artifact", artifact,
			[]string{"config e required blob", "layer a required blob", "subject d optional manifest"}},
		{"index", index(desc(MediaTypeImageManifest, dgA), desc(MediaTypeDockerManifest, dgB), desc(MediaTypeImageIndex, dgC), desc(MediaTypeDockerList, dgD)) + `}`,
			[]string{"child a required manifest", "child b required manifest", "child c required manifest", "child d required manifest"}},
		{"index entry of another media type is a blob", index(desc(MediaTypeImageManifest, dgA), desc("application/vnd.example.thing", dgB), desc(MediaTypeDockerSchema1Signed, dgC)) + `}`,
			[]string{"child a required manifest", "child b required blob", "child c required blob"}},
		{"digest listed again as the same kind, once", index(desc(MediaTypeImageManifest, dgA), desc(MediaTypeDockerManifest, dgA), desc("application/vnd.example.thing", dgB), desc("application/octet-stream", dgB)) + `}`,
			[]string{"child a required manifest", "child b required blob"}},
		{"index with subject", index(desc(MediaTypeImageManifest, dgA)) + subject + `}`,
			[]string{"child a required manifest", "subject d optional manifest"}},
		{"empty index", index() + `}`, nil},
	}
	letter := map[string]string{dgA: "a", dgB: "b", dgC: "c", dgD: "d", EmptyJSONDigest: "e"}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := ParseManifest([]byte(tt.body), "")
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range m.References() {
				req, what := "optional", "blob"
				if r.Required {
					req = "required"
				}
				if r.IsManifest() {
					what = "manifest"
				}
				got = append(got, fmt.Sprintf("%s %s %s %s", r.Kind, letter[r.Digest.String()], req, what))
			}
			if strings.Join(got, "; ") != strings.Join(tt.want, "; ") {
				t.Fatalf("references:\n got %q\nwant %q", got, tt.want)
			}
			// Blobs is the required references that are not manifests.
			var blobs []string
			for _, b := range m.Blobs() {
				blobs = append(blobs, letter[b.Digest.String()])
			}
			var wantBlobs []string
			for _, w := range tt.want {
				if f := strings.Fields(w); f[2] == "required" && f[3] == "blob" {
					wantBlobs = append(wantBlobs, f[1])
				}
			}
			if strings.Join(blobs, ",") != strings.Join(wantBlobs, ",") {
				t.Fatalf("blobs %v, want %v", blobs, wantBlobs)
			}
		})
	}
}

func TestIsManifestMediaType(t *testing.T) {
	for mt, want := range map[string]bool{
		MediaTypeImageManifest: true, MediaTypeImageIndex: true, MediaTypeDockerManifest: true, MediaTypeDockerList: true,
		MediaTypeDockerSchema1: false, MediaTypeDockerSchema1Signed: false, MediaTypeImageConfig: false, "": false,
		MediaTypeImageManifest + "; charset=utf-8": false,
	} {
		if got := IsManifestMediaType(mt); got != want {
			t.Errorf("IsManifestMediaType(%q) = %v", mt, got)
		}
	}
	if RefKind(0).String() != "unknown" || RefSubject.String() != "subject" {
		t.Error("RefKind names")
	}
}
