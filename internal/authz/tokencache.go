package authz

import (
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/auth"
)

// maxVerifiedTokens bounds the verified-token cache (a token is about 700
// bytes: a full cache holds about 3 MB).
const maxVerifiedTokens = 4096

// tokenCache remembers registry tokens whose signature, issuer and
// audience were verified, so a client that sends the same Bearer token
// with every request pays the ES256 verification and the JSON parse once
// (they were about a quarter of an authenticated manifest GET's CPU). The
// token's times are checked again on every hit. Only a speed-up: the
// signing keys of an Authorizer do not change, and every replica decides
// the same without it. The cached claims are shared: read them, never
// change them.
type tokenCache struct {
	mu sync.Mutex
	m  map[string]*auth.Claims
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
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.m == nil {
		c.m = map[string]*auth.Claims{}
	}
	if len(c.m) >= maxVerifiedTokens {
		// Drop a quarter, expired ones first, then whichever the map's
		// random order yields.
		for k, v := range c.m {
			if !current(v, now) {
				delete(c.m, k)
			}
		}
		for k := range c.m {
			if len(c.m) < maxVerifiedTokens*3/4 {
				break
			}
			delete(c.m, k)
		}
	}
	c.m[token] = claims
	return claims, nil
}

// current reports whether verified claims are still within their times,
// as Verify checks them (no leeway): not before nbf, before exp.
func current(c *auth.Claims, now time.Time) bool {
	if c.ExpiresAt == nil || !now.Before(c.ExpiresAt.Time) {
		return false
	}
	return c.NotBefore == nil || !now.Before(c.NotBefore.Time)
}
