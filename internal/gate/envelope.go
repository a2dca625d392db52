package gate

// The bounded checking of signatures (checker) and the DSSE envelopes of
// sigstore bundles and attestations.

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/berth-dev/berth/internal/oci"
)

// MaxEnvelopeSignatures bounds the signatures of one DSSE envelope: cosign
// writes one. An envelope holding more is refused as malformed, none of
// its signatures checked (each would be tried against every trusted key).
const MaxEnvelopeSignatures = 4

// MaxSignatureChecks and SignaturesFullyChecked bound the signature
// checks (one signature against one scheme of one trusted key) of one
// verification (VerifySignatures, VerifyAttestations): a page view runs
// one, and whoever may push can list many signatures. A verification
// makes at most the larger of MaxSignatureChecks and enough checks to try
// SignaturesFullyChecked foreign signatures, and then a trusted one,
// against every trusted key and scheme (so that a few foreign signatures
// before a trusted one do not leave it unverified, however many keys the
// gate trusts). The signatures after
// them are unverified with errChecks, their payloads unread. Keyless
// signatures (with a certificate) take no checks: no trusted key can
// verify them.
const (
	MaxSignatureChecks     = 128
	SignaturesFullyChecked = 8
)

// Reasons a signature was not verified that the bounds give.
var (
	errChecks  = "not verified: the signature checks of one verification were spent on the signatures before it"
	errStopped = "not verified: the verification was stopped"
)

// checker checks signatures against the trusted keys, at most
// MaxSignatureChecks times, and remembers each layer's result.
type checker struct {
	keys   []keyVerifiers
	keyErr string // why nothing can verify ("" when a key can)
	left   int    // checks left
	used   int    // checks made
	done   map[string][2]string
}

func newChecker(keys []TrustedKey) *checker {
	vs, keyErr := loadKeys(keys)
	perSignature := 0
	for _, k := range vs {
		perSignature += len(k.vs)
	}
	return &checker{keys: vs, keyErr: keyErr, left: max(MaxSignatureChecks, (SignaturesFullyChecked+1)*perSignature), done: map[string][2]string{}}
}

// once returns the result of verify for a layer (by layerKey), calling it
// the first time only.
func (c *checker) once(key string, verify func() (string, string)) (string, string) {
	if r, ok := c.done[key]; ok {
		return r[0], r[1]
	}
	a, b := verify()
	c.done[key] = [2]string{a, b}
	return a, b
}

// layerKey names what a signature layer's result depends on: its blob,
// and for a simple-signing layer the signature (and certificate) in its
// annotations, since one payload may be signed by several keys.
func layerKey(l oci.Descriptor) string {
	if l.MediaType != oci.MediaTypeCosignSimpleSigning {
		return l.MediaType + " " + l.Digest.String()
	}
	return l.MediaType + " " + l.Digest.String() + " " + l.Annotations[annotationSignature] + " " + l.Annotations[annotationCertificate]
}

// signedBy returns the id of the first trusted key under which sig is a
// valid signature of message, or ""; spent reports that the checks ran
// out before every key was tried.
func (c *checker) signedBy(sig, message []byte) (id string, spent bool) {
	for _, k := range c.keys {
		for _, v := range k.vs {
			if c.left == 0 {
				return "", true
			}
			c.left--
			c.used++
			if v.VerifySignature(bytes.NewReader(sig), bytes.NewReader(message)) == nil {
				return k.id, false
			}
		}
	}
	return "", false
}

// verifyBundleSignature verifies a sigstore bundle layer written by
// `cosign sign --new-bundle-format`: a DSSE envelope signed by a trusted
// key whose in-toto statement has cosign's signing predicate and names
// the candidate. Key-based only: transparency-log entries and
// certificates are not checked.
func verifyBundleSignature(ctx context.Context, candidate string, c *checker, layer oci.Descriptor, read BlobReader) (string, string) {
	b, why := readPayload(ctx, read, layer)
	if why != "" {
		return "", why
	}
	env, keyless, why := bundleEnvelope(b)
	if why != "" {
		return "", why
	}
	if keyless {
		return "", errKeyless // signed by the certificate's key: no trusted key verifies it
	}
	id, st, why := verifyEnvelope(c, env)
	switch {
	case why != "":
		return "", why
	case st.PredicateType != predicateCosignSign:
		return "", fmt.Sprintf("not a signature: an attestation of predicate type %q", st.PredicateType)
	case !st.names(candidate):
		return "", fmt.Sprintf("signature is over %s, not the candidate %s", st.subjects(), candidate)
	}
	return id, ""
}

// sigstoreBundle is the part of a sigstore bundle (v0.3, protobuf JSON)
// read here.
type sigstoreBundle struct {
	MediaType            string `json:"mediaType"`
	VerificationMaterial struct {
		Certificate          json.RawMessage `json:"certificate"`
		X509CertificateChain json.RawMessage `json:"x509CertificateChain"`
	} `json:"verificationMaterial"`
	DSSEEnvelope     json.RawMessage `json:"dsseEnvelope"`
	MessageSignature json.RawMessage `json:"messageSignature"`
}

