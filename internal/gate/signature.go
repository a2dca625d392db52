package gate

// Verification of cosign signatures and attestations over a candidate
// manifest. The registry hands over the manifests that may carry them (the
// sha256-<hex>.sig and .att tags, the candidate's referrers) and a way to
// read their small blobs; this file decides, with sigstore's verifiers and
// the gate's trusted public keys, which of them really sign the candidate.
// Existence proves nothing: a signature counts only when it verifies under
// a trusted key AND its signed payload names the candidate's digest.

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"

	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/options"
	"github.com/sigstore/sigstore/pkg/signature/payload"

	"github.com/berth-dev/berth/internal/oci"
)

// What cosign writes (read in cosign v2.6's pkg/oci/static, pkg/types and
// pkg/oci/remote; the media types themselves live in internal/oci).
const (
	annotationSignature   = "dev.cosignproject.cosign/signature"
	annotationCertificate = "dev.sigstore.cosign/certificate"
	// annotationPredicateType is set on each layer of a .att manifest.
	annotationPredicateType = "predicateType"
	// annotationBundlePredicateType is set on a sigstore bundle referrer.
	annotationBundlePredicateType = "dev.sigstore.bundle.predicateType"
	// predicateCosignSign is the predicate of the in-toto statement that
	// `cosign sign --new-bundle-format` signs: a signature, not an
	// attestation.
	predicateCosignSign = "https://sigstore.dev/cosign/sign/v1"
)

// MaxPayload caps a signature payload read; a larger layer is refused
// unread.
const MaxPayload = 1 << 20

// TrustedKey is a public key a gate trusts.
type TrustedKey struct {
	ID  string // "sha256:<hex of the DER SubjectPublicKeyInfo>" (stable; shown to users)
	PEM string
}

// ParseKey checks a PEM public key (ECDSA P-256/384/521, Ed25519, RSA of
// 2048 to 16384 bits) and returns it, re-encoded as a PKIX "PUBLIC KEY"
// block, with its id; an error says what is wrong.
func ParseKey(pemText string) (TrustedKey, error) {
	block, rest := pem.Decode([]byte(pemText))
	if block == nil {
		return TrustedKey{}, errors.New("not a PEM public key: expected a -----BEGIN PUBLIC KEY----- block (cosign.pub)")
	}
	switch {
	case strings.Contains(block.Type, "PRIVATE KEY"):
		return TrustedKey{}, fmt.Errorf("this is a private key (%s); give the gate the public key only (cosign.pub), never the private key", block.Type)
	case block.Type == "CERTIFICATE":
		return TrustedKey{}, errors.New("this is a certificate, not a public key; give the gate the signer's public key (cosign.pub)")
	}
	if strings.TrimSpace(string(rest)) != "" {
		if next, _ := pem.Decode(rest); next != nil {
			return TrustedKey{}, errors.New("more than one PEM block: give one public key at a time")
		}
		return TrustedKey{}, errors.New("unexpected text after the PEM block")
	}
	pub, err := cryptoutils.UnmarshalPEMToPublicKey(pem.EncodeToMemory(block))
	if err != nil {
		return TrustedKey{}, fmt.Errorf("not a valid public key: %v", err)
	}
	if err := checkKeyType(pub); err != nil {
		return TrustedKey{}, err
	}
	der, err := cryptoutils.MarshalPublicKeyToDER(pub)
	if err != nil {
		return TrustedKey{}, fmt.Errorf("not a valid public key: %v", err)
	}
	sum := sha256.Sum256(der)
	return TrustedKey{
		ID:  "sha256:" + hex.EncodeToString(sum[:]),
		PEM: string(cryptoutils.PEMEncode(cryptoutils.PublicKeyPEMType, der)),
	}, nil
}

func checkKeyType(pub crypto.PublicKey) error {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		switch k.Curve {
		case elliptic.P256(), elliptic.P384(), elliptic.P521():
			return nil
		}
		return fmt.Errorf("ECDSA curve %s is not accepted: use P-256, P-384 or P-521", k.Curve.Params().Name)
	case ed25519.PublicKey:
		return nil
	case *rsa.PublicKey:
		if bits := k.N.BitLen(); bits < 2048 || bits > 16384 {
			return fmt.Errorf("RSA key of %d bits is not accepted: use 2048 to 16384 bits", bits)
		}
		return nil
	}
	return fmt.Errorf("unsupported key type %T: use ECDSA (P-256, P-384, P-521), Ed25519 or RSA", pub)
}

// SignatureManifest is a manifest that may carry signatures (or
// attestations) of the candidate.
type SignatureManifest struct {
	Kind   string // "cosign" (tag layout) or "referrer"
	Digest string
	Body   []byte // the manifest JSON
}

