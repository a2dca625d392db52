package meta_test

import (
	"context"
	"database/sql"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// openPostgres opens a store on a PostgreSQL schema of the test's own and
// returns it with its DSN (for a lockHolder), skipping the test without
// PostgreSQL.
func openPostgres(t *testing.T) (*meta.DB, string) {
	t.Helper()
	if !slices.Contains(metatest.Dialects(), "postgres") {
		t.Skip("SKIP: PostgreSQL only (BERTH_TEST_POSTGRES_DSN)")
	}
	dsn := metatest.DSN(t, "postgres")
	db, err := meta.Open(context.Background(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db, dsn
}

// returnsOrWaits waits until done answers or the holder's session blocks
// n sessions, and says whether done answered (with what).
func returnsOrWaits(t *testing.T, h *lockHolder, done <-chan error, n int) (bool, error) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for h.blocked() < n {
		select {
		case err := <-done:
			return true, err
		case <-time.After(5 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatal("neither returned nor waited for the held locks")
		}
	}
	return false, nil
}

// TestRepositoryDeleteRacesDelete: on PostgreSQL, a delete of a repository
// that another transaction deletes while this one waits for its row (the
// second of two DELETEs at once) finds it not found, which the API
// answers 404, rather than failing to lock a row that is gone (a 500).
// DeleteRepository waits at the lock before uncounting the repository's
// quota, DeleteEmptyRepository at the lock before looking for content.
func TestRepositoryDeleteRacesDelete(t *testing.T) {
	db, dsn := openPostgres(t)
	ctx := context.Background()
	if _, err := db.Organizations().CreateOrganization(ctx, "acme", 0); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		repo string
		del  func(repo string) error
	}{
		{"acme/all", func(repo string) error { return db.Repositories().DeleteRepository(ctx, repo, "alice") }},
		{"acme/empty", func(repo string) error {
			_, err := db.Repositories().DeleteEmptyRepository(ctx, repo, "alice")
			return err
		}},
	} {
		t.Run(tc.repo, func(t *testing.T) {
			if err := db.Repositories().CreateRepository(ctx, tc.repo, "private", "", "alice", 0); err != nil {
				t.Fatal(err)
			}
			h := newLockHolder(t, ctx, dsn)
			h.lock("SELECT 1 FROM repositories WHERE name = $1 FOR UPDATE", tc.repo)
			done := make(chan error, 1)
			go func() { done <- tc.del(tc.repo) }()
			h.waitBlocked(1)
			if _, err := h.tx.ExecContext(ctx, "DELETE FROM repositories WHERE name = $1", tc.repo); err != nil {
				t.Fatal(err)
			}
			if err := h.tx.Commit(); err != nil {
				t.Fatal(err)
			}
			if err := <-done; !errors.Is(err, meta.ErrRepositoryNotFound) {
				t.Errorf("delete of a repository deleted meanwhile: %v, want ErrRepositoryNotFound", err)
			}
		})
	}
}

// TestPushRacesOrganizationDelete: on PostgreSQL, a push that creates a
// repository in an organization while the organization is deleted does
// not leave the repository without a namespace (for whoever creates the
// name next to inherit): the deletion waits for the push, which holds the
// organization's row, and then refuses (the organization has a
// repository). The push is stopped after inserting the repository by a
// session holding the organization's quota usage row.
func TestPushRacesOrganizationDelete(t *testing.T) {
	db, dsn := openPostgres(t)
	ctx := context.Background()
	if _, err := db.Organizations().CreateOrganization(ctx, "acme", 0); err != nil {
		t.Fatal(err)
	}
	layer := meta.Blob{Digest: digest.FromString("org race layer"), Size: 100}
	if _, err := db.Blobs().StoreBlob(ctx, "other/base", layer, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
		t.Fatal(err)
	}
	h := newLockHolder(t, ctx, dsn)
	if _, err := h.db.ExecContext(ctx, "INSERT INTO quota_usage (namespace, bytes) VALUES ($1, 0)", "acme"); err != nil {
		t.Fatal(err)
	}
	h.lock("SELECT 1 FROM quota_usage WHERE namespace = $1 FOR UPDATE", "acme")
	m, refs := image("org race", layer)
	pushed := make(chan error, 1)
	go func() {
		pushed <- db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: m, Refs: refs, Tag: "v1",
			LinkBlobs: []meta.Blob{layer}, Actor: "alice"})
	}()
	h.waitBlocked(1) // the push, acme/app inserted, waits to count its layer
	deleted := make(chan error, 1)
	go func() { deleted <- db.Organizations().DeleteOrganization(ctx, "acme") }()
	done, delErr := returnsOrWaits(t, h, deleted, 2)
	h.release()
	pushErr := <-pushed
	if !done {
		delErr = <-deleted
	}
	if pushErr == nil && delErr == nil {
		t.Error("the push and the deletion of its organization both succeeded")
	}
	if pushErr != nil || !errors.Is(delErr, meta.ErrNamespaceNotEmpty) {
		t.Errorf("push: %v; delete organization: %v; want the push stored and the deletion refused (ErrNamespaceNotEmpty)", pushErr, delErr)
	}
	assertNoOrphan(t, db, "acme/app")
}

// assertNoOrphan fails the test if repo exists without its namespace.
func assertNoOrphan(t *testing.T, db *meta.DB, repo string) {
	t.Helper()
	ctx := context.Background()
	ri, err := db.Repositories().Repository(ctx, repo)
	if err != nil {
		t.Fatal(err)
	}
	ns, _, _ := strings.Cut(repo, "/")
	_, err = db.Users().NamespaceByName(ctx, ns)
	if ri.Exists && errors.Is(err, meta.ErrNamespaceNotFound) {
		t.Errorf("repository %s is left without its namespace", repo)
	} else if err != nil && !errors.Is(err, meta.ErrNamespaceNotFound) {
		t.Fatal(err)
	}
}

