package authz

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
)

// TestTokenCacheBoundsBytes: 512 registry tokens of 100 scopes with
// names of 255 bytes each (about 40 KB a token: the most a token request
// may ask for), or 4096 of as many such scopes as a cached token may have, are
// each verified, as a client sending them as Bearer tokens has them
// verified, yet the cache of verified tokens holds only a few MB of them;
// a token of the usual size is still cached.
func TestTokenCacheBoundsBytes(t *testing.T) {
	key, err := auth.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens("berth", "berth", 5*time.Minute, []auth.SigningKey{key})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	access := make([]auth.Access, maxTokenScopes)
	for i := range access {
		name := fmt.Sprintf("a/%s%04d", strings.Repeat("x", 249), i)
		access[i] = auth.Access{Type: "repository", Name: name, Actions: []string{auth.ActionPull}}
	}
	issue := func(i, scopes int) string {
		t.Helper()
		tok, _, err := tokens.IssueFor(auth.Identity{Kind: auth.KindAnonymous, Name: fmt.Sprintf("anon%d", i)}, access[:scopes], now)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	// The most scopes of a token still cached.
	cachable := 1
	for len(issue(0, cachable+1)) <= maxCachedTokenBytes {
		cachable++
	}
	for _, scopes := range []int{maxTokenScopes, cachable} {
		t.Run(fmt.Sprintf("%d scopes", scopes), func(t *testing.T) {
			var c tokenCache
			var m runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&m)
			before := m.HeapAlloc
			// 512 of the largest tokens would hold about 38 MB if cached
			// (and take a minute under the race detector at 4096).
			n := maxVerifiedTokens
			if scopes == maxTokenScopes {
				n = 512
			}
			size := 0
			for i := range n {
				tok := issue(i, scopes)
				size = len(tok)
				claims, err := c.verify(tokens, tok, now)
				if err != nil || !claims.Allows("repository", access[scopes-1].Name, auth.ActionPull) {
					t.Fatalf("token %d: %v", i, err)
				}
			}
			runtime.GC()
			runtime.ReadMemStats(&m)
			held := int64(m.HeapAlloc) - int64(before)
			t.Logf("%d tokens of %d bytes verified: %d cached, the heap grew by %d KiB", n, size, len(c.m), held>>10)
			if held > 8<<20 {
				t.Fatalf("after %d tokens of %d bytes were verified the heap holds %d MiB more, over 8 MiB", n, size, held>>20)
			}
			// A token of the usual size is still cached.
			tok, _, err := tokens.IssueFor(auth.Identity{Kind: auth.KindUser, Name: "alice"}, access[:3], now)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := c.verify(tokens, tok, now); err != nil {
				t.Fatal(err)
			}
			c.mu.Lock()
			_, cached := c.m[tok]
			c.mu.Unlock()
			if !cached {
				t.Fatalf("a token of %d bytes (3 scopes of long names) was not cached", len(tok))
			}
		})
	}
}
