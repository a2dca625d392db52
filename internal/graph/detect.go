// Package graph is the base-image graph: what every stored image is built
// on, discovered from the content itself, and the triggers that fire when
// a base moves. This file holds the pure part: reading the signals an
// image carries (base annotations, BuildKit provenance, layer chain IDs).
package graph

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/oci"
)

// The OCI annotations a builder sets on an image built FROM a base
// (buildah and podman by default; crane append --set-base-image-annotations).
const (
	AnnotationBaseName   = "org.opencontainers.image.base.name"
	AnnotationBaseDigest = "org.opencontainers.image.base.digest"
)

// How a base was detected, strongest first.
const (
	MethodAnnotation = "annotation"
	MethodProvenance = "provenance"
	MethodLayers     = "layers"
)

// predicateSLSAProvenance starts the predicate type of the SLSA
// provenance BuildKit attests (in an index's attestation manifests,
// oci.DockerAttestationType).
const predicateSLSAProvenance = "https://slsa.dev/provenance/"

// ImageConfig is what the graph reads of an image configuration.
type ImageConfig struct {
	OS           string
	Architecture string
	Variant      string
	// DiffIDs are the digests of the uncompressed layers, base first.
	DiffIDs []digest.Digest
}

// ErrNotImage is returned for a configuration that is not an image's
// (an artifact's, or one without layers).
var ErrNotImage = errors.New("not an image configuration")

