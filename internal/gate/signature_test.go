package gate

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
	"github.com/sigstore/sigstore/pkg/signature/dsse"
	"github.com/sigstore/sigstore/pkg/signature/options"

	"github.com/berth-dev/berth/internal/oci"
)

var (
	candidate = digest.FromString("the candidate manifest").String()
	other     = digest.FromString("another manifest").String()
)

// testKey is a key pair: its sigstore signer and the gate's view of its
// public key.
type testKey struct {
	sv      signature.SignerVerifier
	trusted TrustedKey
}

func newKey(t testing.TB, priv crypto.Signer, opts ...signature.LoadOption) testKey {
	t.Helper()
	k, err := keyOf(priv, opts...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func keyOf(priv crypto.Signer, opts ...signature.LoadOption) (testKey, error) {
	pemBytes, err := cryptoutils.MarshalPublicKeyToPEM(priv.Public())
	if err != nil {
		return testKey{}, err
	}
	tk, err := ParseKey(string(pemBytes))
	if err != nil {
		return testKey{}, err
	}
	sv, err := signature.LoadSignerVerifierWithOpts(priv, opts...)
	return testKey{sv: sv, trusted: tk}, err
}

// newP256 is what `cosign generate-key-pair` makes, signed the way cosign
// signs with it.
func newP256(t testing.TB) testKey {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := signature.LoadECDSASignerVerifier(priv, crypto.SHA256)
	if err != nil {
		t.Fatal(err)
	}
	k := newKey(t, priv)
	k.sv = sv
	return k
}

var rsaKeys = sync.OnceValue(func() map[int]*rsa.PrivateKey {
	out := map[int]*rsa.PrivateKey{}
	for _, bits := range []int{1024, 2048} {
		k, err := rsa.GenerateKey(rand.Reader, bits)
		if err != nil {
			panic(err)
		}
		out[bits] = k
	}
	return out
})

func (k testKey) sign(t testing.TB, payload []byte) string {
	t.Helper()
	sig, err := k.sv.SignMessage(bytes.NewReader(payload))
	if err != nil {
		t.Fatal(err)
	}
	return base64.StdEncoding.EncodeToString(sig)
}

// envelope signs an in-toto statement as cosign attest does: a DSSE
// envelope.
func (k testKey) envelope(t testing.TB, stmt []byte) []byte {
	t.Helper()
	env, err := dsse.WrapSigner(k.sv, oci.MediaTypeInToto).SignMessage(bytes.NewReader(stmt))
	if err != nil {
		t.Fatal(err)
	}
	return env
}

// simpleSigning is the payload cosign signs, byte for byte.
func simpleSigning(dgst string) []byte {
	return fmt.Appendf(nil, `{"critical":{"identity":{"docker-reference":"registry.example/team/app"},"image":{"docker-manifest-digest":%q},"type":"cosign container image signature"},"optional":null}`, dgst)
}

func statementFor(predicateType, dgst string) []byte {
	_, hexPart, _ := strings.Cut(dgst, ":")
	return fmt.Appendf(nil, `{"_type":"https://in-toto.io/Statement/v1","subject":[{"digest":{"sha256":%q}}],"predicateType":%q,"predicate":{}}`, hexPart, predicateType)
}

func bundleOf(env []byte, keyless bool) []byte {
	vm := `{"publicKey":{"hint":"aGludA=="},"tlogEntries":[]}`
	if keyless {
		vm = `{"certificate":{"rawBytes":"MIIB"},"tlogEntries":[]}`
	}
	return fmt.Appendf(nil, `{"mediaType":%q,"verificationMaterial":%s,"dsseEnvelope":%s}`, oci.MediaTypeSigstoreBundle, vm, env)
}

// repo is a repository's blobs.
type repo struct {
	blobs map[string][]byte
	reads int
}

func newRepo() *repo { return &repo{blobs: map[string][]byte{}} }

func (r *repo) read(_ context.Context, d string) ([]byte, error) {
	r.reads++
	b, ok := r.blobs[d]
	if !ok {
		return nil, errors.New("blob unknown")
	}
	return b, nil
}

func (r *repo) put(mediaType string, b []byte, annotations map[string]string) oci.Descriptor {
	d := digest.FromBytes(b)
	r.blobs[d.String()] = b
	return oci.Descriptor{MediaType: mediaType, Digest: d, Size: int64(len(b)), Annotations: annotations}
}

// sigLayer stores a simplesigning payload and returns its layer with the
// signature annotation.
func (r *repo) sigLayer(payload []byte, b64sig string) oci.Descriptor {
	return r.put(oci.MediaTypeCosignSimpleSigning, payload, map[string]string{annotationSignature: b64sig})
}

// tagManifest is the manifest cosign pushes to sha256-<hex>.sig.
func (r *repo) tagManifest(t testing.TB, layers ...oci.Descriptor) SignatureManifest {
	cfg := r.put(oci.MediaTypeImageConfig, []byte(`{"architecture":"","created":"0001-01-01T00:00:00Z","history":[{"created":"0001-01-01T00:00:00Z"}],"os":"","rootfs":{"type":"layers","diff_ids":[]},"config":{}}`), nil)
	return r.manifest(t, "cosign", oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest, Config: &cfg, Layers: layers})
}

// referrer is the manifest `cosign sign --registry-referrers-mode=oci-1-1`
// pushes (artifactType also as the config media type), or a sigstore
// bundle referrer when the layer is a bundle.
func (r *repo) referrer(t testing.TB, artifactType string, annotations map[string]string, layers ...oci.Descriptor) SignatureManifest {
	cfg := r.put(artifactType, []byte(`{}`), nil)
	subject := &oci.Descriptor{MediaType: oci.MediaTypeImageManifest, Digest: digest.Digest(candidate), Size: 1234}
	return r.manifest(t, "referrer", oci.Manifest{SchemaVersion: 2, MediaType: oci.MediaTypeImageManifest, ArtifactType: artifactType,
		Config: &cfg, Layers: layers, Subject: subject, Annotations: annotations})
}

func (r *repo) manifest(t testing.TB, kind string, m oci.Manifest) SignatureManifest {
	t.Helper()
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return SignatureManifest{Kind: kind, Digest: digest.FromBytes(b).String(), Body: b}
}

type wantSig struct {
	key   *testKey // verified by this key; nil: not verified
	error string   // part of Error when not verified
}

func checkSigs(t *testing.T, got []Signature, sms []SignatureManifest, want ...wantSig) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("got %d signatures, want %d: %+v", len(got), len(want), got)
	}
	for i, w := range want {
		g := got[i]
		if w.key != nil {
			if !g.Verified || g.KeyID != w.key.trusted.ID || g.Error != "" {
				t.Errorf("signature %d: got %+v, want verified by %s", i, g, w.key.trusted.ID)
			}
		} else if g.Verified || g.KeyID != "" || !strings.Contains(g.Error, w.error) {
			t.Errorf("signature %d: got %+v, want unverified with %q", i, g, w.error)
		}
		if g.Identity != "" {
			t.Errorf("signature %d: identity %q from a key-based signature", i, g.Identity)
		}
	}
	// Each signature names the manifest that carries it.
	kinds := map[string]string{}
	for _, sm := range sms {
		kinds[sm.Digest] = sm.Kind
	}
	for i, g := range got {
		if kind, ok := kinds[g.Digest]; !ok || kind != g.Kind {
			t.Errorf("signature %d: manifest %s kind %q not among those given", i, g.Digest, g.Kind)
		}
	}
}

