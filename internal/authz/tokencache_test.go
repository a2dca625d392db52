package authz

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
)

func TestTokenCacheKeepsVerificationRules(t *testing.T) {
	key, err := auth.NewSigningKey()
	if err != nil {
		t.Fatal(err)
	}
	tokens, err := auth.NewTokens("berth", "berth", time.Minute, []auth.SigningKey{key})
	if err != nil {
		t.Fatal(err)
	}
	other, _ := auth.NewSigningKey()
	forger, _ := auth.NewTokens("berth", "berth", time.Minute, []auth.SigningKey{other})
	now := time.Now()
	access := []auth.Access{{Type: "repository", Name: "a/b", Actions: []string{"pull"}}}
	tok, _, err := tokens.Issue("alice", auth.KindUser, 0, access, now)
	if err != nil {
		t.Fatal(err)
	}
	var c tokenCache
	for i := range 3 { // the first verifies, the others hit the cache
		claims, err := c.verify(tokens, tok, now.Add(time.Duration(i)*time.Second))
		if err != nil || claims.Subject != "alice" || !claims.Allows("repository", "a/b", "pull") {
			t.Fatalf("hit %d: %v %+v", i, err, claims)
		}
	}
	if _, err := c.verify(tokens, tok, now.Add(2*time.Minute)); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("an expired token was accepted from the cache: %v", err)
	}
	if _, err := c.verify(tokens, tok, now.Add(-time.Minute)); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("a token before its nbf was accepted from the cache: %v", err)
	}
	forged, _, _ := forger.Issue("alice", auth.KindUser, 0, access, now)
	if _, err := c.verify(tokens, forged, now); !errors.Is(err, auth.ErrInvalidToken) {
		t.Fatalf("a token signed with an unknown key was accepted: %v", err)
	}
	// The cache stays bounded.
	for i := range maxVerifiedTokens + 100 {
		tk, _, _ := tokens.Issue(fmt.Sprintf("u%d", i), auth.KindUser, 0, nil, now)
		if _, err := c.verify(tokens, tk, now); err != nil {
			t.Fatal(err)
		}
	}
	if n := len(c.m); n > maxVerifiedTokens {
		t.Fatalf("cache holds %d tokens, more than %d", n, maxVerifiedTokens)
	}
}
