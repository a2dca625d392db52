package oci

import "strings"

// Manifest media types Berth stores.
const (
	MediaTypeImageManifest  = "application/vnd.oci.image.manifest.v1+json"
	MediaTypeImageIndex     = "application/vnd.oci.image.index.v1+json"
	MediaTypeDockerManifest = "application/vnd.docker.distribution.manifest.v2+json"
	MediaTypeDockerList     = "application/vnd.docker.distribution.manifest.list.v2+json"

	// Docker schema 1 is deprecated and refused with a clear message.
	MediaTypeDockerSchema1       = "application/vnd.docker.distribution.manifest.v1+json"
	MediaTypeDockerSchema1Signed = "application/vnd.docker.distribution.manifest.v1+prettyjws"
)

// Config and layer media types referred to by the default artifact policy.
const (
	MediaTypeImageConfig  = "application/vnd.oci.image.config.v1+json"
	MediaTypeDockerConfig = "application/vnd.docker.container.image.v1+json"
	MediaTypeEmptyJSON    = "application/vnd.oci.empty.v1+json"

	MediaTypeLayer                     = "application/vnd.oci.image.layer.v1.tar"
	MediaTypeLayerGzip                 = "application/vnd.oci.image.layer.v1.tar+gzip"
	MediaTypeLayerZstd                 = "application/vnd.oci.image.layer.v1.tar+zstd"
	MediaTypeLayerNonDistributable     = "application/vnd.oci.image.layer.nondistributable.v1.tar"
	MediaTypeLayerNonDistributableGzip = "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip"
	MediaTypeLayerNonDistributableZstd = "application/vnd.oci.image.layer.nondistributable.v1.tar+zstd"
	MediaTypeDockerLayer               = "application/vnd.docker.image.rootfs.diff.tar.gzip"
	MediaTypeDockerForeignLayer        = "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip"
	MediaTypeHelmConfig                = "application/vnd.cncf.helm.config.v1+json"
	MediaTypeHelmChart                 = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
	MediaTypeHelmProvenance            = "application/vnd.cncf.helm.chart.provenance.v1.prov"
	MediaTypeCosignSimpleSigning       = "application/vnd.dev.cosign.simplesigning.v1+json"
	MediaTypeSigstoreBundle            = "application/vnd.dev.sigstore.bundle.v0.3+json"
	MediaTypeDSSE                      = "application/vnd.dsse.envelope.v1+json"
	MediaTypeInToto                    = "application/vnd.in-toto+json"
	MediaTypeSPDX                      = "application/spdx+json"
	MediaTypeSPDXText                  = "text/spdx"
	MediaTypeCycloneDX                 = "application/vnd.cyclonedx+json"
	MediaTypeCycloneDXXML              = "application/vnd.cyclonedx+xml"
	MediaTypeCosignSigArtifact         = "application/vnd.dev.cosign.artifact.sig.v1+json"
	MediaTypeCosignAttArtifact         = "application/vnd.dev.cosign.artifact.att.v1+json"
	MediaTypeCosignSBOMArtifact        = "application/vnd.dev.cosign.artifact.sbom.v1+json"
	MediaTypeTarGzip                   = "application/tar+gzip"
)

// EmptyJSONDigest is the digest of the two bytes "{}", the image spec's empty
// descriptor content.
const EmptyJSONDigest = "sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"

// EmptyJSON is the content of the empty descriptor.
var EmptyJSON = []byte("{}")

// IsIndex reports whether a manifest media type lists other manifests.
func IsIndex(mediaType string) bool {
	return mediaType == MediaTypeImageIndex || mediaType == MediaTypeDockerList
}

// IsFilesystemLayer reports whether a layer media type is one container
// runtimes unpack into an image's root filesystem (OCI's layer types and
// Docker's rootfs diffs, compressed or not, distributable or not).
func IsFilesystemLayer(mediaType string) bool {
	return strings.HasPrefix(mediaType, "application/vnd.oci.image.layer.") ||
		strings.HasPrefix(mediaType, "application/vnd.docker.image.rootfs.")
}

// IsForeignLayer reports whether a layer's bytes may legitimately be absent
// from the registry (they are fetched from the descriptor's URLs).
func IsForeignLayer(mediaType string) bool {
	switch mediaType {
	case MediaTypeDockerForeignLayer, MediaTypeLayerNonDistributable,
		MediaTypeLayerNonDistributableGzip, MediaTypeLayerNonDistributableZstd:
		return true
	}
	return false
}