// BlobReader reads a blob of the repository whole (callers cap it;
// payloads are small).
type BlobReader func(ctx context.Context, digest string) ([]byte, error)

// SignatureTag is the cosign tag layout's tag for a digest
// ("sha256-<hex>.sig"), or "" when candidate is not a digest.
func SignatureTag(candidate string) string { return cosignTag(candidate, ".sig") }

// AttestationTag is the cosign tag layout's attestation tag for a digest
// ("sha256-<hex>.att"), or "" when candidate is not a digest.
func AttestationTag(candidate string) string { return cosignTag(candidate, ".att") }

func cosignTag(candidate, suffix string) string {
	d, err := oci.ParseDigest(candidate)
	if err != nil {
		return ""
	}
	return string(d.Algorithm()) + "-" + d.Encoded() + suffix
}

// IsSignatureArtifact reports whether a referrer's artifact type is a
// signature this package reads: cosign's OCI 1.1 signature, or a sigstore
// bundle (which may also be an attestation; VerifySignatures skips those).
func IsSignatureArtifact(artifactType string) bool {
	return artifactType == oci.MediaTypeCosignSigArtifact || artifactType == oci.MediaTypeSigstoreBundle
}

// IsAttestationArtifact reports whether a referrer's artifact type may
// hold attestations this package reads: in-toto DSSE envelopes (cosign's
// attestation referrers) or sigstore bundles.
func IsAttestationArtifact(artifactType string) bool {
	switch artifactType {
	case oci.MediaTypeInToto, oci.MediaTypeCosignAttArtifact, oci.MediaTypeSigstoreBundle:
		return true
	}
	return false
}

// MaxSignatureLayers bounds the signature layers (and, apart, the
// attestation layers) one evaluation reads and verifies: each reads a
// payload of up to MaxPayload and tries every trusted key, and whoever may
// push could list thousands (cosign adds one layer per signing). Those
// past it are reported as one unverified entry.
const MaxSignatureLayers = 64

// errTooMany is the reason given for signature layers past the bound.
var errTooMany = fmt.Sprintf("more than %d signatures: the rest were not read", MaxSignatureLayers)

// Reasons a signature does not verify, in a user's words.
const (
	errNoKey     = "the gate trusts no key"
	errUntrusted = "signed by a key the gate does not trust (or changed after signing)"
	errKeyless   = "keyless signature (with a certificate): the gate verifies only against its trusted keys"
	errNoSig     = "the manifest holds no cosign signature"
)

// VerifySignatures verifies the candidate's signatures: one Signature per
// signature layer found (a manifest may carry several), in the order
// given; a manifest that cannot be read or holds no signature layer gives
// one unverified Signature saying so. No keys: every signature is
// unverified with Error "the gate trusts no key". Sigstore bundles whose
// predicate is not cosign's signing predicate are attestations and are
// left to VerifyAttestations.
//
// The work is bounded (anyone who may read the repository can make a page
// verify): a layer listed again is read and checked once (listed again in
// its manifest, it adds no Signature), at most MaxSignatureChecks
// signature checks are made (the signatures after them are unverified,
// saying so, unread), and once ctx is done nothing more is read.
func VerifySignatures(ctx context.Context, candidate string, keys []TrustedKey, sigs []SignatureManifest, read BlobReader) []Signature {
	return verifySignatures(ctx, candidate, newChecker(keys), sigs, read)
}

func verifySignatures(ctx context.Context, candidate string, c *checker, sigs []SignatureManifest, read BlobReader) []Signature {
	var out []Signature
	verified := 0
	for _, sm := range sigs {
		base := Signature{Kind: sm.Kind, Digest: sm.Digest}
		if verified >= MaxSignatureLayers {
			base.Error = errTooMany
			return append(out, base)
		}
		m, err := parseSignatureManifest(sm.Body)
		if err != nil {
			base.Error = err.Error()
			out = append(out, base)
			continue
		}
		found := false
		listed := map[string]bool{}
		for _, layer := range m.Layers {
			bundle := layer.MediaType == oci.MediaTypeSigstoreBundle
			if layer.MediaType != oci.MediaTypeCosignSimpleSigning && !bundle {
				continue
			}
			found = true
			if bundle && isAttestationBundle(m) {
				continue
			}
			key := layerKey(layer)
			if listed[key] {
				continue // listed again: the same signature
			}
			listed[key] = true
			if err := ctx.Err(); err != nil {
				base.Error = fmt.Sprintf("%s (%v)", errStopped, err)
				return append(out, base)
			}
			if verified++; verified > MaxSignatureLayers {
				base.Error = errTooMany
				return append(out, base)
			}
			s := base
			s.KeyID, s.Error = c.once(key, func() (string, string) {
				switch {
				case c.keyErr != "":
					return "", c.keyErr
				case c.left == 0:
					return "", errChecks
				case bundle:
					return verifyBundleSignature(ctx, candidate, c, layer, read)
				}
				return verifySimpleSigning(ctx, candidate, c, layer, read)
			})
			s.Verified = s.Error == ""
			if !s.Verified {
				s.KeyID = ""
			}
			out = append(out, s)
		}
		if !found {
			base.Error = errNoSig
			out = append(out, base)
		}
	}
	return out
}

