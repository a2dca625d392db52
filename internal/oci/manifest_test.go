package oci

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

const (
	dgA = "sha256:aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	dgB = "sha256:bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func TestParseManifest(t *testing.T) {
	image := `{"schemaVersion":2,%s"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"` + dgA + `","size":10},
		"layers":[{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"` + dgB + `","size":5}]}`
	withType := func(mt string) string {
		if mt == "" {
			return strings.Replace(image, "%s", "", 1)
		}
		return strings.Replace(image, "%s", `"mediaType":"`+mt+`",`, 1)
	}
	tests := []struct {
		name, body, contentType, wantType string
		wantErr                           bool
	}{
		{"oci manifest", withType(MediaTypeImageManifest), MediaTypeImageManifest, MediaTypeImageManifest, false},
		{"docker manifest", strings.Replace(withType(MediaTypeDockerManifest), "application/vnd.oci.image.config.v1+json", MediaTypeDockerConfig, 1), MediaTypeDockerManifest, MediaTypeDockerManifest, false},
		{"type from Content-Type (helm, umoci)", withType(""), MediaTypeImageManifest, MediaTypeImageManifest, false},
		{"type from shape", withType(""), "application/octet-stream", MediaTypeImageManifest, false},
		{"Content-Type with parameters", withType(MediaTypeImageManifest), MediaTypeImageManifest + "; charset=utf-8", MediaTypeImageManifest, false},
		{"mismatch", withType(MediaTypeImageManifest), MediaTypeDockerManifest, "", true},
		{"index", `{"schemaVersion":2,"mediaType":"` + MediaTypeImageIndex + `","manifests":[{"mediaType":"` + MediaTypeImageManifest + `","digest":"` + dgA + `","size":1,"platform":{"architecture":"arm64","os":"linux"}}]}`, "", MediaTypeImageIndex, false},
		{"empty index", `{"schemaVersion":2,"mediaType":"` + MediaTypeImageIndex + `","manifests":[]}`, "", MediaTypeImageIndex, false},
		{"index with layers", `{"schemaVersion":2,"mediaType":"` + MediaTypeImageIndex + `","manifests":[],"layers":[]}`, "", "", true},
		{"schema 1", `{"schemaVersion":1,"name":"a","tag":"b","fsLayers":[]}`, MediaTypeDockerSchema1Signed, "", true},
		{"no config", `{"schemaVersion":2,"mediaType":"` + MediaTypeImageManifest + `"}`, "", "", true},
		{"bad digest", strings.Replace(withType(MediaTypeImageManifest), dgB, "sha256:zz", 1), "", "", true},
		{"negative size", strings.Replace(withType(MediaTypeImageManifest), `"size":5`, `"size":-5`, 1), "", "", true},
		{"no layer media type", strings.Replace(withType(MediaTypeImageManifest), `"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip",`, "", 1), "", "", true},
		{"not json", `{`, "", "", true},
		{"empty config without artifactType", strings.Replace(withType(MediaTypeImageManifest), "application/vnd.oci.image.config.v1+json", MediaTypeEmptyJSON, 1), "", "", true},
		{"unknown type", withType("application/x-foo"), "", "", true},
		// Keys given twice: encoding/json keeps the last and matches
		// fields case-insensitively; other consumers keep the first or
		// match exactly.
		{"layers twice", strings.Replace(withType(MediaTypeImageManifest), `"layers":`, `"layers":[],"layers":`, 1), "", "", true},
		{"layers in another case", strings.TrimSuffix(withType(MediaTypeImageManifest), "}") + `,"Layers":[]}`, "", "", true},
		{"subject in another case", strings.TrimSuffix(withType(MediaTypeImageManifest), "}") + `,"subject":{"mediaType":"` + MediaTypeImageManifest + `","digest":"` + dgA + `","size":1},"SUBJECT":null}`, "", "", true},
		{"Kelvin-sign key", strings.Replace(withType(MediaTypeImageManifest), `"size":5`, `"size":5,"\u212aind":1,"kind":2`, 1), "", "", true},
		{"digest twice in a descriptor", strings.Replace(withType(MediaTypeImageManifest), `"size":5`, `"size":5,"Digest":"`+dgA+`"`, 1), "", "", true},
		{"platform os twice", `{"schemaVersion":2,"mediaType":"` + MediaTypeImageIndex + `","manifests":[{"mediaType":"` + MediaTypeImageManifest + `","digest":"` + dgA + `","size":1,"platform":{"architecture":"arm64","os":"linux","OS":"windows"}}]}`, "", "", true},
		{"annotation twice", strings.TrimSuffix(withType(MediaTypeImageManifest), "}") + `,"annotations":{"a":"1","a":"2"}}`, "", "", true},
		{"annotations differing in case", strings.TrimSuffix(withType(MediaTypeImageManifest), "}") + `,"annotations":{"org.example":"1","ORG.example":"2"}}`, "", MediaTypeImageManifest, false},
		{"same key in two objects", strings.TrimSuffix(withType(MediaTypeImageManifest), "}") + `,"annotations":{"size":"1","digest":"x"}}`, "", MediaTypeImageManifest, false},
		// A platform's fields are short words; megabytes of them are
		// refused (each view of the tags would repeat them).
		{"platform fields at their limits", indexWith(`"architecture":"` + long(128) + `","os":"` + long(128) + `","variant":"` + long(128) + `","os.version":"` + long(128) +
			`","os.features":[` + strings.Repeat(`"`+long(128)+`",`, 31) + `"win32k"],"features":["sse4"]`), "", MediaTypeImageIndex, false},
		{"1 MiB os", indexWith(`"architecture":"amd64","os":"` + long(1<<20) + `"`), "", "", true},
		{"os over the limit", indexWith(`"architecture":"amd64","os":"` + long(129) + `"`), "", "", true},
		{"architecture over the limit", indexWith(`"architecture":"` + long(129) + `","os":"linux"`), "", "", true},
		{"variant over the limit", indexWith(`"architecture":"arm","os":"linux","variant":"` + long(129) + `"`), "", "", true},
		{"os.version over the limit", indexWith(`"architecture":"amd64","os":"windows","os.version":"` + long(129) + `"`), "", "", true},
		{"too many os.features", indexWith(`"architecture":"amd64","os":"windows","os.features":[` + strings.Repeat(`"a",`, 32) + `"a"]`), "", "", true},
		{"an os.feature over the limit", indexWith(`"architecture":"amd64","os":"windows","os.features":["` + long(129) + `"]`), "", "", true},
		{"too many features", indexWith(`"architecture":"amd64","os":"linux","features":[` + strings.Repeat(`"a",`, 32) + `"a"]`), "", "", true},
		{"a feature over the limit", indexWith(`"architecture":"amd64","os":"linux","features":["` + long(129) + `"]`), "", "", true},
		// One digest listed as a manifest and as a blob: which kind would
		// the push check, the pull serve, a gate release?
		{"digest as a blob, then as a manifest", indexOf(entry("application/octet-stream", dgA, ""), entry(MediaTypeImageManifest, dgA, `"architecture":"arm64","os":"linux"`)), "", "", true},
		{"digest as a manifest, then as a blob", indexOf(entry(MediaTypeDockerManifest, dgA, `"architecture":"amd64","os":"linux"`), entry(MediaTypeImageConfig, dgA, "")), "", "", true},
		{"digest as a manifest with parameters, then as a manifest", indexOf(entry(MediaTypeImageManifest+";charset=utf-8", dgA, ""), entry(MediaTypeImageManifest, dgA, "")), "", "", true},
		{"digest as two manifest types", indexOf(entry(MediaTypeImageManifest, dgA, `"architecture":"arm","os":"linux","variant":"v6"`), entry(MediaTypeDockerManifest, dgA, `"architecture":"arm","os":"linux","variant":"v7"`)), "", MediaTypeImageIndex, false},
		{"digest as a blob twice", indexOf(entry("application/octet-stream", dgA, ""), entry("application/vnd.example.thing", dgA, "")), "", MediaTypeImageIndex, false},
		{"subject also an entry of another type", strings.TrimSuffix(indexOf(entry("application/octet-stream", dgA, "")), "}") + `,"subject":{"mediaType":"` + MediaTypeImageManifest + `","digest":"` + dgA + `","size":1}}`, "", MediaTypeImageIndex, false},
		{"a long os in a Docker list", strings.Replace(indexWith(`"architecture":"amd64","os":"`+long(129)+`"`), MediaTypeImageIndex, MediaTypeDockerList, 1), "", "", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m, err := ParseManifest([]byte(tc.body), tc.contentType)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidManifest) {
					t.Fatalf("err = %v, want ErrInvalidManifest", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if m.MediaType != tc.wantType {
				t.Fatalf("media type %q, want %q", m.MediaType, tc.wantType)
			}
		})
	}
}

// indexWith is an index of one entry whose platform object holds fields.
func indexWith(fields string) string {
	return `{"schemaVersion":2,"mediaType":"` + MediaTypeImageIndex + `","manifests":[{"mediaType":"` + MediaTypeImageManifest + `","digest":"` + dgA + `","size":1,"platform":{` + fields + `}}]}`
}

// entry is an index entry; platform, if not empty, is its platform's
// fields.
func entry(mediaType, dg, platform string) string {
	e := `{"mediaType":"` + mediaType + `","digest":"` + dg + `","size":1`
	if platform != "" {
		e += `,"platform":{` + platform + `}`
	}
	return e + `}`
}

// indexOf is an OCI index of the entries.
func indexOf(entries ...string) string {
	return `{"schemaVersion":2,"mediaType":"` + MediaTypeImageIndex + `","manifests":[` + strings.Join(entries, ",") + `]}`
}

// long is a platform value of n bytes.
func long(n int) string { return strings.Repeat("x", n) }

func TestArtifactPolicy(t *testing.T) {
	p := ArtifactPolicy{Allowed: DefaultAllowedArtifacts(), AllowV11Artifacts: true}
	mk := func(config, artifactType string, layers ...string) *Manifest {
		m := &Manifest{SchemaVersion: 2, MediaType: MediaTypeImageManifest, ArtifactType: artifactType,
			Config: &Descriptor{MediaType: config, Digest: dgA, Size: 2}}
		for _, l := range layers {
			m.Layers = append(m.Layers, Descriptor{MediaType: l, Digest: dgB, Size: 1})
		}
		return m
	}
	ok := []*Manifest{
		mk(MediaTypeImageConfig, "", MediaTypeLayerGzip, MediaTypeLayerZstd),
		mk(MediaTypeDockerConfig, "", MediaTypeDockerLayer),
		mk(MediaTypeHelmConfig, "", MediaTypeHelmChart),
		mk(MediaTypeImageConfig, "", MediaTypeCosignSimpleSigning),
		mk(MediaTypeImageConfig, "", MediaTypeDSSE),
		mk(MediaTypeCosignSigArtifact, MediaTypeCosignSigArtifact, MediaTypeCosignSimpleSigning),
		mk(MediaTypeEmptyJSON, "application/vnd.example", "text/plain"),
	}
	for i, m := range ok {
		if err := p.Check(m); err != nil {
			t.Errorf("case %d: %v", i, err)
		}
	}
	bad := []*Manifest{
		mk("application/vnd.example.config", ""),
		mk(MediaTypeHelmConfig, "", MediaTypeLayerGzip),
		mk(MediaTypeDockerConfig, "", MediaTypeHelmChart),
	}
	for i, m := range bad {
		if err := p.Check(m); !errors.Is(err, ErrInvalidManifest) || !strings.Contains(err.Error(), "not") {
			t.Errorf("bad case %d: %v", i, err)
		}
	}
	p.AllowV11Artifacts = false
	if err := p.Check(mk(MediaTypeEmptyJSON, "application/vnd.example", "text/plain")); err == nil {
		t.Error("v1.1 artifact admitted with AllowV11Artifacts off")
	}
	p.Allowed["application/vnd.example"] = []string{"*"}
	if err := p.Check(mk(MediaTypeEmptyJSON, "application/vnd.example", "text/plain")); err != nil {
		t.Errorf("listed artifactType refused: %v", err)
	}
}

func FuzzParseManifest(f *testing.F) {
	f.Add([]byte(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"a/b","digest":"`+dgA+`","size":1},"layers":[]}`), MediaTypeImageManifest)
	f.Add([]byte(`{"schemaVersion":2,"manifests":[{"mediaType":"a/b","digest":"`+dgA+`","size":1}]}`), MediaTypeImageIndex)
	f.Add([]byte(`{"schemaVersion":2,"subject":{}}`), "")
	f.Fuzz(func(t *testing.T, body []byte, contentType string) {
		m, err := ParseManifest(body, contentType)
		if err != nil {
			if !errors.Is(err, ErrInvalidManifest) {
				t.Fatalf("error %v does not wrap ErrInvalidManifest", err)
			}
			return
		}
		// Whatever is accepted has a supported type and valid descriptors.
		if !isManifestType(m.MediaType) {
			t.Fatalf("accepted media type %q", m.MediaType)
		}
		for _, d := range append(append(m.Blobs(), m.Manifests...), m.Layers...) {
			if err := d.Digest.Validate(); err != nil || d.Size < 0 {
				t.Fatalf("accepted invalid descriptor %+v", d)
			}
		}
		// Each referenced digest once; the subject is never required.
		seen := map[string]bool{}
		for _, r := range m.References() {
			if seen[r.Digest.String()] || (r.Kind == RefSubject && r.Required) {
				t.Fatalf("references %+v", m.References())
			}
			seen[r.Digest.String()] = true
		}
		if _, err := json.Marshal(m); err != nil {
			t.Fatal(err)
		}
		ArtifactPolicy{Allowed: DefaultAllowedArtifacts()}.Check(m)
	})
}

func TestDescribes(t *testing.T) {
	layer := func(mt string) string {
		return `{"mediaType":"` + mt + `","digest":"sha256:` + strings.Repeat("a", 64) + `","size":1}`
	}
	image := func(layers ...string) string {
		return `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` +
			strings.Repeat("b", 64) + `","size":2},"layers":[` + strings.Join(layers, ",") + `]}`
	}
	tests := []struct {
		name, body, contentType string
		want                    bool
	}{
		{"cosign signature", image(layer(MediaTypeCosignSimpleSigning)), MediaTypeImageManifest, true},
		{"attestation", image(layer(MediaTypeDSSE)), MediaTypeImageManifest, true},
		{"sbom", image(layer(MediaTypeSPDX)), MediaTypeImageManifest, true},
		{"no layers", image(), MediaTypeImageManifest, true},
		{"image", image(layer(MediaTypeLayerGzip)), MediaTypeImageManifest, false},
		{"signature beside a layer", image(layer(MediaTypeCosignSimpleSigning), layer(MediaTypeLayerZstd)), MediaTypeImageManifest, false},
		{"docker layer", image(layer(MediaTypeDockerLayer)), MediaTypeImageManifest, false},
		{"uncompressed docker layer", image(layer("application/vnd.docker.image.rootfs.diff.tar")), MediaTypeImageManifest, false},
		{"non-distributable layer", image(layer(MediaTypeLayerNonDistributable)), MediaTypeImageManifest, false},
		{"index", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`, MediaTypeImageIndex, false},
		// oras attach gives a file with no type of its own the OCI layer
		// type, under the empty config: no runtime runs it.
		{"oras attach", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json",` +
			`"config":{"mediaType":"application/vnd.oci.empty.v1+json","digest":"` + EmptyJSONDigest + `","size":2},"layers":[` +
			layer("application/vnd.oci.image.layer.v1.tar") + `]}`, MediaTypeImageManifest, true},
		{"artifactType on an image", `{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","artifactType":"application/spdx+json",` +
			`"config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:` + strings.Repeat("b", 64) + `","size":2},"layers":[` +
			layer(MediaTypeLayerGzip) + `]}`, MediaTypeImageManifest, false},
	}
	for _, tt := range tests {
		m, err := ParseManifest([]byte(tt.body), tt.contentType)
		if err != nil {
			t.Fatalf("%s: %v", tt.name, err)
		}
		if got := m.Describes(); got != tt.want {
			t.Errorf("%s: Describes() = %v, want %v", tt.name, got, tt.want)
		}
	}
}
