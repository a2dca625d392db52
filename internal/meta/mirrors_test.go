package meta_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

func newMirror(t *testing.T, db *meta.DB) { newMirrorEvery(t, db, 24*time.Hour) }

func newMirrorEvery(t *testing.T, db *meta.DB, interval time.Duration) {
	t.Helper()
	ctx := context.Background()
	if _, err := db.Users().CreateUser(ctx, meta.User{Username: "acme"}); err != nil {
		t.Fatal(err)
	}
	if _, err := db.Users().CreateRobot(ctx, "acme", "mirror", "x"); err != nil {
		t.Fatal(err)
	}
	if err := db.Repositories().CreateRepository(ctx, "acme/app", "private", "", "acme", 0); err != nil {
		t.Fatal(err)
	}
	if err := db.Mirrors().CreateMirror(ctx, meta.Mirror{Repository: "acme/app", Enabled: true, ExternalReference: "upstream.example/lib/app",
		VerifyTLS: true, SyncInterval: interval, SyncStartDate: time.Now(), RootRule: meta.MirrorRule{Kind: "tag_glob_csv", Value: []string{"*"}},
		RobotUsername: "acme+mirror"}); err != nil {
		t.Fatal(err)
	}
}

// TestMirrorSyncNowDuringASync: a sync-now asked for while a sync runs
// (upstream may have changed after the sync listed it) makes the next
// sync due at once when the running one finishes; before, the finish
// moved it an interval away (24 h) and the request was lost. Without a
// request the next sync is an interval away.
func TestMirrorSyncNowDuringASync(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			newMirror(t, db)
			mirrors := db.Mirrors()
			if _, err := mirrors.StartMirrorSync(ctx, "acme/app", "start"); err != nil {
				t.Fatal(err)
			}
			if err := mirrors.MirrorSyncNow(ctx, "acme/app"); err != nil {
				t.Fatal(err)
			}
			if err := mirrors.FinishMirrorSync(ctx, "acme/app", meta.MirrorSuccess, ""); err != nil {
				t.Fatal(err)
			}
			m, err := mirrors.GetMirror(ctx, "acme/app")
			if err != nil {
				t.Fatal(err)
			}
			if m.NextSyncAt.After(time.Now()) {
				t.Fatalf("after a sync-now during the sync, the next sync is at %s, not now", m.NextSyncAt)
			}
			// Without a request: an interval away.
			if _, err := mirrors.StartMirrorSync(ctx, "acme/app", "start"); err != nil {
				t.Fatal(err)
			}
			if err := mirrors.FinishMirrorSync(ctx, "acme/app", meta.MirrorSuccess, ""); err != nil {
				t.Fatal(err)
			}
			if m, _ = mirrors.GetMirror(ctx, "acme/app"); m.NextSyncAt.Before(time.Now().Add(23 * time.Hour)) {
				t.Fatalf("the next sync is at %s, not a day away", m.NextSyncAt)
			}
		})
	}
}

// TestMirrorFailureWithANUL: an upstream's error that holds a NUL (a
// binary error body quoted by the client library) is recorded, on
// PostgreSQL too, which refuses NULs in text and JSON: the mirror ends
// FAIL with the message, less the NUL, and its event. Before, the finish
// failed there, the mirror stayed SYNCING and its job retried the whole
// sync without end.
func TestMirrorFailureWithANUL(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			newMirror(t, db)
			if _, err := db.Mirrors().StartMirrorSync(ctx, "acme/app", "start"); err != nil {
				t.Fatal(err)
			}
			if err := db.Mirrors().FinishMirrorSync(ctx, "acme/app", meta.MirrorFail, "list tags: unexpected status 500: x\x00y"); err != nil {
				t.Fatalf("finish with a NUL in the message: %v", err)
			}
			m, err := db.Mirrors().GetMirror(ctx, "acme/app")
			if err != nil {
				t.Fatal(err)
			}
			if m.Status != meta.MirrorFail || m.LastError != "list tags: unexpected status 500: xy" {
				t.Fatalf("status %s, last error %q", m.Status, m.LastError)
			}
			if k := kinds(t, db); k[len(k)-1] != meta.EventMirrorSyncFailed {
				t.Fatalf("events: %v", k)
			}
		})
	}
}

