package meta_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// consumeAll hands every event past name's cursor to a function that
// records them, and returns their uuids in the order handed.
func consumeAll(t *testing.T, db *meta.DB, name string) []string {
	t.Helper()
	ctx := context.Background()
	if _, err := db.Outbox().Sequence(ctx, 1000); err != nil {
		t.Fatal(err)
	}
	var got []string
	if _, err := db.Outbox().Consume(ctx, name, 1000, func(_ context.Context, _ meta.Tx, evs []meta.Event) error {
		for _, e := range evs {
			got = append(got, e.UUID)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return got
}

// TestUpgradeFromDispatchedFlag: a store of schema version 11 (the
// outbox's dispatched flag, Berth's SBOMs marked only by an annotation) is
// upgraded: the notification subscriber's cursor comes after exactly the
// events the old fan-out had dispatched, even when they were not a prefix
// of the ids, a new subscriber starts at the end, the flag is gone, and
// the SBOM that carried the annotation is deleted with its subject while
// a client's referrer stays.
func TestUpgradeFromDispatchedFlag(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			dsn := metatest.DSN(t, dialect)
			db, err := meta.OpenAt(ctx, dsn, 11)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for i, dispatched := range []int{1, 0, 1, 0} {
				if err := db.Exec(ctx, "INSERT INTO events (uuid, kind, repository, actor, payload, created_at, dispatched) VALUES (?, 'repo_push', 'acme/app', '', '{}', ?, ?)",
					[]string{"e1", "e2", "e3", "e4"}[i], i, dispatched); err != nil {
					t.Fatal(err)
				}
			}
			img, sbom, client := digest.FromString("image"), digest.FromString("sbom"), digest.FromString("client")
			if err := db.Exec(ctx, "INSERT INTO repositories (name, created_at) VALUES ('acme/app', 1)"); err != nil {
				t.Fatal(err)
			}
			for _, m := range []struct {
				d           digest.Digest
				subject     any
				annotations any
			}{
				{img, nil, nil},
				{sbom, img.String(), `{"dev.berth.sbom":"spdx","org.opencontainers.image.created":"2025-01-01T00:00:00Z"}`},
				{client, img.String(), `{"org.example.note":"dev.berth.sbom is not this"}`},
			} {
				if err := db.Exec(ctx, `INSERT INTO manifests (repository_id, digest, media_type, size, content, subject, annotations, created_at)
					SELECT id, ?, 'application/vnd.oci.image.manifest.v1+json', 2, ?, ?, ?, 1 FROM repositories WHERE name = 'acme/app'`,
					m.d.String(), []byte("{}"), m.subject, m.annotations); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			if err := db.Outbox().Subscribe(ctx, "newcomer"); err != nil {
				t.Fatal(err)
			}
			if got := consumeAll(t, db, "notify"); strings.Join(got, ",") != "e2,e4" {
				t.Fatalf("after the upgrade the notification subscriber got %v, want the undispatched e2,e4", got)
			}
			if got := consumeAll(t, db, "newcomer"); len(got) != 0 {
				t.Fatalf("a new subscriber got %v, want nothing from before it subscribed", got)
			}
			evs, err := db.Outbox().EventsAfter(ctx, 0, 10)
			if err != nil {
				t.Fatal(err)
			}
			pos := map[string]int64{}
			for _, e := range evs {
				pos[e.UUID] = e.Position
			}
			if want := map[string]int64{"e1": 1, "e3": 2, "e2": 3, "e4": 4}; len(pos) != 4 || pos["e1"] != want["e1"] || pos["e3"] != want["e3"] || pos["e2"] != want["e2"] || pos["e4"] != want["e4"] {
				t.Fatalf("positions %v, want %v", pos, want)
			}
			if err := db.Exec(ctx, "SELECT dispatched FROM events"); err == nil {
				t.Fatal("the dispatched flag is still there")
			}
			// After the upgrade both subscribers hear what comes next.
			if err := db.Scans().AppendEvents(ctx, []meta.Event{{UUID: "e5", Kind: meta.EventRepoPush, Repository: "acme/app"}}); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{"notify", "newcomer"} {
				if got := consumeAll(t, db, name); strings.Join(got, ",") != "e5" {
					t.Fatalf("%s got %v, want e5", name, got)
				}
			}
			if err := db.Manifests().DeleteManifest(ctx, "acme/app", img, "test"); err != nil {
				t.Fatal(err)
			}
			refs, err := db.Manifests().Referrers(ctx, "acme/app", img, "")
			if err != nil {
				t.Fatal(err)
			}
			if len(refs) != 1 || refs[0].Digest != client {
				t.Fatalf("referrers left after deleting their subject: %+v, want only the client's", refs)
			}
		})
	}
}

// TestPruneKeepsUnhandledEvents: events a live subscriber has not handled,
// and events not numbered yet, stay past their retention; a subscriber not
// seen for longer than the retention and a week stops holding them.
func TestPruneKeepsUnhandledEvents(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			for _, name := range []string{"live", "gone"} {
				if err := db.Outbox().Subscribe(ctx, name); err != nil {
					t.Fatal(err)
				}
			}
			appendEvents := func(uuids ...string) {
				var evs []meta.Event
				for _, u := range uuids {
					evs = append(evs, meta.Event{UUID: u, Kind: "test", Repository: "acme/app", Data: json.RawMessage(`{}`)})
				}
				if err := db.Scans().AppendEvents(ctx, evs); err != nil {
					t.Fatal(err)
				}
			}
			appendEvents("a", "b", "c")
			for _, name := range []string{"live", "notify"} {
				consumeAll(t, db, name)
			}
			appendEvents("unnumbered")
			prune := func() []string {
				time.Sleep(2 * time.Millisecond)
				if _, err := db.Collector().Prune(ctx, meta.Retention{Events: time.Microsecond}, false); err != nil {
					t.Fatal(err)
				}
				evs, err := db.Outbox().EventsAfter(ctx, 0, 100)
				if err != nil {
					t.Fatal(err)
				}
				var left []string
				for _, e := range evs {
					left = append(left, e.UUID)
				}
				return left
			}
			if left := prune(); strings.Join(left, ",") != "a,b,c,unnumbered" {
				t.Fatalf("left %v: gone has handled none of a, b, c", left)
			}
			if err := db.SeenAt(ctx, "gone", time.Now().Add(-8*24*time.Hour)); err != nil {
				t.Fatal(err)
			}
			if left := prune(); strings.Join(left, ",") != "unnumbered" {
				t.Fatalf("left %v, want only the event not numbered yet", left)
			}
			// Numbered, it is held by the subscribers that have not had it.
			if _, err := db.Outbox().Sequence(ctx, 10); err != nil {
				t.Fatal(err)
			}
			if left := prune(); strings.Join(left, ",") != "unnumbered" {
				t.Fatalf("left %v, want the event live subscribers have not handled", left)
			}
			for _, name := range []string{"live", "notify"} {
				consumeAll(t, db, name)
			}
			if left := prune(); len(left) != 0 {
				t.Fatalf("left %v, want nothing", left)
			}
		})
	}
}
