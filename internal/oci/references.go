package oci

import "github.com/opencontainers/go-digest"

// RefKind says what a reference is to the manifest that makes it.
type RefKind uint8

// The kinds of reference a manifest makes.
const (
	// RefConfig is an image manifest's config blob.
	RefConfig RefKind = iota + 1
	// RefLayer is one of an image manifest's layers.
	RefLayer
	// RefChild is an entry of an index: a manifest when its media type is
	// one Berth stores as a manifest, otherwise a blob.
	RefChild
	// RefSubject is the manifest this one is about (the referrers API).
	RefSubject
)

func (k RefKind) String() string {
	switch k {
	case RefConfig:
		return "config"
	case RefLayer:
		return "layer"
	case RefChild:
		return "child"
	case RefSubject:
		return "subject"
	}
	return "unknown"
}

// Ref is one reference of a manifest: what it names, as it names it.
type Ref struct {
	Kind RefKind
	Descriptor
	// Required says the referenced content must be stored in the
	// manifest's repository before the manifest is: true for the config,
	// layers and index entries; false for foreign (non-distributable)
	// layers, whose bytes come from their URLs, and for the subject, which
	// the distribution spec lets a client push after its referrers.
	Required bool
}

// IsManifest reports whether the reference names a manifest (stored in
// the manifests of the repository) rather than a blob: the subject, and an
// index entry of a manifest media type. An index entry of any other media
// type is content the index carries as a blob.
func (r Ref) IsManifest() bool {
	switch r.Kind {
	case RefSubject:
		return true
	case RefChild:
		return IsManifestMediaType(r.MediaType)
	}
	return false
}

// References lists what the manifest references: its config, its layers,
// the entries of an index and its subject, in that order, each digest once
// (the first time it appears; required if any appearance is: an index
// cannot list one digest as a manifest and as a blob, ParseManifest
// refuses it, so the kind kept is the digest's only kind). It is the
// one definition of a manifest's references that the push, the
// pull-through cache and the copier share.
func (m *Manifest) References() []Ref {
	var refs []Ref
	at := map[digest.Digest]int{}
	add := func(kind RefKind, d Descriptor, required bool) {
		if i, ok := at[d.Digest]; ok {
			refs[i].Required = refs[i].Required || required
			return
		}
		at[d.Digest] = len(refs)
		refs = append(refs, Ref{Kind: kind, Descriptor: d, Required: required})
	}
	if m.Config != nil {
		add(RefConfig, *m.Config, true)
	}
	for _, l := range m.Layers {
		add(RefLayer, l, !IsForeignLayer(l.MediaType))
	}
	for _, c := range m.Manifests {
		add(RefChild, c, true)
	}
	if m.Subject != nil {
		add(RefSubject, *m.Subject, false)
	}
	return refs
}

// IsManifestMediaType reports whether content of the media type is stored
// as a manifest (OCI or Docker schema 2 image manifest, index or list).
func IsManifestMediaType(t string) bool {
	switch t {
	case MediaTypeImageManifest, MediaTypeImageIndex, MediaTypeDockerManifest, MediaTypeDockerList:
		return true
	}
	return false
}