// TestCreateRepositoryNeedsItsNamespace: the API's create makes a
// repository only in a namespace that exists, checked in its transaction:
// not in one that never was, nor in an organization deleted since the
// caller looked it up.
func TestCreateRepositoryNeedsItsNamespace(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, d)
			repos := db.Repositories()
			if err := repos.CreateRepository(ctx, "ghost/app", "private", "", "alice", 0); !errors.Is(err, meta.ErrNamespaceNotFound) {
				t.Errorf("in a namespace that never was: %v, want ErrNamespaceNotFound", err)
			}
			if _, err := db.Organizations().CreateOrganization(ctx, "acme", 0); err != nil {
				t.Fatal(err)
			}
			if err := db.Organizations().DeleteOrganization(ctx, "acme"); err != nil {
				t.Fatal(err)
			}
			if err := repos.CreateRepository(ctx, "acme/app", "private", "", "alice", 0); !errors.Is(err, meta.ErrNamespaceNotFound) {
				t.Errorf("in a deleted organization: %v, want ErrNamespaceNotFound", err)
			}
			for _, r := range []string{"ghost/app", "acme/app"} {
				if ri, err := repos.Repository(ctx, r); err != nil || ri.Exists {
					t.Errorf("%s: exists %v, %v", r, ri.Exists, err)
				}
			}
			if _, err := db.Users().CreateUser(ctx, meta.User{Username: "bob", SecretHash: "x"}); err != nil {
				t.Fatal(err)
			}
			if err := repos.CreateRepository(ctx, "bob/app", "private", "", "bob", 0); err != nil {
				t.Errorf("in a user's namespace: %v", err)
			}
		})
	}
}

// TestCreateRepositoryRacesNamespaceDelete: on PostgreSQL, a create that
// runs while its namespace's deletion is under way waits for it and finds
// the namespace gone, rather than creating the repository under a name
// nobody holds.
func TestCreateRepositoryRacesNamespaceDelete(t *testing.T) {
	db, dsn := openPostgres(t)
	ctx := context.Background()
	if _, err := db.Organizations().CreateOrganization(ctx, "acme", 0); err != nil {
		t.Fatal(err)
	}
	h := newLockHolder(t, ctx, dsn)
	h.lock("DELETE FROM namespaces WHERE name = $1", "acme")
	created := make(chan error, 1)
	go func() { created <- db.Repositories().CreateRepository(ctx, "acme/app", "private", "", "alice", 0) }()
	done, err := returnsOrWaits(t, h, created, 1)
	if err := h.tx.Commit(); err != nil {
		t.Fatal(err)
	}
	if !done {
		err = <-created
	}
	if !errors.Is(err, meta.ErrNamespaceNotFound) {
		t.Errorf("create racing its namespace's deletion: %v, want ErrNamespaceNotFound", err)
	}
	assertNoOrphan(t, db, "acme/app")
}

// TestCreateRobotRacesNamespaceDelete: a robot created while its
// namespace is deleted, after CreateRobot looked the namespace up, is not
// found (the API answers 404), not the foreign key's refusal (a 500). On
// SQLite the deletion holds the write lock while the robot's look-up
// reads; on PostgreSQL the robot's insert waits for the deletion's row.
func TestCreateRobotRacesNamespaceDelete(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			dsn := metatest.DSN(t, d)
			db, err := meta.Open(ctx, dsn)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			if _, err := db.Organizations().CreateOrganization(ctx, "acme", 0); err != nil {
				t.Fatal(err)
			}
			created := make(chan error, 1)
			robot := func() {
				_, err := db.Users().CreateRobot(ctx, "acme", "ci", "x")
				created <- err
			}
			if d == "postgres" {
				h := newLockHolder(t, ctx, dsn)
				h.lock("DELETE FROM namespaces WHERE name = $1", "acme")
				go robot()
				h.waitBlocked(1) // the robot's insert, its namespace read
				if err := h.tx.Commit(); err != nil {
					t.Fatal(err)
				}
			} else {
				commit := sqliteDelete(t, dsn, "acme")
				go robot()
				// Time for the look-up on the read pool, which sees the
				// namespace still; the insert then waits for the writer.
				time.Sleep(300 * time.Millisecond)
				commit()
			}
			if err := <-created; !errors.Is(err, meta.ErrNamespaceNotFound) {
				t.Errorf("robot of a namespace deleted meanwhile: %v, want ErrNamespaceNotFound", err)
			}
			if _, err := db.Users().UserByName(ctx, "acme+ci"); !errors.Is(err, meta.ErrUserNotFound) {
				t.Errorf("the robot: %v, want ErrUserNotFound", err)
			}
		})
	}
}

// sqliteDelete deletes a namespace in a write transaction of a connection
// beside the store's, holding SQLite's write lock, and returns the
// function that commits it.
func sqliteDelete(t *testing.T, path, ns string) func() {
	t.Helper()
	ctx := context.Background()
	other, err := sql.Open("sqlite", path+"?_pragma=busy_timeout(10000)&_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { other.Close() })
	conn, err := other.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	if _, err := conn.ExecContext(ctx, "BEGIN IMMEDIATE"); err != nil {
		t.Fatal(err)
	}
	if _, err := conn.ExecContext(ctx, "DELETE FROM namespaces WHERE name = ?", ns); err != nil {
		t.Fatal(err)
	}
	return func() {
		t.Helper()
		if _, err := conn.ExecContext(ctx, "COMMIT"); err != nil {
			t.Fatal(err)
		}
	}
}
