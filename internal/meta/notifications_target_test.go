package meta_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// hookNotification is a webhook notification of repo_push for a target of
// a scope.
func hookNotification(scope, uuid, target string) meta.Notification {
	return meta.Notification{UUID: uuid, Scope: scope, Target: target, Event: meta.EventRepoPush, Method: "webhook",
		Config: json.RawMessage(`{"url":"https://hook.example/"}`)}
}

func repoNotification(uuid, repo string) meta.Notification {
	return hookNotification(meta.ScopeRepository, uuid, repo)
}

func orgNotification(uuid, org string) meta.Notification {
	return hookNotification(meta.ScopeOrganization, uuid, org)
}

// TestRepositoryNotificationNeedsItsRepository: a repository's
// notification is created only while the repository exists, also when the
// creation races the repository's deletion: none is left behind to fire
// for a repository created later under the name.
func TestRepositoryNotificationNeedsItsRepository(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			ns := db.Notifications()
			if _, err := ns.CreateNotificationForTarget(ctx, repoNotification("never", "acme/never")); !errors.Is(err, meta.ErrRepositoryNotFound) {
				t.Fatalf("for a repository that does not exist: %v, want ErrRepositoryNotFound", err)
			}
			metatest.Orgs(t, db, "acme")
			if err := db.Repositories().CreateRepository(ctx, "acme/app", "private", "", "alice", 0); err != nil {
				t.Fatal(err)
			}
			if _, err := ns.CreateNotificationForTarget(ctx, repoNotification("app", "acme/app")); err != nil {
				t.Fatal(err)
			}
			if err := db.Repositories().DeleteRepository(ctx, "acme/app", "alice"); err != nil {
				t.Fatal(err)
			}
			if _, err := ns.CreateNotificationForTarget(ctx, repoNotification("late", "acme/app")); !errors.Is(err, meta.ErrRepositoryNotFound) {
				t.Fatalf("for a deleted repository: %v, want ErrRepositoryNotFound", err)
			}

			// Creations racing deletions.
			const rounds = 30
			for i := range rounds {
				repo := fmt.Sprintf("acme/race%d", i)
				if err := db.Repositories().CreateRepository(ctx, repo, "private", "", "alice", 0); err != nil {
					t.Fatal(err)
				}
				var wg sync.WaitGroup
				var createErr, deleteErr error
				wg.Add(2)
				go func() {
					defer wg.Done()
					_, createErr = ns.CreateNotificationForTarget(ctx, repoNotification(repo, repo))
				}()
				go func() {
					defer wg.Done()
					deleteErr = db.Repositories().DeleteRepository(ctx, repo, "alice")
				}()
				wg.Wait()
				if deleteErr != nil || (createErr != nil && !errors.Is(createErr, meta.ErrRepositoryNotFound)) {
					t.Fatalf("round %d: delete %v, create %v", i, deleteErr, createErr)
				}
				if left, err := ns.Notifications(ctx, meta.ScopeRepository, repo); err != nil || len(left) != 0 {
					t.Fatalf("round %d: the deleted repository %s has notifications %v (%v)", i, repo, left, err)
				}
			}
		})
	}
}

// TestNotificationCapUnderConcurrentCreates: concurrent creations in one
// scope never take it past MaxNotificationsPerScope (on PostgreSQL, two
// could both count 99), round after round.
func TestNotificationCapUnderConcurrentCreates(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			ns := db.Notifications()
			const first, racing, rounds = meta.MaxNotificationsPerScope - 10, 40, 5
			create := func(org, uuid string) error {
				_, err := ns.CreateNotification(ctx, meta.Notification{UUID: org + "-" + uuid, Scope: meta.ScopeOrganization, Target: org,
					Event: meta.EventRepoPush, Method: "webhook", Config: json.RawMessage(`{}`)})
				return err
			}
			for round := range rounds {
				org := fmt.Sprint("org", round)
				for i := range first {
					if err := create(org, fmt.Sprint("n", i)); err != nil {
						t.Fatal(err)
					}
				}
				var wg sync.WaitGroup
				errs := make(chan error, racing)
				for i := range racing {
					wg.Add(1)
					go func() {
						defer wg.Done()
						errs <- create(org, fmt.Sprint("r", i))
					}()
				}
				wg.Wait()
				close(errs)
				created := 0
				for err := range errs {
					switch {
					case err == nil:
						created++
					case !errors.Is(err, meta.ErrTooManyNotifications):
						t.Fatalf("create: %v", err)
					}
				}
				all, err := ns.Notifications(ctx, meta.ScopeOrganization, org)
				if err != nil {
					t.Fatal(err)
				}
				if len(all) != meta.MaxNotificationsPerScope || created != meta.MaxNotificationsPerScope-first {
					t.Fatalf("round %d: %d notifications after %d concurrent creations (%d succeeded), want %d",
						round, len(all), racing, created, meta.MaxNotificationsPerScope)
				}
			}
		})
	}
}
