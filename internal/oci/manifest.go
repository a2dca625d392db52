package oci

import (
	"encoding/json"
	"errors"
	"fmt"
	"mime"
	"strings"

	"github.com/opencontainers/go-digest"
)

// ErrInvalidManifest is wrapped by every manifest validation error.
var ErrInvalidManifest = errors.New("invalid manifest")

// Descriptor is a content descriptor as it appears in manifests.
type Descriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       digest.Digest     `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
	Platform     *Platform         `json:"platform,omitempty"`
}

// Platform describes the platform of an index entry.
type Platform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
	Variant      string   `json:"variant,omitempty"`
	// Features is reserved by the image spec (Docker's manifest lists
	// used it for CPU features).
	Features []string `json:"features,omitempty"`
}

// Bounds of a platform's fields. The image spec sets none, but its values
// are short words ("linux", "arm64", "v8", "10.0.17763.1234", "win32k")
// that every client, scanner and page repeats: a manifest that fills them
// with megabytes is refused (MANIFEST_INVALID) rather than shown and
// copied on every view of its tags.
const (
	// MaxPlatformField bounds the bytes of os, architecture, variant,
	// os.version and of each entry of os.features and features.
	MaxPlatformField = 128
	// MaxPlatformFeatures bounds the entries of os.features and of
	// features.
	MaxPlatformFeatures = 32
)

// Manifest is the union of the fields of an image manifest and an index,
// OCI or Docker, that a registry needs to validate and index.
type Manifest struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Config        *Descriptor       `json:"config,omitempty"`
	Layers        []Descriptor      `json:"layers,omitempty"`
	Manifests     []Descriptor      `json:"manifests,omitempty"`
	Subject       *Descriptor       `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

// EffectiveArtifactType is what the referrers API reports for a manifest:
// its artifactType, or else its config media type.
func (m *Manifest) EffectiveArtifactType() string {
	if m.ArtifactType != "" {
		return m.ArtifactType
	}
	if m.Config != nil {
		return m.Config.MediaType
	}
	return ""
}

// Describes reports whether a manifest can only describe other content,
// as the signatures, attestations and SBOMs cosign stores under its
// sha256-<hex>.sig, .att and .sbom tags do: not an index, and either a
// config that is not an image's (an artifact's, such as the empty config
// oras attach gives, whatever its layers' types: container runtimes run
// only an image config) or no layer a container runtime would unpack into
// a root filesystem.
func (m *Manifest) Describes() bool {
	if IsIndex(m.MediaType) {
		return false
	}
	if m.Config != nil && m.Config.MediaType != MediaTypeImageConfig && m.Config.MediaType != MediaTypeDockerConfig {
		return true
	}
	for _, l := range m.Layers {
		if IsFilesystemLayer(l.MediaType) {
			return false
		}
	}
	return true
}

// Blobs returns the descriptors of blobs the manifest needs stored in the
// registry: its required references that are not manifests (the config and
// the layers less foreign layers; for an index, entries that are not
// manifests).
func (m *Manifest) Blobs() []Descriptor {
	var out []Descriptor
	for _, r := range m.References() {
		if r.Required && !r.IsManifest() {
			out = append(out, r.Descriptor)
		}
	}
	return out
}

func manifestInvalid(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrInvalidManifest, fmt.Sprintf(format, args...))
}

// ParseManifest parses and validates a manifest body. The media type comes
// from the body's mediaType field or, where the body has none (helm and
// umoci omit it), from contentType. When both are present they must agree.
func ParseManifest(body []byte, contentType string) (*Manifest, error) {
	var m Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, manifestInvalid("body is not a JSON manifest: %v", err)
	}
	if err := checkKeys(body); err != nil {
		return nil, manifestInvalid("%v", err)
	}
	ct := ""
	if contentType != "" {
		if mt, _, err := mime.ParseMediaType(contentType); err == nil {
			ct = mt
		}
	}
	switch {
	case m.MediaType == "" && isManifestType(ct):
		m.MediaType = ct
	case m.MediaType == "":
		// No type anywhere: an OCI manifest may omit it (image-spec allows
		// it); decide by shape.
		if m.Manifests != nil {
			m.MediaType = MediaTypeImageIndex
		} else if m.Config != nil {
			m.MediaType = MediaTypeImageManifest
		}
	case ct != "" && isManifestType(ct) && ct != m.MediaType:
		return nil, manifestInvalid("Content-Type %q does not match the manifest's mediaType %q", ct, m.MediaType)
	}
	switch m.MediaType {
	case MediaTypeImageManifest, MediaTypeDockerManifest:
		return &m, m.validateImage()
	case MediaTypeImageIndex, MediaTypeDockerList:
		return &m, m.validateIndex()
	case MediaTypeDockerSchema1, MediaTypeDockerSchema1Signed:
		return nil, manifestInvalid("Docker schema 1 manifests are not supported; push schema 2 or OCI")
	case "":
		return nil, manifestInvalid("no media type: set the mediaType field or the Content-Type header")
	default:
		return nil, manifestInvalid("unsupported manifest media type %q", m.MediaType)
	}
}

func isManifestType(t string) bool {
	switch t {
	case MediaTypeImageManifest, MediaTypeImageIndex, MediaTypeDockerManifest, MediaTypeDockerList,
		MediaTypeDockerSchema1, MediaTypeDockerSchema1Signed:
		return true
	}
	return false
}