func TestVerifySignatures(t *testing.T) {
	k, k2 := newP256(t), newP256(t)
	tests := []struct {
		name  string
		keys  []TrustedKey
		build func(t *testing.T, r *repo) []SignatureManifest
		want  []wantSig
	}{
		{"tag layout verifies", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			p := simpleSigning(candidate)
			return []SignatureManifest{r.tagManifest(t, r.sigLayer(p, k.sign(t, p)))}
		}, []wantSig{{key: &k}}},
		{"referrer layout verifies", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			p := simpleSigning(candidate)
			return []SignatureManifest{r.referrer(t, oci.MediaTypeCosignSigArtifact, nil, r.sigLayer(p, k.sign(t, p)))}
		}, []wantSig{{key: &k}}},
		{"another key", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			p := simpleSigning(candidate)
			return []SignatureManifest{r.tagManifest(t, r.sigLayer(p, k2.sign(t, p)))}
		}, []wantSig{{error: "signed by a key the gate does not trust"}}},
		{"second trusted key verifies", []TrustedKey{k2.trusted, k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			p := simpleSigning(candidate)
			return []SignatureManifest{r.referrer(t, oci.MediaTypeCosignSigArtifact, nil, r.sigLayer(p, k.sign(t, p)))}
		}, []wantSig{{key: &k}}},
		{"no trusted key", nil, func(t *testing.T, r *repo) []SignatureManifest {
			p := simpleSigning(candidate)
			return []SignatureManifest{r.tagManifest(t, r.sigLayer(p, k.sign(t, p)))}
		}, []wantSig{{error: "the gate trusts no key"}}},
		{"signed over another digest", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			p := simpleSigning(other)
			return []SignatureManifest{r.tagManifest(t, r.sigLayer(p, k.sign(t, p)))}
		}, []wantSig{{error: "signature is over " + other + ", not the candidate"}}},
		{"payload changed after signing", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			sig := k.sign(t, simpleSigning(other))
			return []SignatureManifest{r.tagManifest(t, r.sigLayer(simpleSigning(candidate), sig))}
		}, []wantSig{{error: "does not trust (or changed after signing)"}}},
		{"signature not base64", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			return []SignatureManifest{r.tagManifest(t, r.sigLayer(simpleSigning(candidate), "not base64!"))}
		}, []wantSig{{error: "annotation is not base64"}}},
		{"no signature annotation", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			return []SignatureManifest{r.tagManifest(t, r.put(oci.MediaTypeCosignSimpleSigning, simpleSigning(candidate), nil))}
		}, []wantSig{{error: "has no dev.cosignproject.cosign/signature annotation"}}},
		{"signature of garbage bytes", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			p := simpleSigning(candidate)
			return []SignatureManifest{r.tagManifest(t, r.sigLayer(p, base64.StdEncoding.EncodeToString([]byte("garbage"))))}
		}, []wantSig{{error: "does not trust"}}},
		{"signed payload not JSON", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			p := []byte("hello")
			return []SignatureManifest{r.tagManifest(t, r.sigLayer(p, k.sign(t, p)))}
		}, []wantSig{{error: "malformed signature payload"}}},
		{"signed payload of another type", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			p := bytes.Replace(simpleSigning(candidate), []byte("cosign container image signature"), []byte("atomic container signature"), 1)
			return []SignatureManifest{r.tagManifest(t, r.sigLayer(p, k.sign(t, p)))}
		}, []wantSig{{error: `payload type is "atomic container signature"`}}},
		{"signed payload without digest", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			p := simpleSigning("")
			return []SignatureManifest{r.tagManifest(t, r.sigLayer(p, k.sign(t, p)))}
		}, []wantSig{{error: "names no image digest"}}},
		{"keyless signature", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			p := simpleSigning(candidate)
			l := r.sigLayer(p, k2.sign(t, p))
			l.Annotations[annotationCertificate] = "-----BEGIN CERTIFICATE-----"
			return []SignatureManifest{r.tagManifest(t, l)}
		}, []wantSig{{error: "keyless signature"}}},
		{"several layers and manifests, in order", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			p, q := simpleSigning(candidate), simpleSigning(other)
			return []SignatureManifest{
				r.tagManifest(t, r.sigLayer(p, k2.sign(t, p)), r.sigLayer(p, k.sign(t, p)), r.sigLayer(q, k.sign(t, q))),
				r.referrer(t, oci.MediaTypeCosignSigArtifact, nil, r.sigLayer(p, k.sign(t, p))),
			}
		}, []wantSig{{error: "does not trust"}, {key: &k}, {error: "not the candidate"}, {key: &k}}},
		{"malformed manifest", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			return []SignatureManifest{{Kind: "cosign", Digest: other, Body: []byte(`{"layers":`)}}
		}, []wantSig{{error: "malformed signature manifest"}}},
		{"an index is not a signature manifest", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			return []SignatureManifest{{Kind: "cosign", Digest: other, Body: []byte(`{"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[]}`)}}
		}, []wantSig{{error: "an image manifest was expected"}}},
		{"no signature layer", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			return []SignatureManifest{r.tagManifest(t, r.put(oci.MediaTypeLayerGzip, []byte("tar"), nil))}
		}, []wantSig{{error: "holds no cosign signature"}}},
		{"payload missing from the repository", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			p := simpleSigning(candidate)
			l := r.sigLayer(p, k.sign(t, p))
			delete(r.blobs, l.Digest.String())
			return []SignatureManifest{r.tagManifest(t, l)}
		}, []wantSig{{error: "cannot read the signature payload"}}},
		{"payload not matching its descriptor", []TrustedKey{k.trusted}, func(t *testing.T, r *repo) []SignatureManifest {
			p := simpleSigning(candidate)
			l := r.sigLayer(p, k.sign(t, p))
			r.blobs[l.Digest.String()] = simpleSigning(other)
			return []SignatureManifest{r.tagManifest(t, l)}
		}, []wantSig{{error: "does not match its descriptor"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := newRepo()
			sms := tt.build(t, r)
			got := VerifySignatures(context.Background(), candidate, tt.keys, sms, r.read)
			checkSigs(t, got, sms, tt.want...)
		})
	}
}

