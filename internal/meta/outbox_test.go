package meta_test

import (
	"context"
	"encoding/json"
	"errors"
	"slices"
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

// TestSequenceConsumeAll: events numbered and handed to the subscribers
// in one transaction: each subscriber gets its batch; one whose handler
// fails has its writes and its cursor rolled back (its enqueue wakes
// nobody) and gets the same events again, while the numbering and the
// others' writes and cursors commit; a name without a cursor is reported
// as not subscribed; with nothing new to number, nothing is handed and
// the writer is not taken.
func TestSequenceConsumeAll(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			var wakes wakeLog
			db, err := meta.Open(ctx, metatest.DSN(t, d), meta.WakeOnEnqueue(wakes.wake))
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			for _, name := range []string{"a", "b", "c", "behind"} {
				if err := db.Outbox().Subscribe(ctx, name); err != nil {
					t.Fatal(err)
				}
			}
			appendEvent(t, db, "e0") // numbered
			consumeAll(t, db, "a")
			consumeAll(t, db, "b")
			consumeAll(t, db, "c")
			// Committed, not numbered yet.
			if err := db.Scans().AppendEvents(ctx, []meta.Event{{UUID: "e1", Kind: meta.EventRepoPush, Repository: "acme/app"}, {UUID: "e2", Kind: meta.EventRepoPush, Repository: "acme/app"}}); err != nil {
				t.Fatal(err)
			}
			refused := errors.New("refused")
			seen := map[string][]string{}
			handler := func(name string, fail bool) meta.Consumer {
				return meta.Consumer{Name: name, Fn: func(ctx context.Context, tx meta.Tx, evs []meta.Event) error {
					for _, e := range evs {
						seen[name] = append(seen[name], e.UUID)
					}
					if _, err := db.Jobs().EnqueueIn(ctx, tx, meta.Job{Queue: "q-" + name}); err != nil {
						return err
					}
					if fail {
						return refused
					}
					return nil
				}}
			}
			cs := []meta.Consumer{handler("a", false), handler("b", true), handler("c", false), handler("behind", false), handler("gone", false)}
			numbered, handled, errs, err := db.Outbox().SequenceConsumeAll(ctx, 10, cs)
			if err != nil {
				t.Fatal(err)
			}
			if numbered != 2 || !slices.Equal(handled, []int{2, 0, 2, 3, 0}) {
				t.Fatalf("numbered %d, handled %v; want 2, [2 0 2 3 0]", numbered, handled)
			}
			if errs[0] != nil || !errors.Is(errs[1], refused) || errs[2] != nil || errs[3] != nil || !errors.Is(errs[4], meta.ErrNotSubscribed) {
				t.Fatalf("errs = %v", errs)
			}
			if got := wakes.take(); !slices.Equal(got, []string{"q-a", "q-c", "q-behind"}) {
				t.Fatalf("woke %q, want [q-a q-c q-behind]", got)
			}
			if got := seen["behind"]; !slices.Equal(got, []string{"e0", "e1", "e2"}) {
				t.Fatalf("the subscriber behind was handed %v, want [e0 e1 e2]", got)
			}
			for _, name := range []string{"a", "b", "c"} {
				jobs, err := db.Jobs().Jobs(ctx, "q-"+name, "", 10)
				if err != nil {
					t.Fatal(err)
				}
				if want := map[bool]int{true: 0, false: 1}[name == "b"]; len(jobs) != want {
					t.Fatalf("subscriber %s's writes: %d jobs, want %d", name, len(jobs), want)
				}
			}
			// Nothing new: nothing is handed, not even to b.
			numbered, handled, _, err = db.Outbox().SequenceConsumeAll(ctx, 10, cs)
			if err != nil || numbered != 0 || slices.Max(handled) != 0 {
				t.Fatalf("with nothing new: numbered %d, handled %v, %v", numbered, handled, err)
			}
			// b gets the same events again; the others are at the end.
			if got := consumeAll(t, db, "b"); !slices.Equal(got, []string{"e1", "e2"}) {
				t.Fatalf("b after its failure got %v, want [e1 e2]", got)
			}
			for _, name := range []string{"a", "c", "behind"} {
				if got := consumeAll(t, db, name); len(got) != 0 {
					t.Fatalf("%s got %v again", name, got)
				}
			}
		})
	}
}

// TestBuiltinSubscribersFromCreation: the built-in subscribers' cursors
// exist from the database's creation, so an event committed before any
// process subscribed them (a push served while the server's dispatcher
// was starting, a `berth import` before the first serve) reaches each of
// them; a store upgraded to that schema puts the cursors it adds at the
// feed's head, as subscribing did before.
func TestBuiltinSubscribersFromCreation(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			if err := db.Scans().AppendEvents(ctx, []meta.Event{{UUID: "early", Kind: meta.EventRepoPush, Repository: "acme/app"}}); err != nil {
				t.Fatal(err)
			}
			// Not subscribed by any process yet: no lag is reported.
			if f, err := db.Figures(ctx); err != nil || len(f.FeedLag) > 1 || f.FeedLag[meta.SubscriberNotify] != 0 {
				t.Fatalf("lag %v (%v), want none of the subscribers no process subscribed yet", f.FeedLag, err)
			}
			for _, name := range meta.BuiltinSubscribers() {
				if got := consumeAll(t, db, name); strings.Join(got, ",") != "early" {
					t.Fatalf("%s got %v, want the event committed before anyone subscribed", name, got)
				}
			}
			// Handled once, each is listed with its lag.
			if err := db.Scans().AppendEvents(ctx, []meta.Event{{UUID: "later", Kind: meta.EventRepoPush, Repository: "acme/app"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := db.Outbox().Sequence(ctx, 10); err != nil {
				t.Fatal(err)
			}
			if f, err := db.Figures(ctx); err != nil || len(f.FeedLag) != 4 || f.FeedLag[meta.SubscriberScan] != 1 {
				t.Fatalf("lag %v (%v), want each subscriber's 1", f.FeedLag, err)
			}

			old, err := meta.OpenAt(ctx, metatest.DSN(t, dialect), 23)
			if err != nil {
				t.Fatal(err)
			}
			defer old.Close()
			if err := old.Scans().AppendEvents(ctx, []meta.Event{{UUID: "before-upgrade", Kind: meta.EventRepoPush, Repository: "acme/app"}}); err != nil {
				t.Fatal(err)
			}
			if _, err := old.Outbox().Sequence(ctx, 10); err != nil {
				t.Fatal(err)
			}
			if err := old.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			if err := old.Scans().AppendEvents(ctx, []meta.Event{{UUID: "after-upgrade", Kind: meta.EventRepoPush, Repository: "acme/app"}}); err != nil {
				t.Fatal(err)
			}
			for _, name := range []string{meta.SubscriberScan, meta.SubscriberGraph, meta.SubscriberGate} {
				if got := consumeAll(t, old, name); strings.Join(got, ",") != "after-upgrade" {
					t.Fatalf("%s, added by the upgrade, got %v, want only what came after it", name, got)
				}
			}
			if got := consumeAll(t, old, meta.SubscriberNotify); strings.Join(got, ",") != "before-upgrade,after-upgrade" {
				t.Fatalf("notify, subscribed since migration 12, got %v, want both", got)
			}
		})
	}
}