func (m *Manifest) validateImage() error {
	if m.SchemaVersion != 2 {
		return manifestInvalid("schemaVersion must be 2, got %d", m.SchemaVersion)
	}
	if m.Manifests != nil {
		return manifestInvalid("an image manifest has no \"manifests\" field")
	}
	if m.Config == nil {
		return manifestInvalid("config descriptor is required")
	}
	if err := validateDescriptor("config", *m.Config); err != nil {
		return err
	}
	if m.MediaType == MediaTypeDockerManifest && m.ArtifactType != "" {
		return manifestInvalid("artifactType is not allowed in a Docker manifest")
	}
	if m.Config.MediaType == MediaTypeEmptyJSON && m.ArtifactType == "" {
		return manifestInvalid("artifactType is required when config.mediaType is %s", MediaTypeEmptyJSON)
	}
	if err := validateArtifactType(m.ArtifactType); err != nil {
		return err
	}
	for i, l := range m.Layers {
		if err := validateDescriptor(fmt.Sprintf("layers[%d]", i), l); err != nil {
			return err
		}
	}
	return m.validateSubject()
}

func (m *Manifest) validateIndex() error {
	if m.SchemaVersion != 2 {
		return manifestInvalid("schemaVersion must be 2, got %d", m.SchemaVersion)
	}
	if m.Config != nil || m.Layers != nil {
		return manifestInvalid("an index has no \"config\" or \"layers\" field")
	}
	if err := validateArtifactType(m.ArtifactType); err != nil {
		return err
	}
	// An entry is checked, served and released as a manifest or as a blob
	// by its media type, and a manifest's references are one per digest:
	// an index listing one digest as both (a platform's image also as an
	// octet-stream) would have only one kind checked.
	first := map[digest.Digest]int{}
	for i, d := range m.Manifests {
		if err := validateDescriptor(fmt.Sprintf("manifests[%d]", i), d); err != nil {
			return err
		}
		j, seen := first[d.Digest]
		if !seen {
			first[d.Digest] = i
			continue
		}
		if IsManifestMediaType(m.Manifests[j].MediaType) != IsManifestMediaType(d.MediaType) {
			return manifestInvalid("manifests[%d] lists %s as %q and manifests[%d] as %q: an index lists a digest as a manifest or as a blob, not both",
				j, d.Digest, m.Manifests[j].MediaType, i, d.MediaType)
		}
	}
	return m.validateSubject()
}

func (m *Manifest) validateSubject() error {
	if m.Subject == nil {
		return nil
	}
	if m.MediaType == MediaTypeDockerManifest || m.MediaType == MediaTypeDockerList {
		return manifestInvalid("subject is not allowed in a Docker manifest")
	}
	return validateDescriptor("subject", *m.Subject)
}

// ValidMediaType reports whether s is a media type ("type/subtype" with
// optional parameters, RFC 6838 characters, at most 255 bytes).
func ValidMediaType(s string) bool {
	if s == "" || len(s) > 255 || strings.ContainsAny(s, " \t") {
		return false
	}
	mt, _, err := mime.ParseMediaType(s)
	return err == nil && strings.Contains(mt, "/")
}

func validateArtifactType(at string) error {
	if at != "" && !ValidMediaType(at) {
		return manifestInvalid("artifactType %q is not a media type", at)
	}
	return nil
}

func validateDescriptor(field string, d Descriptor) error {
	if d.MediaType == "" {
		return manifestInvalid("%s.mediaType is required", field)
	}
	if _, _, err := mime.ParseMediaType(d.MediaType); err != nil || strings.ContainsAny(d.MediaType, " \t") {
		return manifestInvalid("%s.mediaType %q is not a media type", field, d.MediaType)
	}
	if _, err := ParseDigest(string(d.Digest)); err != nil {
		return manifestInvalid("%s.digest: %v", field, err)
	}
	if d.Size < 0 {
		return manifestInvalid("%s.size must not be negative", field)
	}
	if d.Platform != nil {
		return validatePlatform(field+".platform", *d.Platform)
	}
	return nil
}

// validatePlatform applies the bounds of MaxPlatformField and
// MaxPlatformFeatures.
func validatePlatform(field string, p Platform) error {
	for _, f := range []struct{ name, value string }{
		{"os", p.OS}, {"architecture", p.Architecture}, {"variant", p.Variant}, {"os.version", p.OSVersion},
	} {
		if len(f.value) > MaxPlatformField {
			return manifestInvalid("%s.%s is %d bytes long, over the limit of %d", field, f.name, len(f.value), MaxPlatformField)
		}
	}
	for _, f := range []struct {
		name   string
		values []string
	}{{"os.features", p.OSFeatures}, {"features", p.Features}} {
		if len(f.values) > MaxPlatformFeatures {
			return manifestInvalid("%s.%s has %d entries, over the limit of %d", field, f.name, len(f.values), MaxPlatformFeatures)
		}
		for i, v := range f.values {
			if len(v) > MaxPlatformField {
				return manifestInvalid("%s.%s[%d] is %d bytes long, over the limit of %d", field, f.name, i, len(v), MaxPlatformField)
			}
		}
	}
	return nil
}

// Docker's annotation of the attestation manifests buildx adds to an index
// (with platform unknown/unknown).
const (
	DockerReferenceType   = "vnd.docker.reference.type"
	DockerReferenceDigest = "vnd.docker.reference.digest"
	DockerAttestationType = "attestation-manifest"
)

// IsAttestation reports whether an index entry is an attestation manifest
// rather than a platform's image to run: Docker's annotation says so, or
// its platform is "unknown". The scanner and the gate leave out the same
// entries by it.
func IsAttestation(d Descriptor) bool {
	return d.Annotations[DockerReferenceType] == DockerAttestationType || (d.Platform != nil && d.Platform.OS == "unknown")
}
