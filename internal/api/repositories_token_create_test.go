package api_test

import (
	"context"
	"net/http"
	"strings"
	"testing"
)

// TestRepositoryCreateByTokenIsPrivate: an access token may create a
// repository where it may push, but not a public one: no token ever
// administers the repository it creates (tokens never administer), and
// making a repository public takes its administrator, as a push creates
// it private. A user still creates a public one.
func TestRepositoryCreateByTokenIsPrivate(t *testing.T) {
	forDialects(t, func(t *testing.T, e *orgEnv) {
		ctx := context.Background()
		e.createOrg("alice", "acme")
		e.scopedToken("acme-ci-token")
		const path = "/api/v1/repository"
		r := e.expect("acme-ci-token", "POST", path, `{"namespace":"acme","repository":"pub","visibility":"public","description":""}`, http.StatusForbidden)
		if !strings.Contains(string(r.body), "private") {
			t.Fatalf("the refusal does not say what the token may create: %s", r.body)
		}
		if ri, err := e.db.Repositories().Repository(ctx, "acme/pub"); err != nil || ri.Exists {
			t.Fatalf("a refused public repository exists (%v): %+v", err, ri)
		}
		e.expect("acme-ci-token", "POST", path, `{"namespace":"acme","repository":"priv","visibility":"private","description":""}`, http.StatusCreated)
		if ri, err := e.db.Repositories().Repository(ctx, "acme/priv"); err != nil || !ri.Exists || ri.Visibility != "private" {
			t.Fatalf("the token's private repository (%v): %+v", err, ri)
		}
		// A user administers what it creates: public is its choice.
		e.expect("alice", "POST", path, `{"namespace":"acme","repository":"pub","visibility":"public","description":""}`, http.StatusCreated)
		if ri, err := e.db.Repositories().Repository(ctx, "acme/pub"); err != nil || ri.Visibility != "public" {
			t.Fatalf("alice's public repository (%v): %+v", err, ri)
		}
	})
}
