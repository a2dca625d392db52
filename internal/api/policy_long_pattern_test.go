package api_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/api"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/wire"
)

// lengthened is the policy store with every stored pattern shown as the
// upgrade to schema 37 could have left a long one: lengthened past the
// API's 1024 bytes. What an update asks for is recorded, not stored (the
// store's own rule for a pattern sent back is meta's test).
type lengthened struct {
	api.PolicyStore
	pattern string
	updated *meta.TagPolicy
}

func (s lengthened) TagPolicy(ctx context.Context, kind, ns, repo, uuid string) (meta.TagPolicy, error) {
	p, err := s.PolicyStore.TagPolicy(ctx, kind, ns, repo, uuid)
	p.TagPattern = s.pattern
	return p, err
}

func (s lengthened) UpdateTagPolicy(_ context.Context, p meta.TagPolicy) error {
	*s.updated = p
	return nil
}

// TestLongStoredPatternPutBack: a stored pattern longer than the API's
// 1024 bytes (a 1,020-byte one the upgrade wrapped in ".*(?:...)"), sent
// back as it is to flip tagPatternMatches, reaches the store; a changed
// pattern that long, or a new one, is refused with 400.
func TestLongStoredPatternPutBack(t *testing.T) {
	env := testenv.New(t, testenv.Options{})
	alice := env.User("alice", false)
	if _, err := env.DB.Organizations().CreateOrganization(context.Background(), "acme", alice.ID); err != nil {
		t.Fatal(err)
	}
	p, err := env.DB.Policies().CreateTagPolicy(context.Background(), meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", TagPattern: "^v", TagPatternMatches: true})
	if err != nil {
		t.Fatal(err)
	}
	long := ".*(?:" + strings.Repeat("a", 1020) + ")"
	var updated meta.TagPolicy
	stores := wire.APIStores(env.DB, 7*24*time.Hour)
	stores.Policies = lengthened{stores.Policies, long, &updated}
	srv := httptest.NewServer(api.New(stores, env.Authz, api.Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}))
	t.Cleanup(srv.Close)
	put := func(body string) int {
		t.Helper()
		req, err := http.NewRequest("PUT", srv.URL+"/api/v1/organization/acme/immutabilitypolicy/"+p.UUID, strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Content-Type", "application/json")
		req.SetBasicAuth("alice", env.Secret("alice"))
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		return res.StatusCode
	}
	if got := put(mustJSON(map[string]any{"tagPattern": long, "tagPatternMatches": false})); got != http.StatusNoContent || updated.TagPattern != long || updated.TagPatternMatches {
		t.Fatalf("the stored pattern of %d bytes sent back: %d, the store got %+v", len(long), got, updated)
	}
	updated = meta.TagPolicy{}
	if got := put(mustJSON(map[string]any{"tagPattern": long + "b"})); got != http.StatusBadRequest || updated.UUID != "" {
		t.Fatalf("a changed pattern of %d bytes: %d, want 400 and nothing stored", len(long)+1, got)
	}
}