func TestVerifySignaturesRefusesHugeLayerUnread(t *testing.T) {
	k := newP256(t)
	r := newRepo()
	for _, size := range []int64{MaxPayload + 1, 1 << 62, -1} {
		l := oci.Descriptor{MediaType: oci.MediaTypeCosignSimpleSigning, Digest: digest.FromString("x"), Size: size,
			Annotations: map[string]string{annotationSignature: k.sign(t, []byte("x"))}}
		sms := []SignatureManifest{r.tagManifest(t, l)}
		got := VerifySignatures(context.Background(), candidate, []TrustedKey{k.trusted}, sms, r.read)
		checkSigs(t, got, sms, wantSig{error: "signature"})
	}
	if r.reads != 0 {
		t.Errorf("%d blob reads of layers over the limit", r.reads)
	}
	// A reader that returns more than the cap is refused too.
	l := r.sigLayer([]byte("x"), k.sign(t, []byte("x")))
	sms := []SignatureManifest{r.tagManifest(t, l)}
	big := func(context.Context, string) ([]byte, error) { return make([]byte, MaxPayload+1), nil }
	checkSigs(t, VerifySignatures(context.Background(), candidate, []TrustedKey{k.trusted}, sms, big), sms, wantSig{error: "over the"})
	checkSigs(t, VerifySignatures(context.Background(), candidate, []TrustedKey{k.trusted}, sms, nil), sms, wantSig{error: "no blob reader"})
}

