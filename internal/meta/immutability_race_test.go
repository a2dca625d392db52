package meta_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestExpirationRacesImmutabilityPolicy: on PostgreSQL, an expiration set
// on a tag while an immutability policy covering it is created does not
// leave the tag both immutable and expiring. SetTagExpiration is stopped
// after it read the policies (none yet) and before it writes (another
// session holds the tag's row), and the policy is created then. Before,
// the policy committed at once: its clearing of the covered tags'
// expirations read the tag without one, and the expiration was written
// after. Now the two take a lock of the namespace's tag policies (shared
// to set an expiration, exclusive to change a policy): the policy waits
// for the expiration and clears it.
func TestExpirationRacesImmutabilityPolicy(t *testing.T) {
	if !slices.Contains(metatest.Dialects(), "postgres") {
		t.Skip("SKIP: PostgreSQL only (BERTH_TEST_POSTGRES_DSN)")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dsn := metatest.DSN(t, "postgres")
	db, err := meta.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	orgWithRepo(t, db)
	if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf("release"), Tag: "rel-1"}); err != nil {
		t.Fatal(err)
	}
	h := newLockHolder(t, ctx, dsn)
	h.lock("SELECT 1 FROM tags WHERE name = 'rel-1' FOR UPDATE")
	expired := make(chan error, 1)
	go func() {
		expired <- db.Manifests().SetTagExpiration(ctx, "acme/app", "rel-1", time.Now().Add(time.Hour))
	}()
	h.waitBlocked(1) // the expiration, waiting for the tag's row
	created := make(chan error, 1)
	go func() {
		_, err := db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme",
			TagPattern: `^rel-`, TagPatternMatches: true})
		created <- err
	}()
	// The policy either commits at once (the race) or waits for the
	// expiration (2 sessions behind the held row): either way, let go.
	var createErr error
	done := false
	for deadline := time.Now().Add(30 * time.Second); !done && blockedBy(t, h) < 2; {
		select {
		case createErr = <-created:
			done = true
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the policy neither committed nor waited")
		}
	}
	h.release()
	if !done {
		createErr = <-created
	}
	if createErr != nil {
		t.Fatalf("create policy: %v", createErr)
	}
	var imm *meta.ImmutableTagError
	if err := <-expired; err != nil && !errors.As(err, &imm) {
		t.Fatalf("set expiration: %v", err)
	}
	tags, err := db.Manifests().TagsPage(ctx, "acme/app", meta.TagQuery{Name: "rel-1", Limit: 1})
	if err != nil || len(tags) != 1 {
		t.Fatalf("rel-1: %+v, %v", tags, err)
	}
	if !tags[0].ExpiresAt.IsZero() {
		t.Fatalf("rel-1 is immutable and expires at %s", tags[0].ExpiresAt)
	}
}

// blockedBy counts the sessions that wait, directly or through each
// other, for the holder's locks.
func blockedBy(t *testing.T, h *lockHolder) int {
	t.Helper()
	var n int
	if err := h.db.QueryRowContext(h.ctx, `WITH RECURSIVE b(pid) AS (
		SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))
		UNION SELECT a.pid FROM pg_stat_activity a JOIN b ON b.pid = ANY(pg_blocking_pids(a.pid))
	) SELECT COUNT(*) FROM b`, h.pid).Scan(&n); err != nil {
		t.Fatal(err)
	}
	return n
}