// VerifyAttestations verifies the candidate's cosign attestations: one
// Attestation per DSSE envelope layer (the .att tag layout and in-toto
// referrers) or sigstore bundle holding an attestation, in the order
// given. An attestation verifies when its envelope is signed by a trusted
// key and its in-toto statement names the candidate as a subject; its
// PredicateType is then the statement's, otherwise the one the manifest
// claims. Its work is bounded as VerifySignatures' is: those past the
// bounds are unverified.
func VerifyAttestations(ctx context.Context, candidate string, keys []TrustedKey, atts []SignatureManifest, read BlobReader) []Attestation {
	return verifyAttestations(ctx, candidate, newChecker(keys), atts, read)
}

func verifyAttestations(ctx context.Context, candidate string, c *checker, atts []SignatureManifest, read BlobReader) []Attestation {
	var out []Attestation
	for _, am := range atts {
		m, err := parseSignatureManifest(am.Body)
		if err != nil {
			continue
		}
		listed := map[string]bool{}
		for _, layer := range m.Layers {
			if len(out) >= MaxSignatureLayers || ctx.Err() != nil {
				return out // unverified beyond the bound, as if absent
			}
			a := Attestation{Digest: am.Digest}
			switch layer.MediaType {
			case oci.MediaTypeDSSE:
				a.PredicateType = layer.Annotations[annotationPredicateType]
			case oci.MediaTypeSigstoreBundle:
				if !isAttestationBundle(m) {
					continue // a signature
				}
				a.PredicateType = m.Annotations[annotationBundlePredicateType]
			default:
				continue
			}
			key := layerKey(layer)
			if listed[key] {
				continue
			}
			listed[key] = true
			typ, why := c.once(key, func() (string, string) {
				if c.keyErr != "" || c.left == 0 {
					return "", "not checked"
				}
				env, why := readPayload(ctx, read, layer)
				if why == "" && layer.MediaType == oci.MediaTypeSigstoreBundle {
					env, _, why = bundleEnvelope(env)
				}
				if why != "" {
					return "", why
				}
				_, st, why := verifyEnvelope(c, env)
				switch {
				case why != "":
					return "", why
				case !st.names(candidate):
					return "", "not of the candidate"
				}
				return st.PredicateType, ""
			})
			if why == "" {
				a.PredicateType, a.Verified = typ, true
			}
			out = append(out, a)
		}
	}
	return out
}

// keyVerifiers are the verifiers of one trusted key, one per signing
// scheme cosign may have used with it.
type keyVerifiers struct {
	id string
	vs []signature.Verifier
}

// loadKeys builds the verifiers of the trusted keys; it returns the
// reason nothing can verify when no key is usable. A key that does not
// parse (ParseKey refuses those) is skipped.
func loadKeys(keys []TrustedKey) ([]keyVerifiers, string) {
	if len(keys) == 0 {
		return nil, errNoKey
	}
	var out []keyVerifiers
	var lastErr error
	for _, k := range keys {
		pub, err := cryptoutils.UnmarshalPEMToPublicKey([]byte(k.PEM))
		if err == nil {
			err = checkKeyType(pub)
		}
		if err != nil {
			lastErr = err
			continue
		}
		vs := schemeVerifiers(pub)
		if len(vs) == 0 {
			continue
		}
		id := k.ID
		if id == "" {
			if der, err := cryptoutils.MarshalPublicKeyToDER(pub); err == nil {
				sum := sha256.Sum256(der)
				id = "sha256:" + hex.EncodeToString(sum[:])
			}
		}
		out = append(out, keyVerifiers{id: id, vs: vs})
	}
	if len(out) == 0 {
		return nil, fmt.Sprintf("none of the gate's keys can be used (%v)", lastErr)
	}
	return out, ""
}