// TestVerifySignaturesKeyTypes signs the way cosign does with each kind of
// key it imports (sigstore's default scheme for the key) and the way older
// cosign did.
func TestVerifySignaturesKeyTypes(t *testing.T) {
	ec := func(c elliptic.Curve) crypto.Signer {
		k, err := ecdsa.GenerateKey(c, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	_, edPriv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		priv crypto.Signer
		opts []signature.LoadOption
	}{
		{"P-384 SHA-384", ec(elliptic.P384()), []signature.LoadOption{options.WithHash(crypto.SHA384)}},
		{"P-384 SHA-256", ec(elliptic.P384()), []signature.LoadOption{options.WithHash(crypto.SHA256)}},
		{"P-521 SHA-512", ec(elliptic.P521()), []signature.LoadOption{options.WithHash(crypto.SHA512)}},
		{"Ed25519ph", edPriv, []signature.LoadOption{options.WithED25519ph()}},
		{"Ed25519", edPriv, nil},
		{"RSA-2048 PKCS#1 v1.5", rsaKeys()[2048], []signature.LoadOption{options.WithHash(crypto.SHA256)}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k := newKey(t, tt.priv, tt.opts...)
			r := newRepo()
			p := simpleSigning(candidate)
			sms := []SignatureManifest{r.tagManifest(t, r.sigLayer(p, k.sign(t, p)))}
			checkSigs(t, VerifySignatures(context.Background(), candidate, []TrustedKey{k.trusted}, sms, r.read), sms, wantSig{key: &k})
		})
	}
}

