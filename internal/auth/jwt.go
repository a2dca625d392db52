package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base32"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/google/uuid"
)

// Access is one entry of a registry token's "access" claim, as in Docker's
// token specification.
type Access struct {
	Type    string   `json:"type"`
	Name    string   `json:"name"`
	Actions []string `json:"actions"`
}

// Claims of a registry token.
type Claims struct {
	jwt.RegisteredClaims
	Access []Access `json:"access"`
	// Kind describes the subject, for audit and events.
	Kind Kind `json:"berth_kind,omitempty"`
	// SubjectID is the subject's account or access token id: each request
	// checks that it still names the subject and may still act (a user
	// deleted, and another made with the same name, must not inherit the
	// token).
	SubjectID int64 `json:"berth_sid,omitempty"`
	// IssuedMicros is the issue time in Unix microseconds ("iat" has
	// whole seconds): a repository made after it is not one the token's
	// decision was about.
	IssuedMicros int64 `json:"berth_iat,omitempty"`
	// SecretFingerprint, for a user or robot, is the fingerprint of the
	// account's secret hash when the token was issued
	// (Identity.SecretFingerprint): a password reset or a robot token
	// regenerated since refuses the token. Tokens issued before it was
	// in them have none, and are not checked so.
	SecretFingerprint string `json:"berth_sfp,omitempty"`
}

// IssuedBefore reports whether the token was issued before t, to the
// microsecond when it says (else to the second of "iat", a repository
// made in that second counting as made after).
func (c *Claims) IssuedBefore(t time.Time) bool {
	if c.IssuedMicros > 0 {
		return c.IssuedMicros < t.UnixMicro()
	}
	return c.IssuedAt == nil || !c.IssuedAt.Time.After(t.Truncate(time.Second))
}

// Allows reports whether the token grants an action on a resource.
func (c *Claims) Allows(typ, name, action string) bool {
	for _, a := range c.Access {
		if a.Type != typ || a.Name != name {
			continue
		}
		for _, act := range a.Actions {
			if act == action || act == ActionAll {
				return true
			}
		}
	}
	return false
}

// SigningKey is a persisted token-signing key.
type SigningKey struct {
	ID         string // the JWT "kid"
	PrivatePEM []byte
}

// NewSigningKey generates an ECDSA P-256 key.
func NewSigningKey() (SigningKey, error) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return SigningKey{}, fmt.Errorf("generate signing key: %w", err)
	}
	der, err := x509.MarshalECPrivateKey(k)
	if err != nil {
		return SigningKey{}, err
	}
	pub, err := x509.MarshalPKIXPublicKey(&k.PublicKey)
	if err != nil {
		return SigningKey{}, err
	}
	return SigningKey{ID: keyID(pub), PrivatePEM: pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der})}, nil
}

// keyID is the libtrust-style key id Docker's token format uses: the
// base32 of the first 240 bits of the SHA-256 of the public key, in groups.
func keyID(pubDER []byte) string {
	sum := sha256.Sum256(pubDER)
	s := strings.TrimRight(base32.StdEncoding.EncodeToString(sum[:30]), "=")
	var groups []string
	for i := 0; i < len(s); i += 4 {
		groups = append(groups, s[i:min(i+4, len(s))])
	}
	return strings.Join(groups, ":")
}

// Tokens issues and verifies registry tokens. It holds no mutable state:
// build one from the keys in the database.
type Tokens struct {
	issuer, service string
	ttl             time.Duration
	signKID         string
	signKey         *ecdsa.PrivateKey
	verify          map[string]*ecdsa.PublicKey
}

// NewTokens signs with the first key and verifies with all of them.
func NewTokens(issuer, service string, ttl time.Duration, keys []SigningKey) (*Tokens, error) {
	if len(keys) == 0 {
		return nil, errors.New("no signing keys")
	}
	t := &Tokens{issuer: issuer, service: service, ttl: ttl, verify: map[string]*ecdsa.PublicKey{}}
	for i, k := range keys {
		block, _ := pem.Decode(k.PrivatePEM)
		if block == nil {
			return nil, fmt.Errorf("signing key %s: not PEM", k.ID)
		}
		priv, err := x509.ParseECPrivateKey(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("signing key %s: %w", k.ID, err)
		}
		t.verify[k.ID] = &priv.PublicKey
		if i == 0 {
			t.signKID, t.signKey = k.ID, priv
		}
	}
	return t, nil
}

// Service is the token audience, the "service" of the challenge.
func (t *Tokens) Service() string { return t.service }

// TTL is how long an issued token lives.
func (t *Tokens) TTL() time.Duration { return t.ttl }

// Issue signs a token for a subject (its name, kind and account or
// access token id) with the granted access.
func (t *Tokens) Issue(subject string, kind Kind, subjectID int64, access []Access, now time.Time) (string, time.Time, error) {
	return t.IssueFor(Identity{Kind: kind, ID: subjectID, Name: subject}, access, now)
}

// IssueFor signs a token for an identity with the granted access: as
// Issue, bound to the secret the identity authenticated with
// (Claims.SecretFingerprint).
func (t *Tokens) IssueFor(id Identity, access []Access, now time.Time) (string, time.Time, error) {
	exp := now.Add(t.ttl)
	claims := Claims{
		RegisteredClaims: jwt.RegisteredClaims{
			Issuer: t.issuer, Subject: id.Name, Audience: jwt.ClaimStrings{t.service},
			ExpiresAt: jwt.NewNumericDate(exp), NotBefore: jwt.NewNumericDate(now.Add(-10 * time.Second)),
			IssuedAt: jwt.NewNumericDate(now), ID: uuid.NewString(),
		},
		Access: access, Kind: id.Kind, SubjectID: id.ID, IssuedMicros: now.UnixMicro(), SecretFingerprint: id.SecretFingerprint,
	}
	if claims.Access == nil {
		claims.Access = []Access{}
	}
	tok := jwt.NewWithClaims(jwt.SigningMethodES256, claims)
	tok.Header["kid"] = t.signKID
	s, err := tok.SignedString(t.signKey)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign token: %w", err)
	}
	return s, exp, nil
}

// ErrInvalidToken is wrapped by every verification failure.
var ErrInvalidToken = errors.New("invalid token")

// Verify checks a token's signature (ES256 only, by kid), issuer, audience
// and times.
func (t *Tokens) Verify(token string, now time.Time) (*Claims, error) {
	var c Claims
	_, err := jwt.ParseWithClaims(token, &c, func(tok *jwt.Token) (any, error) {
		kid, _ := tok.Header["kid"].(string)
		k, ok := t.verify[kid]
		if !ok {
			return nil, fmt.Errorf("unknown signing key %q", kid)
		}
		return k, nil
	}, jwt.WithValidMethods([]string{"ES256"}), jwt.WithIssuer(t.issuer), jwt.WithAudience(t.service),
		jwt.WithTimeFunc(func() time.Time { return now }), jwt.WithExpirationRequired())
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	return &c, nil
}
