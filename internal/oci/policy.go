package oci

import (
	"fmt"
	"sort"
	"strings"
)

// ArtifactPolicy is the allow-list of what may be pushed: a map from a config
// media type to the layer media types allowed with it. A layer entry "*"
// allows any layer type. Image-spec v1.1 artifacts (an empty config
// descriptor and an artifactType) are looked up by their artifactType, and
// admitted with any layers when AllowV11Artifacts is set and their
// artifactType has no entry.
type ArtifactPolicy struct {
	Allowed           map[string][]string
	AllowV11Artifacts bool
}

var ociLayers = []string{
	MediaTypeLayer, MediaTypeLayerGzip, MediaTypeLayerZstd,
	MediaTypeLayerNonDistributable, MediaTypeLayerNonDistributableGzip, MediaTypeLayerNonDistributableZstd,
}

var signatureLayers = []string{
	MediaTypeCosignSimpleSigning, MediaTypeSigstoreBundle, MediaTypeDSSE, MediaTypeInToto,
	MediaTypeSPDX, MediaTypeSPDXText, MediaTypeCycloneDX, MediaTypeCycloneDXXML,
}

// DefaultAllowedArtifacts returns the default allow-list: container images
// (OCI and Docker), Helm charts, and cosign signatures, SBOMs and
// attestations, following Quay's default ALLOWED_OCI_ARTIFACT_TYPES.
func DefaultAllowedArtifacts() map[string][]string {
	image := append(append([]string{}, ociLayers...), signatureLayers...)
	docker := append([]string{MediaTypeDockerLayer, MediaTypeDockerForeignLayer}, ociLayers...)
	return map[string][]string{
		MediaTypeImageConfig:  append(image, MediaTypeDockerLayer, MediaTypeDockerForeignLayer),
		MediaTypeDockerConfig: docker,
		MediaTypeHelmConfig:   {MediaTypeTarGzip, MediaTypeHelmChart, MediaTypeHelmProvenance},
		// cosign --registry-referrers-mode=oci-1-1 uses its own config types.
		MediaTypeCosignSigArtifact:  signatureLayers,
		MediaTypeCosignAttArtifact:  signatureLayers,
		MediaTypeCosignSBOMArtifact: signatureLayers,
		// SBOM referrers (image-spec 1.1 artifacts), such as the ones
		// Berth's scanner attaches and oras attach pushes.
		MediaTypeSPDX:      {MediaTypeSPDX},
		MediaTypeCycloneDX: {MediaTypeCycloneDX},
	}
}

// Check reports why a manifest is not allowed, or nil. An index's child
// manifests are checked when they are pushed; what else an index carries
// (an entry of a type that is not a manifest's, stored as a blob, and its
// artifactType) must be a type the allow-list names, as a config or a
// layer type: else an index would store under a tag any blob the
// allow-list refuses in an image.
func (p ArtifactPolicy) Check(m *Manifest) error {
	if IsIndex(m.MediaType) {
		return p.checkIndex(m)
	}
	if m.Config == nil {
		return nil
	}
	key := m.Config.MediaType
	what := "config media type"
	if key == MediaTypeEmptyJSON && m.ArtifactType != "" {
		key, what = m.ArtifactType, "artifactType"
		if _, ok := p.Allowed[key]; !ok && p.AllowV11Artifacts {
			return nil
		}
	}
	layers, ok := p.Allowed[key]
	if !ok {
		return manifestInvalid("%s %q is not in this registry's allowed artifact types (allowed: %s)", what, key, p.keys())
	}
	for i, l := range m.Layers {
		if !contains(layers, l.MediaType) {
			return manifestInvalid("layers[%d].mediaType %q is not allowed with %s %q (allowed: %s)", i, l.MediaType, what, key, strings.Join(layers, ", "))
		}
	}
	return nil
}

func (p ArtifactPolicy) checkIndex(m *Manifest) error {
	if m.ArtifactType != "" && !p.AllowV11Artifacts && !p.names(m.ArtifactType) {
		return manifestInvalid("artifactType %q is not in this registry's allowed artifact types (allowed: %s)", m.ArtifactType, p.keys())
	}
	for i, e := range m.Manifests {
		if !IsManifestMediaType(e.MediaType) && !p.AllowV11Artifacts && !p.names(e.MediaType) {
			return manifestInvalid("manifests[%d].mediaType %q is neither a manifest's nor a type this registry allows", i, e.MediaType)
		}
	}
	return nil
}

// names reports whether the allow-list names t as a config type or as a
// layer type of any.
func (p ArtifactPolicy) names(t string) bool {
	if _, ok := p.Allowed[t]; ok {
		return true
	}
	for _, layers := range p.Allowed {
		if contains(layers, t) {
			return true
		}
	}
	return false
}

func (p ArtifactPolicy) keys() string {
	ks := make([]string, 0, len(p.Allowed))
	for k := range p.Allowed {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return strings.Join(ks, ", ")
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s || v == "*" {
			return true
		}
	}
	return false
}

// ValidateArtifactTypes checks a configured allow-list for obvious mistakes.
func ValidateArtifactTypes(m map[string][]string) error {
	for k, v := range m {
		if k == "" || strings.ContainsAny(k, " \t") {
			return fmt.Errorf("config media type %q is not a media type", k)
		}
		if len(v) == 0 {
			return fmt.Errorf("%q: no layer media types (use [\"*\"] to allow any)", k)
		}
	}
	return nil
}
