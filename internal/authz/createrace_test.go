package authz_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/wire"
)

// racingAccess is the access store with a concurrent push landing right
// after the first standing read: it creates the namespace (as its owner
// would, with CREATE_NAMESPACE_ON_PUSH) between that read and the
// namespace's lookup.
type racingAccess struct {
	authz.AccessStore
	once   *sync.Once
	create func()
}

func (a racingAccess) StandingOf(ctx context.Context, u meta.User, repo string) (meta.Standing, error) {
	st, err := a.AccessStore.StandingOf(ctx, u, repo)
	a.once.Do(a.create)
	return st, err
}

// TestConcurrentPushCreatingTheNamespace: a push into a namespace that a
// concurrent push of the same user creates while this one is decided
// (clients upload an image's blobs at once) is allowed. Before, the
// standing read found no namespace, the lookup after it found one, and
// the push was refused "alice may not push" (a flaky CI failure of
// TestAbortedPushCreatesNothing on PostgreSQL).
func TestConcurrentPushCreatingTheNamespace(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			h, err := auth.HashPassword(alicePW)
			if err != nil {
				t.Fatal(err)
			}
			alice, err := db.Users().CreateUser(ctx, meta.User{Username: "alice", SecretHash: h})
			if err != nil {
				t.Fatal(err)
			}
			stores := wire.AuthzStores(db)
			stores.Access = racingAccess{AccessStore: stores.Access, once: &sync.Once{}, create: func() {
				if _, err := db.Organizations().CreateOrganization(ctx, "fresh", alice.ID); err != nil {
					t.Error(err)
				}
			}}
			key, err := auth.NewSigningKey()
			if err != nil {
				t.Fatal(err)
			}
			tokens, err := auth.NewTokens("berth", "berth", 5*time.Minute, []auth.SigningKey{key})
			if err != nil {
				t.Fatal(err)
			}
			az := authz.New(stores, tokens, authz.Options{CreateNamespaceOnPush: true})
			r, _ := http.NewRequest(http.MethodPost, "http://registry.example/v2/fresh/app/blobs/uploads/", nil)
			r.Header.Set("Authorization", basicAuth("alice", alicePW))
			d, err := az.Authorize(r, auth.Scope{Type: "repository", Name: "fresh/app", Actions: []string{"pull", "push"}})
			if err != nil {
				t.Fatal(err)
			}
			if d.Verdict != authz.Allow {
				t.Fatalf("a push into the namespace a concurrent push just created: %v %q", d.Verdict, strings.TrimSpace(d.Reason))
			}
		})
	}
}
