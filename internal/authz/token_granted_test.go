package authz_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestTokenLeavesOutScopesGrantedNothing: a token holds an access entry
// only for a resource it grants an action on, as Distribution's token
// server makes them, so that scopes granted nothing (asked with no
// action, or refused) cannot make an anonymous caller's token large: 100
// of them with names of 255 bytes give a token of the usual size.
func TestTokenLeavesOutScopesGrantedNothing(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			e := newEnv(t, dialect, authz.Options{})
			for _, actions := range []string{"", "pull", "pull,push,delete"} {
				scopes := make([]string, 100)
				for i := range scopes {
					scopes[i] = fmt.Sprintf("repository:a/%s%04d:%s", strings.Repeat("x", 249), i, actions)
				}
				status, body := e.token("", "", scopes...)
				tok, _ := body["token"].(string)
				if status != 200 || tok == "" {
					t.Fatalf("anonymous, 100 scopes asking %q: %d %v", actions, status, body)
				}
				if c := e.claims(tok); len(c.Access) != 0 || len(tok) > 2048 {
					t.Fatalf("anonymous, 100 scopes asking %q on repositories that do not exist: a token of %d bytes with %d access entries, want none", actions, len(tok), len(c.Access))
				}
			}
			status, body := e.token("alice", alicePW, "repository:alice/app:pull,push", "repository:bob/app:pull")
			if status != 200 {
				t.Fatalf("alice: %d %v", status, body)
			}
			c := e.claims(body["token"].(string))
			if len(c.Access) != 1 || c.Access[0].Name != "alice/app" || len(c.Access[0].Actions) != 2 {
				t.Fatalf("alice asked for her repository and bob's: access %+v, want only hers", c.Access)
			}
		})
	}
}
