package gate

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/oci"
)

// manyKeys returns n trusted keys (what a gate may list, MaxKeys at most).
func manyKeys(t *testing.T, n int) []TrustedKey {
	t.Helper()
	var out []TrustedKey
	for range n {
		out = append(out, newP256(t).trusted)
	}
	return out
}

// withSignatures returns the envelope with its one signature repeated n
// times.
func withSignatures(t *testing.T, env []byte, n int) []byte {
	t.Helper()
	var e map[string]any
	if err := json.Unmarshal(env, &e); err != nil {
		t.Fatal(err)
	}
	sigs := e["signatures"].([]any)
	for len(sigs) < n {
		sigs = append(sigs, sigs[0])
	}
	e["signatures"] = sigs
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestEnvelopeWithManySignaturesIsRefused: a DSSE envelope (in a sigstore
// bundle signature, or an attestation) holding more signatures than
// cosign writes is refused as malformed without a signature of it being
// checked. Before, each trusted key parsed the whole envelope again and
// checked every signature in it: 200 signatures and 32 keys made 6,400
// checks for one layer, and an anonymous page view runs them.
func TestEnvelopeWithManySignaturesIsRefused(t *testing.T) {
	signer := newP256(t) // not trusted: every check fails
	keys := manyKeys(t, MaxKeys)
	r := newRepo()
	env := withSignatures(t, signer.envelope(t, statementFor(predicateCosignSign, candidate)), 200)
	sm := r.referrer(t, oci.MediaTypeSigstoreBundle, map[string]string{annotationBundlePredicateType: predicateCosignSign},
		r.put(oci.MediaTypeSigstoreBundle, bundleOf(env, false), nil))
	c := newChecker(keys)
	got := verifySignatures(context.Background(), candidate, c, []SignatureManifest{sm}, r.read)
	want := fmt.Sprintf("at most %d are read", MaxEnvelopeSignatures)
	checkSigs(t, got, []SignatureManifest{sm}, wantSig{error: want})
	if c.used != 0 {
		t.Fatalf("%d signature checks for an envelope refused as malformed, want none", c.used)
	}

	att := r.tagManifest(t, r.put(oci.MediaTypeDSSE, withSignatures(t, signer.envelope(t, statementFor("https://slsa.dev/provenance/v1", candidate)), 200),
		map[string]string{annotationPredicateType: "https://slsa.dev/provenance/v1"}))
	c = newChecker(keys)
	if got := verifyAttestations(context.Background(), candidate, c, []SignatureManifest{att}, r.read); len(got) != 1 || got[0].Verified {
		t.Fatalf("attestations %+v", got)
	}
	if c.used != 0 {
		t.Fatalf("%d signature checks for an attestation envelope refused as malformed, want none", c.used)
	}

	// As many as cosign could write still verify, by the trusted one.
	k := newP256(t)
	env = withSignatures(t, k.envelope(t, statementFor(predicateCosignSign, candidate)), MaxEnvelopeSignatures)
	sm = r.referrer(t, oci.MediaTypeSigstoreBundle, map[string]string{annotationBundlePredicateType: predicateCosignSign},
		r.put(oci.MediaTypeSigstoreBundle, bundleOf(env, false), nil))
	checkSigs(t, VerifySignatures(context.Background(), candidate, append(keys[:3:3], k.trusted), []SignatureManifest{sm}, r.read),
		[]SignatureManifest{sm}, wantSig{key: &k})
}

// TestRepeatedSignatureLayersAreVerifiedOnce: a layer listed again (in
// the same manifest, or in another) is read and verified once: listed
// again in its manifest it adds nothing, in another manifest it is that
// manifest's signature with the same result. Before, each listing was
// read and checked against every key again.
func TestRepeatedSignatureLayersAreVerifiedOnce(t *testing.T) {
	k := newP256(t)
	r := newRepo()
	p := simpleSigning(candidate)
	l := r.sigLayer(p, k.sign(t, p))
	env := r.put(oci.MediaTypeSigstoreBundle, bundleOf(k.envelope(t, statementFor(predicateCosignSign, candidate)), false), nil)
	bundle := r.referrer(t, oci.MediaTypeSigstoreBundle, map[string]string{annotationBundlePredicateType: predicateCosignSign}, env, env, env)
	sms := []SignatureManifest{r.tagManifest(t, l, l, l, l), r.referrer(t, oci.MediaTypeCosignSigArtifact, nil, l, l), bundle}
	c := newChecker([]TrustedKey{k.trusted})
	got := verifySignatures(context.Background(), candidate, c, sms, r.read)
	checkSigs(t, got, sms, wantSig{key: &k}, wantSig{key: &k}, wantSig{key: &k})
	if r.reads != 2 || c.used != 2 {
		t.Fatalf("%d reads and %d signature checks for two distinct layers, want 2 and 2", r.reads, c.used)
	}
	// The same payload under another signature is another signature.
	other := newP256(t)
	sms = []SignatureManifest{r.tagManifest(t, l, r.sigLayer(p, other.sign(t, p)))}
	checkSigs(t, VerifySignatures(context.Background(), candidate, []TrustedKey{k.trusted}, sms, r.read), sms,
		wantSig{key: &k}, wantSig{error: "does not trust"})
}

// TestSignatureChecksAreBounded: one verification makes at most
// MaxSignatureChecks signature checks (a signature against one scheme of
// one trusted key); the signatures past them are unverified, saying why,
// and are not read. Before, 64 layers against 32 keys made 2,048 checks.
func TestSignatureChecksAreBounded(t *testing.T) {
	keys := manyKeys(t, MaxKeys)
	signer := newP256(t) // not trusted
	r := newRepo()
	var layers []oci.Descriptor
	for i := range MaxSignatureLayers {
		p := simpleSigning(candidate)
		p = append(p[:len(p)-1], fmt.Sprintf(`,"n":%d}`, i)...) // distinct payloads
		layers = append(layers, r.sigLayer(p, signer.sign(t, p)))
	}
	sms := []SignatureManifest{r.tagManifest(t, layers...)}
	c := newChecker(keys)
	budget := max(MaxSignatureChecks, (SignaturesFullyChecked+1)*MaxKeys) // one scheme per P-256 key
	if c.left != budget {
		t.Fatalf("a verification against %d keys may make %d checks, want %d", MaxKeys, c.left, budget)
	}
	got := verifySignatures(context.Background(), candidate, c, sms, r.read)
	if len(got) != MaxSignatureLayers {
		t.Fatalf("%d signatures, want %d", len(got), MaxSignatureLayers)
	}
	if c.used > budget {
		t.Fatalf("%d signature checks, want at most %d", c.used, budget)
	}
	checked := budget / MaxKeys
	for i, s := range got {
		want := "does not trust"
		if i >= checked {
			want = "signature checks of one verification were spent"
		}
		if s.Verified || !strings.Contains(s.Error, want) {
			t.Fatalf("signature %d: %+v, want unverified with %q", i, s, want)
		}
	}
	if r.reads > checked {
		t.Fatalf("%d payloads read, want at most %d (those past the bound are not read)", r.reads, checked)
	}
}

// TestVerificationStopsWithItsContext: a verification whose context is
// done reads and checks nothing more; what is left is unverified.
func TestVerificationStopsWithItsContext(t *testing.T) {
	k := newP256(t)
	r := newRepo()
	p := simpleSigning(candidate)
	var layers []oci.Descriptor
	for i := range 10 {
		layers = append(layers, r.sigLayer(p, base64.StdEncoding.EncodeToString(fmt.Appendf(nil, "sig %d", i))))
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	sms := []SignatureManifest{r.tagManifest(t, layers...)}
	got := VerifySignatures(ctx, candidate, []TrustedKey{k.trusted}, sms, r.read)
	if r.reads != 0 || len(got) != 1 || got[0].Verified || !strings.Contains(got[0].Error, "stopped") {
		t.Fatalf("%d reads, signatures %+v", r.reads, got)
	}
}

// TestTrustedSignatureAfterForeignOnes: a gate trusting MaxKeys keys
// still verifies its own signature after SignaturesFullyChecked foreign
// ones and any number of keyless ones (which take no checks): before,
// 128 checks ran out after 4 foreign signatures against 32 keys, and
// keyless signatures spent checks too.
func TestTrustedSignatureAfterForeignOnes(t *testing.T) {
	own, foreign := newP256(t), newP256(t)
	keys := append(manyKeys(t, MaxKeys-1), own.trusted)
	r := newRepo()
	var layers []oci.Descriptor
	for i := range SignaturesFullyChecked + 20 {
		p := simpleSigning(candidate)
		p = append(p[:len(p)-1], fmt.Sprintf(`,"n":%d}`, i)...) // distinct payloads
		l := r.sigLayer(p, foreign.sign(t, p))
		if i >= SignaturesFullyChecked {
			l.Annotations[annotationCertificate] = "-----BEGIN CERTIFICATE-----" // keyless
		}
		layers = append(layers, l)
	}
	p := simpleSigning(candidate)
	layers = append(layers, r.sigLayer(p, own.sign(t, p)))
	sms := []SignatureManifest{r.tagManifest(t, layers...)}
	got := VerifySignatures(context.Background(), candidate, keys, sms, r.read)
	if len(got) != len(layers) {
		t.Fatalf("%d signatures, want %d", len(got), len(layers))
	}
	for i, s := range got[:len(got)-1] {
		if s.Verified {
			t.Fatalf("foreign signature %d verified: %+v", i, s)
		}
	}
	if last := got[len(got)-1]; !last.Verified {
		t.Fatalf("the trusted signature after the foreign ones: %+v", last)
	}
}