func TestVerifySignaturesBundles(t *testing.T) {
	k, k2 := newP256(t), newP256(t)
	bundleRef := func(t *testing.T, r *repo, predicate string, bundle []byte) SignatureManifest {
		return r.referrer(t, oci.MediaTypeSigstoreBundle,
			map[string]string{"dev.sigstore.bundle.content": "dsse-envelope", annotationBundlePredicateType: predicate},
			r.put(oci.MediaTypeSigstoreBundle, bundle, nil))
	}
	r := newRepo()
	signed := bundleRef(t, r, predicateCosignSign, bundleOf(k.envelope(t, statementFor(predicateCosignSign, candidate)), false))
	untrusted := bundleRef(t, r, predicateCosignSign, bundleOf(k2.envelope(t, statementFor(predicateCosignSign, candidate)), false))
	keyless := bundleRef(t, r, predicateCosignSign, bundleOf(k2.envelope(t, statementFor(predicateCosignSign, candidate)), true))
	elsewhere := bundleRef(t, r, predicateCosignSign, bundleOf(k.envelope(t, statementFor(predicateCosignSign, other)), false))
	// The annotation lies: the signed statement is an attestation.
	lying := bundleRef(t, r, predicateCosignSign, bundleOf(k.envelope(t, statementFor("https://slsa.dev/provenance/v1", candidate)), false))
	noEnvelope := bundleRef(t, r, predicateCosignSign, []byte(`{"mediaType":"application/vnd.dev.sigstore.bundle.v0.3+json","messageSignature":{}}`))
	attestation := bundleRef(t, r, "https://slsa.dev/provenance/v1", bundleOf(k.envelope(t, statementFor("https://slsa.dev/provenance/v1", candidate)), false))

	sms := []SignatureManifest{signed, untrusted, keyless, elsewhere, lying, noEnvelope, attestation}
	got := VerifySignatures(context.Background(), candidate, []TrustedKey{k.trusted}, sms, r.read)
	checkSigs(t, got, sms, wantSig{key: &k}, wantSig{error: "does not trust"}, wantSig{error: "keyless"},
		wantSig{error: "over " + other + ", not the candidate"}, wantSig{error: "not a signature: an attestation"},
		wantSig{error: "no DSSE envelope"}) // the attestation bundle is no signature: left out

	atts := VerifyAttestations(context.Background(), candidate, []TrustedKey{k.trusted}, sms, r.read)
	want := []Attestation{{PredicateType: "https://slsa.dev/provenance/v1", Digest: attestation.Digest, Verified: true}}
	if fmt.Sprint(atts) != fmt.Sprint(want) {
		t.Errorf("attestations: got %+v, want %+v", atts, want)
	}
}