// ParseConfig reads an image configuration (OCI or Docker).
func ParseConfig(b []byte) (ImageConfig, error) {
	var c struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
		Variant      string `json:"variant"`
		RootFS       *struct {
			Type    string   `json:"type"`
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(b, &c); err != nil {
		return ImageConfig{}, fmt.Errorf("%w: %v", ErrNotImage, err)
	}
	if c.RootFS == nil || c.RootFS.Type != "layers" {
		return ImageConfig{}, ErrNotImage
	}
	out := ImageConfig{OS: c.OS, Architecture: c.Architecture, Variant: c.Variant}
	for i, s := range c.RootFS.DiffIDs {
		d, err := digest.Parse(s)
		if err != nil {
			return ImageConfig{}, fmt.Errorf("%w: rootfs.diff_ids[%d]: %v", ErrNotImage, i, err)
		}
		out.DiffIDs = append(out.DiffIDs, d)
	}
	return out, nil
}

// ChainIDs returns the chain ID of each layer of an image (the OCI image
// spec's ChainID): the first is the first diff ID, each next one the
// SHA-256 of the previous chain ID, a space and the layer's diff ID. Two
// images share their first n layers exactly when their n-th chain IDs are
// equal, however the layers were compressed.
func ChainIDs(diffIDs []digest.Digest) []digest.Digest {
	out := make([]digest.Digest, len(diffIDs))
	for i, d := range diffIDs {
		if i == 0 {
			out[i] = d
			continue
		}
		sum := sha256.Sum256([]byte(string(out[i-1]) + " " + string(d)))
		out[i] = digest.NewDigestFromEncoded(digest.SHA256, hex.EncodeToString(sum[:]))
	}
	return out
}

// Ref is an image reference as a builder wrote it: in a base-name
// annotation or a provenance material.
type Ref struct {
	// Host is the registry's host (docker.io when the name has none).
	Host string
	// Repository is the path in that registry (library/ubuntu for
	// Docker Hub's official images).
	Repository string
	Tag        string
	Digest     digest.Digest
}

// String writes the reference back as host/repository[:tag][@digest].
func (r Ref) String() string {
	s := r.Host + "/" + r.Repository
	if r.Tag != "" {
		s += ":" + r.Tag
	}
	if r.Digest != "" {
		s += "@" + r.Digest.String()
	}
	return s
}

// ParseImageName reads [host[:port]/]path[:tag][@digest] the way docker
// and the OCI annotation spec write it.
func ParseImageName(s string) (Ref, error) {
	var r Ref
	name := strings.TrimSpace(s)
	if name == "" {
		return r, errors.New("empty image name")
	}
	if i := strings.Index(name, "@"); i >= 0 {
		d, err := digest.Parse(name[i+1:])
		if err != nil {
			return r, fmt.Errorf("image name %q: %w", s, err)
		}
		r.Digest, name = d, name[:i]
	}
	if i := strings.LastIndex(name, ":"); i >= 0 && !strings.Contains(name[i+1:], "/") {
		r.Tag, name = name[i+1:], name[:i]
	}
	first, rest, hasSlash := strings.Cut(name, "/")
	if hasSlash && (strings.ContainsAny(first, ".:") || first == "localhost") {
		r.Host, name = first, rest
	} else {
		r.Host = "docker.io"
	}
	if r.Host == "docker.io" && !strings.Contains(name, "/") {
		name = "library/" + name
	}
	if name == "" || strings.ContainsAny(name, " \t@") {
		return Ref{}, fmt.Errorf("image name %q: no repository", s)
	}
	r.Repository = strings.ToLower(name)
	return r, nil
}

// BaseAnnotations reads the base-image annotations of a manifest. A name
// without a digest still names the base (its tag then says which digest
// it was, as far as the registry's tag history knows); a digest without a
// name is kept with an empty repository.
func BaseAnnotations(ann map[string]string) (Ref, bool) {
	name, dg := ann[AnnotationBaseName], ann[AnnotationBaseDigest]
	if name == "" && dg == "" {
		return Ref{}, false
	}
	var r Ref
	if name != "" {
		var err error
		if r, err = ParseImageName(name); err != nil {
			r = Ref{}
		}
	}
	if dg != "" {
		d, err := digest.Parse(dg)
		if err != nil {
			return Ref{}, false
		}
		r.Digest = d
	}
	return r, r.Repository != "" || r.Digest != ""
}

// Attestation reports whether an index entry is a BuildKit attestation
// manifest, and the digest of the manifest of the index it attests.
func Attestation(annotations map[string]string) (digest.Digest, bool) {
	if annotations[oci.DockerReferenceType] != oci.DockerAttestationType {
		return "", false
	}
	d, err := digest.Parse(annotations[oci.DockerReferenceDigest])
	return d, err == nil
}

// ProvenanceMaterials reads the images an in-toto statement with an SLSA
// provenance predicate (v0.2 materials, v1 resolved dependencies) lists
// as build inputs, with their digests. Inputs that are not container
// images (git sources, HTTP files) are left out. A statement of another
// predicate returns no materials and no error.
func ProvenanceMaterials(statement []byte) ([]Ref, error) {
	var st struct {
		PredicateType string `json:"predicateType"`
		Predicate     struct {
			Materials       []material `json:"materials"`
			BuildDefinition struct {
				ResolvedDependencies []material `json:"resolvedDependencies"`
			} `json:"buildDefinition"`
		} `json:"predicate"`
	}
	if err := json.Unmarshal(statement, &st); err != nil {
		return nil, fmt.Errorf("read in-toto statement: %w", err)
	}
	if !strings.HasPrefix(st.PredicateType, predicateSLSAProvenance) {
		return nil, nil
	}
	var out []Ref
	for _, m := range append(st.Predicate.Materials, st.Predicate.BuildDefinition.ResolvedDependencies...) {
		r, ok := m.image()
		if ok {
			out = append(out, r)
		}
	}
	return out, nil
}

type material struct {
	URI    string            `json:"uri"`
	Digest map[string]string `json:"digest"`
}

// image reads a material that names a container image: a package URL
// pkg:docker/[host/]path@tag (BuildKit's form) or docker-image://name.
func (m material) image() (Ref, bool) {
	sum := m.Digest["sha256"]
	if sum == "" {
		return Ref{}, false
	}
	d := digest.NewDigestFromEncoded(digest.SHA256, sum)
	if d.Validate() != nil {
		return Ref{}, false
	}
	var name string
	switch {
	case strings.HasPrefix(m.URI, "pkg:docker/"):
		p := strings.TrimPrefix(m.URI, "pkg:docker/")
		p, _, _ = strings.Cut(p, "?")
		p, _, _ = strings.Cut(p, "#")
		path, version, _ := strings.Cut(p, "@")
		path, err := url.PathUnescape(path)
		if err != nil {
			return Ref{}, false
		}
		if version, err = url.PathUnescape(version); err != nil {
			return Ref{}, false
		}
		name = path
		if version != "" && !strings.Contains(version, ":") {
			name += ":" + version
		}
	case strings.HasPrefix(m.URI, "docker-image://"):
		name = strings.TrimPrefix(m.URI, "docker-image://")
	default:
		return Ref{}, false
	}
	r, err := ParseImageName(name)
	if err != nil {
		return Ref{}, false
	}
	r.Digest = d
	return r, true
}