// schemeVerifiers returns the verifiers of the schemes cosign signs with:
// ECDSA with the curve's hash (sigstore's default) and with SHA-256
// (cosign's verify default, older cosign), RSA PKCS#1 v1.5 with SHA-256,
// Ed25519ph (cosign's default since it supports Rekor with Ed25519) and
// pure Ed25519 (older cosign, sigstore bundles).
func schemeVerifiers(pub crypto.PublicKey) []signature.Verifier {
	var schemes [][]signature.LoadOption
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		h := crypto.SHA256
		switch k.Curve {
		case elliptic.P384():
			h = crypto.SHA384
		case elliptic.P521():
			h = crypto.SHA512
		}
		schemes = append(schemes, []signature.LoadOption{options.WithHash(h)})
		if h != crypto.SHA256 {
			schemes = append(schemes, []signature.LoadOption{options.WithHash(crypto.SHA256)})
		}
	case *rsa.PublicKey:
		schemes = append(schemes, []signature.LoadOption{options.WithHash(crypto.SHA256)})
	case ed25519.PublicKey:
		schemes = append(schemes, []signature.LoadOption{options.WithED25519ph()}, nil)
	}
	var out []signature.Verifier
	for _, opts := range schemes {
		if v, err := signature.LoadVerifierWithOpts(pub, opts...); err == nil {
			out = append(out, v)
		}
	}
	return out
}

// isAttestationBundle reports whether a sigstore bundle referrer holds an
// attestation rather than a signature: its manifest says a predicate type
// other than cosign's signing one. (The annotation only routes the bundle;
// what it proves comes from the verified statement.)
func isAttestationBundle(m *oci.Manifest) bool {
	pt, ok := m.Annotations[annotationBundlePredicateType]
	return ok && pt != predicateCosignSign
}

func parseSignatureManifest(body []byte) (*oci.Manifest, error) {
	var m oci.Manifest
	if err := json.Unmarshal(body, &m); err != nil {
		return nil, errors.New("malformed signature manifest: not a JSON image manifest")
	}
	if m.Manifests != nil || (m.MediaType != "" && m.MediaType != oci.MediaTypeImageManifest && m.MediaType != oci.MediaTypeDockerManifest) {
		return nil, fmt.Errorf("malformed signature manifest: an image manifest was expected, not %q", m.MediaType)
	}
	return &m, nil
}

// readPayload reads a layer's blob, refusing one declared or found over
// MaxPayload and one whose bytes do not match the descriptor. The second
// result is why it could not be read, "" on success.
func readPayload(ctx context.Context, read BlobReader, layer oci.Descriptor) ([]byte, string) {
	switch {
	case layer.Size < 0:
		return nil, "malformed signature layer: negative size"
	case layer.Size > MaxPayload:
		return nil, fmt.Sprintf("signature payload of %d bytes is over the %d-byte limit (not read)", layer.Size, MaxPayload)
	case layer.Digest.Validate() != nil:
		return nil, fmt.Sprintf("malformed signature layer: bad digest %q", layer.Digest)
	case read == nil:
		return nil, "cannot read the signature payload: no blob reader"
	}
	b, err := read(ctx, layer.Digest.String())
	if err != nil {
		return nil, fmt.Sprintf("cannot read the signature payload %s: %v", layer.Digest, err)
	}
	if len(b) > MaxPayload {
		return nil, fmt.Sprintf("signature payload of %d bytes is over the %d-byte limit", len(b), MaxPayload)
	}
	if int64(len(b)) != layer.Size || layer.Digest.Algorithm().FromBytes(b) != layer.Digest {
		return nil, fmt.Sprintf("the signature payload read does not match its descriptor %s", layer.Digest)
	}
	return b, ""
}

// verifySimpleSigning verifies one simplesigning layer: the signature in
// its annotation over its payload under a trusted key, then the payload's
// claim. It returns the verifying key's id, or why it does not verify.
func verifySimpleSigning(ctx context.Context, candidate string, c *checker, layer oci.Descriptor, read BlobReader) (string, string) {
	b64, ok := layer.Annotations[annotationSignature]
	if !ok || b64 == "" {
		return "", "malformed signature: the layer has no " + annotationSignature + " annotation"
	}
	sig, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		return "", "malformed signature: the " + annotationSignature + " annotation is not base64"
	}
	if layer.Annotations[annotationCertificate] != "" {
		return "", errKeyless // signed by the certificate's key: no trusted key verifies it
	}
	body, why := readPayload(ctx, read, layer)
	if why != "" {
		return "", why
	}
	id, spent := c.signedBy(sig, body)
	if id == "" {
		if spent {
			return "", errChecks
		}
		return "", errUntrusted
	}
	var p payload.SimpleContainerImage
	if err := json.Unmarshal(body, &p); err != nil {
		return "", fmt.Sprintf("malformed signature payload (signed by key %s): not cosign's simple signing JSON", id)
	}
	if p.Critical.Type != payload.CosignSignatureType {
		return "", fmt.Sprintf("not a cosign container image signature: its payload type is %q", p.Critical.Type)
	}
	switch got := p.Critical.Image.DockerManifestDigest; got {
	case candidate:
		return id, ""
	case "":
		return "", "malformed signature payload: it names no image digest"
	default:
		return "", fmt.Sprintf("signature is over %s, not the candidate %s", got, candidate)
	}
}