func TestVerifyAttestations(t *testing.T) {
	k, k2 := newP256(t), newP256(t)
	const slsa = "https://slsa.dev/provenance/v0.2"
	r := newRepo()
	// What cosign attest pushes to sha256-<hex>.att: DSSE layers with an
	// empty signature annotation and the predicate type.
	att := func(env []byte, claimed string) oci.Descriptor {
		return r.put(oci.MediaTypeDSSE, env, map[string]string{annotationSignature: "", annotationPredicateType: claimed})
	}
	sm := r.tagManifest(t,
		att(k.envelope(t, statementFor(slsa, candidate)), slsa),
		att(k2.envelope(t, statementFor(slsa, candidate)), slsa),
		att(k.envelope(t, statementFor(slsa, other)), slsa),
		att(k.envelope(t, statementFor("https://spdx.dev/Document", candidate)), "claimed"),
		att([]byte(`{"payloadType":"text/plain","payload":"","signatures":[]}`), "bad"),
		r.sigLayer(simpleSigning(candidate), k.sign(t, simpleSigning(candidate))), // a signature, not an attestation
	)
	got := VerifyAttestations(context.Background(), candidate, []TrustedKey{k.trusted}, []SignatureManifest{sm, {Body: []byte("{")}}, r.read)
	want := []Attestation{
		{slsa, sm.Digest, true}, {slsa, sm.Digest, false}, {slsa, sm.Digest, false},
		{"https://spdx.dev/Document", sm.Digest, true}, {"bad", sm.Digest, false},
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("got %+v\nwant %+v", got, want)
	}
	for _, a := range VerifyAttestations(context.Background(), candidate, nil, []SignatureManifest{sm}, r.read) {
		if a.Verified {
			t.Errorf("verified with no trusted key: %+v", a)
		}
	}
}

func TestParseKey(t *testing.T) {
	p256, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	p224, err := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	edPub, _, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	pkix := func(pub crypto.PublicKey) string {
		b, err := cryptoutils.MarshalPublicKeyToPEM(pub)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	block := func(typ string, b []byte) string { return string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: b})) }
	id := func(pub crypto.PublicKey) string {
		der, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256(der)
		return "sha256:" + hex.EncodeToString(sum[:])
	}
	pkcs8, err := x509.MarshalPKCS8PrivateKey(p256)
	if err != nil {
		t.Fatal(err)
	}
	rsa2048 := &rsaKeys()[2048].PublicKey
	tests := []struct {
		name, pem string
		id        string // want this id; "" wants an error
		err       string
	}{
		{"ECDSA P-256", pkix(&p256.PublicKey), id(&p256.PublicKey), ""},
		{"ECDSA P-256 among blank lines", "\n\n" + pkix(&p256.PublicKey) + "\n\n", id(&p256.PublicKey), ""},
		{"Ed25519", pkix(edPub), id(edPub), ""},
		{"RSA 2048 PKIX", pkix(rsa2048), id(rsa2048), ""},
		{"RSA 2048 PKCS#1", block("RSA PUBLIC KEY", x509.MarshalPKCS1PublicKey(rsa2048)), id(rsa2048), ""},
		{"RSA 1024", pkix(&rsaKeys()[1024].PublicKey), "", "RSA key of 1024 bits is not accepted"},
		{"ECDSA P-224", pkix(&p224.PublicKey), "", "curve P-224 is not accepted"},
		{"garbage", "hello", "", "not a PEM public key"},
		{"empty", "", "", "not a PEM public key"},
		{"private key", block("PRIVATE KEY", pkcs8), "", "private key"},
		{"cosign private key", block("ENCRYPTED SIGSTORE PRIVATE KEY", []byte("x")), "", "give the gate the public key only"},
		{"certificate", block("CERTIFICATE", []byte("x")), "", "certificate, not a public key"},
		{"two keys", pkix(&p256.PublicKey) + pkix(edPub), "", "more than one PEM block"},
		{"trailing text", pkix(&p256.PublicKey) + "trailing", "", "unexpected text"},
		{"bad key bytes", block("PUBLIC KEY", []byte("x")), "", "not a valid public key"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			k, err := ParseKey(tt.pem)
			if tt.id == "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("got %+v, %v; want error %q", k, err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k.ID != tt.id {
				t.Errorf("id %s, want %s", k.ID, tt.id)
			}
			again, err := ParseKey(k.PEM)
			if err != nil || again != k {
				t.Errorf("the returned PEM does not parse back to itself: %+v, %v", again, err)
			}
		})
	}
}