// TestMirrorSyncLongerThanItsInterval: a sync that took longer than its
// interval, with no sync-now asked for, schedules the next one an
// interval after it finished; it was taken for a sync-now and the next
// started at once, a failing upstream hit without pause.
func TestMirrorSyncLongerThanItsInterval(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			newMirrorEvery(t, db, time.Second)
			if _, err := db.Mirrors().StartMirrorSync(ctx, "acme/app", "start"); err != nil {
				t.Fatal(err)
			}
			time.Sleep(1200 * time.Millisecond) // the sync outlasts its interval
			finished := time.Now()
			if err := db.Mirrors().FinishMirrorSync(ctx, "acme/app", meta.MirrorSuccess, ""); err != nil {
				t.Fatal(err)
			}
			if m, _ := db.Mirrors().GetMirror(ctx, "acme/app"); !m.NextSyncAt.After(finished) {
				t.Fatalf("the next sync is at %s, before the finish %s", m.NextSyncAt, finished)
			}
		})
	}
}

// TestMirrorOnlyInStateMirror: once an administrator changes a mirrored
// repository's state (to NORMAL, to take it over), its mirror is not
// enqueued, a sync-now or a sync's start is refused, a running sync is
// told to stop, and a sync's tag deletion, checked in its own
// transaction, leaves the tag the users pushed; in state MIRROR again all
// of it works.
func TestMirrorOnlyInStateMirror(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			newMirror(t, db)
			mirrors := db.Mirrors()
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "acme/app", Manifest: manifestOf(`{"a":1}`), Tag: "hotfix"}); err != nil {
				t.Fatal(err)
			}
			normal, mirror := "NORMAL", "MIRROR"
			if err := db.Repositories().UpdateRepository(ctx, "acme/app", nil, &normal, nil, nil); err != nil {
				t.Fatal(err)
			}
			var inactive *meta.MirrorInactiveError
			if n, err := mirrors.EnqueueDueMirrors(ctx, time.Now().Add(time.Hour)); err != nil || n != 0 {
				t.Fatalf("enqueued %d syncs of a repository in state NORMAL (%v)", n, err)
			}
			if err := mirrors.MirrorSyncNow(ctx, "acme/app"); !errors.As(err, &inactive) || inactive.State != "NORMAL" {
				t.Fatalf("sync-now in state NORMAL: %v", err)
			}
			if _, err := mirrors.StartMirrorSync(ctx, "acme/app", "start"); !errors.As(err, &inactive) {
				t.Fatalf("a sync's start in state NORMAL: %v", err)
			}
			if _, err := mirrors.MirrorCancelRequested(ctx, "acme/app"); !errors.As(err, &inactive) {
				t.Fatalf("a running sync in state NORMAL is not told to stop: %v", err)
			}
			if err := mirrors.DeleteMirroredTag(ctx, "acme/app", "hotfix", "acme+mirror"); !errors.As(err, &inactive) {
				t.Fatalf("a sync's tag deletion in state NORMAL: %v", err)
			}
			if _, err := db.Manifests().GetManifest(ctx, "acme/app", "hotfix", "", false); err != nil {
				t.Fatalf("the tag pushed in state NORMAL is gone: %v", err)
			}
			if m, err := mirrors.GetMirror(ctx, "acme/app"); err != nil || m.Status != meta.MirrorNeverRun {
				t.Fatalf("the refused calls changed the mirror: %+v %v", m, err)
			}
			if err := db.Repositories().UpdateRepository(ctx, "acme/app", nil, &mirror, nil, nil); err != nil {
				t.Fatal(err)
			}
			if n, err := mirrors.EnqueueDueMirrors(ctx, time.Now().Add(time.Hour)); err != nil || n != 1 {
				t.Fatalf("enqueued %d syncs in state MIRROR (%v)", n, err)
			}
			if err := mirrors.MirrorSyncNow(ctx, "acme/app"); err != nil {
				t.Fatal(err)
			}
			if err := mirrors.DeleteMirroredTag(ctx, "acme/app", "hotfix", "acme+mirror"); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Manifests().GetManifest(ctx, "acme/app", "hotfix", "", false); !errors.Is(err, meta.ErrManifestNotFound) {
				t.Fatalf("after the mirror's deletion: %v", err)
			}
		})
	}
}
