package server_test

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/opencontainers/go-digest"
	"github.com/sigstore/sigstore/pkg/cryptoutils"
	"github.com/sigstore/sigstore/pkg/signature"
)

// signImage pushes a cosign signature of d in the tag layout, made with key.
func (w *world) signImage(repo string, d digest.Digest, key *ecdsa.PrivateKey) {
	w.t.Helper()
	payload := []byte(fmt.Sprintf(`{"critical":{"identity":{"docker-reference":"registry.example/%s"},"image":{"docker-manifest-digest":"%s"},"type":"cosign container image signature"},"optional":null}`, repo, d))
	sv, err := signature.LoadECDSASignerVerifier(key, crypto.SHA256)
	if err != nil {
		w.t.Fatal(err)
	}
	sig, err := sv.SignMessage(bytes.NewReader(payload))
	if err != nil {
		w.t.Fatal(err)
	}
	cfg := []byte(`{"architecture":"","os":"","config":{}}`)
	c := w.creds["root"]
	for _, b := range [][]byte{cfg, payload} {
		if r := w.do("POST", "/v2/"+repo+"/blobs/uploads/?digest="+digest.FromBytes(b).String(), c[0], c[1], b); r.StatusCode != 201 {
			w.t.Fatalf("push blob: %d", r.StatusCode)
		}
	}
	m := fmt.Sprintf(`{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%d},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","digest":"%s","size":%d,"annotations":{"dev.cosignproject.cosign/signature":"%s"}}]}`,
		digest.FromBytes(cfg), len(cfg), digest.FromBytes(payload), len(payload), base64.StdEncoding.EncodeToString(sig))
	if r := w.do("PUT", "/v2/"+repo+"/manifests/sha256-"+d.Encoded()+".sig", c[0], c[1], []byte(m), "Content-Type", "application/vnd.oci.image.manifest.v1+json"); r.StatusCode != 201 {
		w.t.Fatalf("push signature: %d", r.StatusCode)
	}
}

// TestWebSignaturesAndAliases: the tags table and the manifest page say
// "signed (unverified)" while the repository's gate trusts no key, and
// "verified by key X" once it trusts the signing key (internal/gate's
// verifier); each tag lists the other tags on its manifest.
func TestWebSignaturesAndAliases(t *testing.T) {
	w := newWorld(t)
	const repo = "acme/public"
	d := w.digest["public"]
	if again, _ := w.pushTagged(repo, "stable", "layer of "+repo); again != d {
		t.Fatalf("the alias points at %s, not %s", again, d)
	}
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	w.signImage(repo, d, key)
	b := newBrowser(t, w.url)
	_, body := b.get("/repository/" + repo + "?sort=name")
	if !strings.Contains(body, "signed (unverified)") || strings.Contains(body, "verified by key") {
		t.Errorf("without a trusted key the tags table does not say signed (unverified)\n%s", body)
	}
	if !strings.Contains(body, `?filter=stable">stable</a>`) || !strings.Contains(body, `?filter=v1">v1</a>`) {
		t.Error("the aliases column does not list the other tag on the manifest")
	}
	pub, _ := cryptoutils.MarshalPublicKeyToPEM(&key.PublicKey)
	gate, _ := json.Marshal(map[string]any{"tags": []string{"release-*"}, "keys": []string{string(pub)}})
	if st, _, raw := w.call("PUT", "/api/v1/repository/"+repo+"/gate", "root", string(gate)); st != 200 {
		t.Fatalf("gate: %d %s", st, raw)
	}
	der, _ := x509.MarshalPKIXPublicKey(&key.PublicKey)
	sum := sha256.Sum256(der)
	want := "verified by key <code>sha256:" + hex.EncodeToString(sum[:])[:12] + "</code>"
	if _, body := b.get("/repository/" + repo); !strings.Contains(body, want) {
		t.Errorf("the tags table does not say %q", want)
	}
	_, body = b.get("/repository/" + repo + "/manifest/" + d.String())
	if !strings.Contains(body, `id="signature-status"`) || !strings.Contains(body, want) {
		t.Errorf("the manifest page does not say %q", want)
	}
	// A key the gate does not trust verifies nothing.
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	opub, _ := cryptoutils.MarshalPublicKeyToPEM(&other.PublicKey)
	gate, _ = json.Marshal(map[string]any{"tags": []string{"release-*"}, "keys": []string{string(opub)}})
	w.call("PUT", "/api/v1/repository/"+repo+"/gate", "root", string(gate))
	if _, body := b.get("/repository/" + repo); strings.Contains(body, "verified by key") || !strings.Contains(body, "signed (unverified)") {
		t.Error("a signature by an untrusted key shows as verified")
	}
}