func TestSignatureTag(t *testing.T) {
	hexPart := strings.TrimPrefix(candidate, "sha256:")
	if got := SignatureTag(candidate); got != "sha256-"+hexPart+".sig" {
		t.Errorf("SignatureTag = %q", got)
	}
	if got := AttestationTag(candidate); got != "sha256-"+hexPart+".att" {
		t.Errorf("AttestationTag = %q", got)
	}
	for _, bad := range []string{"", "latest", "sha256:abc", "md5:" + hexPart} {
		if got := SignatureTag(bad); got != "" {
			t.Errorf("SignatureTag(%q) = %q, want empty", bad, got)
		}
	}
	for at, want := range map[string]bool{
		oci.MediaTypeCosignSigArtifact: true, oci.MediaTypeSigstoreBundle: true,
		oci.MediaTypeCosignAttArtifact: false, oci.MediaTypeInToto: false, "": false, oci.MediaTypeImageConfig: false,
	} {
		if IsSignatureArtifact(at) != want {
			t.Errorf("IsSignatureArtifact(%q) = %v", at, !want)
		}
	}
	if !IsAttestationArtifact(oci.MediaTypeInToto) || IsAttestationArtifact(oci.MediaTypeCosignSigArtifact) {
		t.Error("IsAttestationArtifact")
	}
}

var fuzzKey = sync.OnceValue(func() testKey {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	k, err := keyOf(priv)
	if err != nil {
		panic(err)
	}
	return k
})

// FuzzVerifySignatures feeds untrusted manifests and payloads. mode%3: 0
// reads body as the manifest; 1 wraps payload in a layer of mediaType with
// the signature b64sig; 2 does the same with payload signed by the trusted
// key (a DSSE envelope, or a bundle, for those media types), so that the
// payload parsing after the signature check is fuzzed too.
func FuzzVerifySignatures(f *testing.F) {
	k := fuzzKey()
	r := newRepo()
	p := simpleSigning(candidate)
	seeds := []SignatureManifest{
		r.tagManifest(f, r.sigLayer(p, k.sign(f, p))),
		r.referrer(f, oci.MediaTypeCosignSigArtifact, nil, r.sigLayer(p, "bm90IGEgc2ln")),
		r.tagManifest(f, oci.Descriptor{MediaType: oci.MediaTypeCosignSimpleSigning, Digest: digest.FromBytes(p), Size: 1 << 40}),
		r.tagManifest(f, r.put(oci.MediaTypeDSSE, k.envelope(f, statementFor("x", candidate)), map[string]string{annotationPredicateType: "x"})),
		r.referrer(f, oci.MediaTypeSigstoreBundle, nil, r.put(oci.MediaTypeSigstoreBundle, bundleOf(k.envelope(f, statementFor(predicateCosignSign, candidate)), false), nil)),
	}
	for _, sm := range seeds {
		f.Add(sm.Body, p, "", "", uint8(0))
	}
	f.Add([]byte(`{"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"sha256:zz","size":-5}]}`), []byte{}, "", "", uint8(0))
	f.Add([]byte(`null`), []byte("{}"), "", "", uint8(0))
	f.Add([]byte{}, p, oci.MediaTypeCosignSimpleSigning, "!!", uint8(1))
	f.Add([]byte{}, p, oci.MediaTypeCosignSimpleSigning, "", uint8(2))
	f.Add([]byte{}, simpleSigning(other), oci.MediaTypeCosignSimpleSigning, "", uint8(2))
	f.Add([]byte{}, statementFor(predicateCosignSign, candidate), oci.MediaTypeSigstoreBundle, "", uint8(2))
	f.Add([]byte{}, statementFor("x", candidate), oci.MediaTypeDSSE, "", uint8(2))
	f.Add([]byte{}, []byte(`{"dsseEnvelope":{"payloadType":"application/vnd.in-toto+json","payload":"e30=","signatures":[{"sig":"AA=="}]}}`), oci.MediaTypeSigstoreBundle, "", uint8(1))

	f.Fuzz(func(t *testing.T, body, payload []byte, mediaType, b64sig string, mode uint8) {
		r := newRepo()
		read := func(_ context.Context, d string) ([]byte, error) {
			if b, ok := r.blobs[d]; ok {
				return b, nil
			}
			return payload, nil
		}
		if mode%3 != 0 {
			ann := map[string]string{annotationSignature: b64sig}
			if mode%3 == 2 {
				switch mediaType {
				case oci.MediaTypeDSSE:
					payload = k.envelope(t, payload)
				case oci.MediaTypeSigstoreBundle:
					payload = bundleOf(k.envelope(t, payload), false)
				default:
					ann[annotationSignature] = k.sign(t, payload)
				}
			}
			body = r.referrer(t, mediaType, nil, r.put(mediaType, payload, ann)).Body
		}
		sms := []SignatureManifest{{Kind: "cosign", Digest: other, Body: body}}
		for _, s := range VerifySignatures(context.Background(), candidate, []TrustedKey{k.trusted}, sms, read) {
			if s.Verified != (s.Error == "") || s.Verified != (s.KeyID == k.trusted.ID) || s.Digest != other {
				t.Fatalf("inconsistent %+v", s)
			}
		}
		VerifyAttestations(context.Background(), candidate, []TrustedKey{k.trusted}, sms, read)
	})
}