// bundleEnvelope returns the DSSE envelope of a sigstore bundle (the
// protobuf JSON of an envelope is the DSSE JSON) and whether the bundle is
// keyless (carries a certificate).
func bundleEnvelope(b []byte) (env []byte, keyless bool, why string) {
	var bd sigstoreBundle
	if err := json.Unmarshal(b, &bd); err != nil {
		return nil, false, "malformed sigstore bundle: not JSON"
	}
	keyless = len(bd.VerificationMaterial.Certificate) > 0 || len(bd.VerificationMaterial.X509CertificateChain) > 0
	if len(bd.DSSEEnvelope) == 0 || string(bd.DSSEEnvelope) == "null" {
		return nil, keyless, "the sigstore bundle holds no DSSE envelope (message-signature bundles are not read)"
	}
	return bd.DSSEEnvelope, keyless, ""
}

// statement is the part of an in-toto statement read here.
type statement struct {
	Type          string `json:"_type"`
	PredicateType string `json:"predicateType"`
	Subject       []struct {
		Name   string            `json:"name"`
		Digest map[string]string `json:"digest"`
	} `json:"subject"`
}

// names reports whether the statement has the digest among its subjects.
func (st *statement) names(d string) bool {
	algo, enc, ok := strings.Cut(d, ":")
	if !ok || enc == "" {
		return false
	}
	for _, s := range st.Subject {
		if s.Digest[algo] == enc {
			return true
		}
	}
	return false
}

func (st *statement) subjects() string {
	var out []string
	for _, s := range st.Subject {
		for algo, enc := range s.Digest {
			if algo == "sha256" || algo == "sha512" {
				out = append(out, algo+":"+enc)
			}
		}
	}
	if len(out) == 0 {
		return "no image digest"
	}
	return strings.Join(out, ", ")
}

// dsseEnvelope is a DSSE envelope (secure-systems-lab's dsse.Envelope).
type dsseEnvelope struct {
	PayloadType string `json:"payloadType"`
	Payload     string `json:"payload"`
	Signatures  []struct {
		KeyID string `json:"keyid"`
		Sig   string `json:"sig"`
	} `json:"signatures"`
}

// verifyEnvelope verifies a DSSE envelope carrying an in-toto statement
// under the trusted keys and returns the verifying key's id and the
// statement, or why it does not verify. The envelope is parsed once; each
// of its signatures (MaxEnvelopeSignatures at most) is checked over its
// pre-authentication encoding against each key until one verifies. A
// signature's key id is a hint only and is not read: every trusted key is
// tried.
func verifyEnvelope(c *checker, env []byte) (string, *statement, string) {
	var e dsseEnvelope
	if err := json.Unmarshal(env, &e); err != nil {
		return "", nil, "malformed DSSE envelope: not JSON"
	}
	switch {
	case e.PayloadType != oci.MediaTypeInToto:
		return "", nil, fmt.Sprintf("malformed DSSE envelope: payload type %q is not in-toto", e.PayloadType)
	case len(e.Signatures) == 0:
		return "", nil, "the DSSE envelope holds no signature"
	case len(e.Signatures) > MaxEnvelopeSignatures:
		return "", nil, fmt.Sprintf("malformed DSSE envelope: %d signatures, at most %d are read (cosign writes one)", len(e.Signatures), MaxEnvelopeSignatures)
	}
	body, err := dsseBase64(e.Payload)
	if err != nil {
		return "", nil, "malformed DSSE envelope: the payload is not base64"
	}
	message := preAuthEncoding(e.PayloadType, body)
	spent := false
	for _, s := range e.Signatures {
		sig, err := dsseBase64(s.Sig)
		if err != nil {
			return "", nil, "malformed DSSE envelope: a signature is not base64"
		}
		id, out := c.signedBy(sig, message)
		if id != "" {
			var st statement
			if err := json.Unmarshal(body, &st); err != nil {
				return "", nil, fmt.Sprintf("malformed in-toto statement (signed by key %s)", id)
			}
			return id, &st, ""
		}
		if spent = out; spent {
			break
		}
	}
	if spent {
		return "", nil, errChecks
	}
	return "", nil, errUntrusted
}

// preAuthEncoding is DSSE's PAE: what a DSSE signature signs.
func preAuthEncoding(payloadType string, body []byte) []byte {
	return fmt.Appendf(nil, "DSSEv1 %d %s %d %s", len(payloadType), payloadType, len(body), body)
}

// dsseBase64 decodes a DSSE payload or signature: standard base64, or the
// URL-safe alphabet (as secure-systems-lab's dsse accepts).
func dsseBase64(s string) ([]byte, error) {
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		if b, err = base64.URLEncoding.DecodeString(s); err != nil {
			return nil, fmt.Errorf("not base64: %w", err)
		}
	}
	return b, nil
}
