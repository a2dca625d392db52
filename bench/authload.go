package main

// Manifest GET with authentication on, the way real clients pull: a Bearer
// token fetched once, then sent with every request.
//
// Berth runs a second instance in its default auth mode (token): a user
// made with `berth admin user create`, the token from Berth's own
// /v2/auth endpoint with Basic credentials. Distribution runs a second
// instance with its token auth (auth.token: issuer, service, a root
// certificate bundle): the bench is the token issuer, signing an ES256 JWT
// with an x5c header that chains to that bundle, as a token server does.
// Both verify the token's signature and claims on every request.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

const benchUser, benchPassword = "bench", "bench-password-0123456789"

// startBerthAuth starts Berth with token auth and a user to pull as.
func startBerthAuth(bin, work string, extra []string) (*server, error) {
	dir := filepath.Join(work, "berth-auth")
	data := filepath.Join(dir, "berth", "data") // where startBerth puts it
	if err := os.MkdirAll(data, 0o755); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "admin", "user", "create", benchUser, "--superuser", "--password-stdin", "--data-dir", data)
	cmd.Stdin = strings.NewReader(benchPassword + "\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		return nil, fmt.Errorf("berth admin user create: %v: %s", err, out)
	}
	s, err := startBerth(bin, dir, append(slices.Clone(extra), "--auth", "token"))
	if s != nil {
		s.name = "berth"
	}
	return s, err
}

// berthToken gets a pull-and-push token for repo from Berth's token
// endpoint.
func berthToken(base, repo string) (string, error) {
	req, _ := http.NewRequest(http.MethodGet, base+"/v2/auth?service=berth&scope=repository:"+repo+":pull,push", nil)
	req.SetBasicAuth(benchUser, benchPassword)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	var body struct {
		Token string `json:"token"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil || resp.StatusCode != 200 || body.Token == "" {
		return "", fmt.Errorf("token endpoint: %s (%v)", resp.Status, err)
	}
	return body.Token, nil
}

// tokenIssuer signs Distribution tokens.
type tokenIssuer struct {
	key  *ecdsa.PrivateKey
	cert []byte // DER
}

func newTokenIssuer(dir string) (*tokenIssuer, string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, "", err
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "bench token issuer"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, "", err
	}
	bundle := filepath.Join(dir, "token-ca.pem")
	if err := os.WriteFile(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, "", err
	}
	return &tokenIssuer{key: key, cert: der}, bundle, nil
}

// token is an ES256 JWT in the shape of Docker's token specification.
func (t *tokenIssuer) token(repo string) (string, error) {
	enc := base64.RawURLEncoding
	header, _ := json.Marshal(map[string]any{"alg": "ES256", "typ": "JWT", "x5c": []string{base64.StdEncoding.EncodeToString(t.cert)}})
	now := time.Now()
	claims, _ := json.Marshal(map[string]any{"iss": "bench", "sub": benchUser, "aud": "bench",
		"iat": now.Unix(), "nbf": now.Add(-time.Minute).Unix(), "exp": now.Add(time.Hour).Unix(), "jti": fmt.Sprint(now.UnixNano()),
		"access": []any{map[string]any{"type": "repository", "name": repo, "actions": []string{"pull", "push"}}}})
	signing := enc.EncodeToString(header) + "." + enc.EncodeToString(claims)
	sum := sha256.Sum256([]byte(signing))
	r, s, err := ecdsa.Sign(rand.Reader, t.key, sum[:])
	if err != nil {
		return "", err
	}
	sig := make([]byte, 64)
	r.FillBytes(sig[:32])
	s.FillBytes(sig[32:])
	return signing + "." + enc.EncodeToString(sig), nil
}

const distributionTokenAuth = `auth:
  token:
    realm: http://127.0.0.1:9/token
    service: bench
    issuer: bench
    rootcertbundle: %s
`

// startDistributionAuth starts Distribution with token auth.
func startDistributionAuth(bin, work string) (*server, *tokenIssuer, error) {
	dir := filepath.Join(work, "distribution-auth")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, nil, err
	}
	iss, bundle, err := newTokenIssuer(dir)
	if err != nil {
		return nil, nil, err
	}
	s, err := startDistributionIn(bin, dir, fmt.Sprintf(distributionTokenAuth, bundle))
	return s, iss, err
}

// authedClient is a registry client that sends a Bearer token.
type bearer struct {
	token string
	next  http.RoundTripper
}

func (b bearer) RoundTrip(req *http.Request) (*http.Response, error) {
	req = req.Clone(req.Context())
	req.Header.Set("Authorization", "Bearer "+b.token)
	return b.next.RoundTrip(req)
}

// withToken wraps a client's transport so every request carries token.
func withToken(c *http.Client, token string) *http.Client {
	return &http.Client{Transport: bearer{token, c.Transport}, Timeout: c.Timeout}
}

// checkAuthRequired confirms a server refuses an anonymous manifest GET.
func checkAuthRequired(base, repo, tag string) error {
	resp, err := http.Get(base + "/v2/" + repo + "/manifests/" + tag)
	if err != nil {
		return err
	}
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusUnauthorized {
		return fmt.Errorf("anonymous GET answered %s, want 401: auth is not on", resp.Status)
	}
	return nil
}

// authedServer is a registry instance with auth on and a token for it.
type authedServer struct {
	s     *server
	token string
	// fresh gets a new token: a run outlasts Berth's (5 minutes by
	// default), so each load step takes a new one.
	fresh func() (string, error)
}

// renew replaces the token with a new one.
func (a *authedServer) renew() error {
	t, err := a.fresh()
	if err != nil {
		return fmt.Errorf("renew the token: %w", err)
	}
	a.token = t
	return nil
}

// startAuthed starts registry n with token auth and gets a token for the
// load repository (pull and push).
func startAuthed(n, berthBin, distBin, work string, berthArgs []string) (*authedServer, error) {
	a := &authedServer{}
	var err error
	if n == "berth" {
		if a.s, err = startBerthAuth(berthBin, work, berthArgs); err != nil {
			return a, err
		}
		a.fresh = func() (string, error) { return berthToken(a.s.baseURL(), "bench/load") }
		return a, a.renew()
	}
	var iss *tokenIssuer
	if a.s, iss, err = startDistributionAuth(distBin, work); err != nil {
		return a, err
	}
	a.fresh = func() (string, error) { return iss.token("bench/load") }
	return a, a.renew()
}