func FuzzParseKey(f *testing.F) {
	f.Add(fuzzKey().trusted.PEM)
	f.Add("-----BEGIN RSA PUBLIC KEY-----\nMAA=\n-----END RSA PUBLIC KEY-----\n")
	f.Add("-----BEGIN PUBLIC KEY-----\n\n-----END PUBLIC KEY-----\n")
	f.Fuzz(func(t *testing.T, s string) {
		k, err := ParseKey(s)
		if err != nil {
			return
		}
		again, err := ParseKey(k.PEM)
		if err != nil || again != k {
			t.Fatalf("%+v does not parse back: %+v, %v", k, again, err)
		}
	})
}

// TestVerifySignaturesBoundsTheLayersRead: a signature manifest listing
// thousands of signature layers (one payload under as many signatures)
// costs at most MaxSignatureLayers reads, then one unverified entry says
// the rest were not read; attestations are bounded the same way.
func TestVerifySignaturesBoundsTheLayersRead(t *testing.T) {
	k := newP256(t)
	r := newRepo()
	l := r.sigLayer([]byte("x"), k.sign(t, []byte("x")))
	layers := make([]oci.Descriptor, 5000)
	for i := range layers {
		layers[i] = r.sigLayer([]byte("x"), base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "signature %d", i)))
	}
	sms := []SignatureManifest{r.tagManifest(t, layers...), r.tagManifest(t, l)}
	got := VerifySignatures(context.Background(), candidate, []TrustedKey{k.trusted}, sms, r.read)
	if len(got) != MaxSignatureLayers+1 || !strings.Contains(got[len(got)-1].Error, "not read") {
		t.Fatalf("%d signatures, the last %+v", len(got), got[len(got)-1])
	}
	if r.reads > MaxSignatureLayers {
		t.Fatalf("%d layer reads for one evaluation, want at most %d", r.reads, MaxSignatureLayers)
	}
	atts := make([]oci.Descriptor, 5000)
	for i := range atts {
		atts[i] = oci.Descriptor{MediaType: oci.MediaTypeDSSE, Digest: digest.FromString(fmt.Sprint("envelope ", i)), Size: 10}
	}
	if got := VerifyAttestations(context.Background(), candidate, []TrustedKey{k.trusted}, []SignatureManifest{r.tagManifest(t, atts...)}, r.read); len(got) > MaxSignatureLayers {
		t.Fatalf("%d attestations read, want at most %d", len(got), MaxSignatureLayers)
	}
}
