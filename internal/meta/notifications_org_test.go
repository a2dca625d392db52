package meta_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestOrganizationNotificationNeedsItsOrganization: an organization's
// notification is created only while the organization exists: not for a
// name that never was one (or is a user's), nor after the organization
// was deleted, and no row is left either way.
func TestOrganizationNotificationNeedsItsOrganization(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			ns := db.Notifications()
			if _, err := db.Users().CreateUser(ctx, meta.User{Username: "bob", Kind: meta.UserKindUser, Enabled: true}); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"ghost", "bob"} {
				if _, err := ns.CreateNotificationForTarget(ctx, orgNotification("n-"+name, name)); !errors.Is(err, meta.ErrNamespaceNotFound) {
					t.Errorf("for %s, not an organization: %v, want ErrNamespaceNotFound", name, err)
				}
			}
			if _, err := db.Organizations().CreateOrganization(ctx, "acme", 0); err != nil {
				t.Fatal(err)
			}
			if _, err := ns.CreateNotificationForTarget(ctx, orgNotification("first", "acme")); err != nil {
				t.Fatal(err)
			}
			if err := db.Organizations().DeleteOrganization(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
			if _, err := ns.CreateNotificationForTarget(ctx, orgNotification("late", "acme")); !errors.Is(err, meta.ErrNamespaceNotFound) {
				t.Errorf("after the organization was deleted: %v, want ErrNamespaceNotFound", err)
			}
			all, err := ns.AllNotifications(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(all) != 0 {
				t.Errorf("notifications left: %+v", all)
			}
		})
	}
}

// TestOrganizationNotificationRacesDeletion: on PostgreSQL, a creation
// that runs while DeleteOrganization is under way, after the deletion
// removed the organization's notifications and before it committed, does
// not leave a notification behind for the deleted organization (to fire
// for whoever creates the name next): it waits for the deletion and
// fails with not found. The deletion is stopped at its last statement by
// a session holding the row of an access token scoped to the
// organization, which the deletion revokes.
func TestOrganizationNotificationRacesDeletion(t *testing.T) {
	if !slices.Contains(metatest.Dialects(), "postgres") {
		t.Skip("SKIP: PostgreSQL only (BERTH_TEST_POSTGRES_DSN)")
	}
	ctx := context.Background()
	dsn := metatest.DSN(t, "postgres")
	db, err := meta.Open(ctx, dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	if _, err := db.Organizations().CreateOrganization(ctx, "acme", 0); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Notifications().CreateNotificationForTarget(ctx, orgNotification("before", "acme")); err != nil {
		t.Fatal(err)
	}
	tok, err := db.Access().CreateAccessToken(ctx, meta.AccessToken{Name: "ci", SecretHash: "x", CreatedBy: "alice",
		Scopes: json.RawMessage(`[{"repository":"acme/app","actions":["pull"]}]`)})
	if err != nil {
		t.Fatal(err)
	}
	h := newLockHolder(t, ctx, dsn)
	h.lock("SELECT 1 FROM access_tokens WHERE id = $1 FOR UPDATE", tok.ID)
	deleted := make(chan error, 1)
	go func() { deleted <- db.Organizations().DeleteOrganization(ctx, "acme") }()
	h.waitBlocked(1) // the deletion, its notifications deleted, the organization's row locked

	created := make(chan error, 1)
	go func() {
		_, err := db.Notifications().CreateNotificationForTarget(ctx, orgNotification("racing", "acme"))
		created <- err
	}()
	// Either the creation waits for the deletion (behind its row lock),
	// or it is done: it must not have stored a notification.
	var createErr error
	done := false
	deadline := time.Now().Add(30 * time.Second)
	for !done && h.blocked() < 2 {
		select {
		case createErr = <-created:
			done = true
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("the creation neither returned nor waited for the deletion")
		}
	}
	h.release()
	if err := <-deleted; err != nil {
		t.Fatalf("delete organization: %v", err)
	}
	if !done {
		createErr = <-created
	}
	if !errors.Is(createErr, meta.ErrNamespaceNotFound) {
		t.Errorf("creation racing the deletion: %v, want ErrNamespaceNotFound", createErr)
	}
	left, err := db.Notifications().Notifications(ctx, meta.ScopeOrganization, "acme")
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("the deleted organization has notifications: %+v", left)
	}
}

// blocked counts the sessions that wait, directly or through each other,
// for the holder's locks.
func (h *lockHolder) blocked() int {
	h.t.Helper()
	var n int
	if err := h.db.QueryRowContext(h.ctx, `WITH RECURSIVE b(pid) AS (
		SELECT pid FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))
		UNION SELECT a.pid FROM pg_stat_activity a JOIN b ON b.pid = ANY(pg_blocking_pids(a.pid))
	) SELECT COUNT(*) FROM b`, h.pid).Scan(&n); err != nil {
		h.t.Fatal(err)
	}
	return n
}
