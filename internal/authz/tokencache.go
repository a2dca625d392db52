package authz

import (
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/auth"
)

// Bounds of the verified-token cache: tokens, and bytes as heldBytes
// estimates them. A token of a few scopes is about 700 bytes (1.6 KB
// held); a token request may ask for 100 scopes of 255-byte names, and so
// anyone, anonymous too, can have a token of 40 KB signed (with actions
// or without: a scope it is granted nothing on is left out of the token,
// but one may be granted pull on public repositories, or push in its own
// namespace). A token over maxCachedTokenBytes is verified each time it
// is sent, never cached, so that such tokens cannot fill the memory.
const (
	maxVerifiedTokens    = 4096
	maxVerifiedBytes     = 8 << 20
	maxCachedTokenBytes  = 4 << 10
	verifiedEntryPadding = 256
)

// heldBytes estimates the memory a cached token holds: the token (the
// map's key) and its parsed claims (under its length again, as the
// claims are decoded from three quarters of it, and the structures that
// hold them).
func heldBytes(token string) int { return 2*len(token) + verifiedEntryPadding }

// tokenCache remembers registry tokens whose signature, issuer and
// audience were verified, so a client that sends the same Bearer token
// with every request pays the ES256 verification and the JSON parse once
// (they were about a quarter of an authenticated manifest GET's CPU). The
// token's times are checked again on every hit. Only a speed-up: the
// signing keys of an Authorizer do not change, and every replica decides
// the same without it. The cached claims are shared: read them, never
// change them.
type tokenCache struct {
	mu   sync.Mutex
	m    map[string]*auth.Claims
	held int // heldBytes of the tokens in m
}

func (c *tokenCache) verify(tokens *auth.Tokens, token string, now time.Time) (*auth.Claims, error) {
	c.mu.Lock()
	claims, ok := c.m[token]
	c.mu.Unlock()
	if ok && current(claims, now) {
		return claims, nil
	}
	claims, err := tokens.Verify(token, now)
	if err != nil {
		return nil, err
	}
	if len(token) > maxCachedTokenBytes {
		return claims, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*auth.Claims{}
	}
	if _, ok := c.m[token]; ok { // cached meanwhile, or expired
		c.m[token] = claims
		return claims, nil
	}
	size := heldBytes(token)
	if len(c.m) >= maxVerifiedTokens || c.held+size > maxVerifiedBytes {
		// Drop a quarter, expired ones first, then whichever the map's
		// random order yields.
		for k, v := range c.m {
			if !current(v, now) {
				c.drop(k)
			}
		}
		for k := range c.m {
			if len(c.m) < maxVerifiedTokens*3/4 && c.held < maxVerifiedBytes*3/4 {
				break
			}
			c.drop(k)
		}
	}
	c.m[token] = claims
	c.held += size
	return claims, nil
}

// drop removes a token from the cache; c.mu is held.
func (c *tokenCache) drop(token string) {
	delete(c.m, token)
	c.held -= heldBytes(token)
}

// current reports whether verified claims are still within their times,
// as Verify checks them (no leeway): not before nbf, before exp.
func current(c *auth.Claims, now time.Time) bool {
	if c.ExpiresAt == nil || !now.Before(c.ExpiresAt.Time) {
		return false
	}
	return c.NotBefore == nil || !now.Before(c.NotBefore.Time)
}
