package notify_test

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/feed"
	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/wire"
)

// receiver is a webhook receiver whose behaviour the test switches.
type receiver struct {
	mu       sync.Mutex
	mode     string              // "down" (503 without reading), "500", "slow", "ok", or any status code
	modes    map[string]string   // repository -> its own mode, over mode
	seen     map[string]int      // idempotency key -> deliveries accepted
	order    map[string][]string // repository -> event ids accepted, in order
	headers  []http.Header       // of the deliveries accepted
	attempts int
	last     time.Time // when a new event was last accepted
	srv      *httptest.Server
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{mode: "ok", modes: map[string]string{}, seen: map[string]int{}, order: map[string][]string{}}
	r.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		var p struct {
			Repository string `json:"repository"`
			EventID    string `json:"event_id"`
		}
		json.Unmarshal(body, &p)
		r.mu.Lock()
		mode := r.mode
		if m, ok := r.modes[p.Repository]; ok {
			mode = m
		}
		r.attempts++
		r.mu.Unlock()
		switch mode {
		case "down":
			http.Error(w, "unavailable", http.StatusServiceUnavailable)
			return
		case "500":
			http.Error(w, "boom", http.StatusInternalServerError)
			return
		case "slow":
			<-req.Context().Done() // answers only after Berth gave up (10 s timeout)
			return
		}
		if code, err := strconv.Atoi(mode); err == nil {
			http.Error(w, "status "+mode, code)
			return
		}
		r.mu.Lock()
		key := req.Header.Get("Idempotency-Key")
		r.seen[key]++
		if r.seen[key] == 1 {
			r.order[p.Repository] = append(r.order[p.Repository], p.EventID)
			r.last = time.Now()
		}
		r.headers = append(r.headers, req.Header.Clone())
		r.mu.Unlock()
		w.WriteHeader(http.StatusNoContent)
	}))
	t.Cleanup(r.srv.Close)
	return r
}

func (r *receiver) set(mode string) {
	r.mu.Lock()
	r.mode = mode
	r.mu.Unlock()
}

// setRepo sets the mode of the deliveries of one repository's events.
func (r *receiver) setRepo(repo, mode string) {
	r.mu.Lock()
	r.modes[repo] = mode
	r.mu.Unlock()
}

type instance struct {
	db  *meta.DB
	svc *notify.Service
}

func start(t *testing.T, ctx context.Context, db *meta.DB) *instance {
	t.Helper()
	return startWith(t, ctx, db, notify.Options{}, jobs.Options{Backoff: func(int) time.Duration { return 100 * time.Millisecond }})
}

// startWith starts a service and its workers with options beyond the
// tests' defaults.
func startWith(t *testing.T, ctx context.Context, db *meta.DB, opts notify.Options, wopts jobs.Options) *instance {
	t.Helper()
	key, _ := auth.LoadOrCreateKey("", t.TempDir()+"/k")
	sealer, _ := auth.NewSealer(key)
	if opts.Guard == nil {
		guard, err := events.NewGuard([]string{"loopback"})
		if err != nil {
			t.Fatal(err)
		}
		opts.Guard = guard
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	log := opts.Logger
	opts.Server = events.Server{Host: "registry.example:5000", Scheme: "https"}
	svc := notify.New(wire.NotifyStores(db), sealer, opts)
	wopts.Concurrency, wopts.Lease, wopts.PollInterval, wopts.Logger = 4, 30*time.Second, 50*time.Millisecond, log
	w := jobs.New(db.Jobs(), meta.NotifyQueue, svc.Deliver, wopts)
	go w.Run(ctx)
	// As the server does: secrets stored in clear are sealed first, then
	// the feed's dispatcher runs the notification subscriber.
	if _, err := svc.SealStoredHeaders(ctx); err != nil {
		t.Fatal(err)
	}
	d := feed.New(db.Outbox(), []feed.Subscriber{notify.NewSubscriber(wire.NotifyStores(db))}, feed.Options{Poll: 50 * time.Millisecond, Logger: log})
	go d.Run(ctx)
	return &instance{db: db, svc: svc}
}

// push records a manifest push (and its repo_push event) as the registry
// does, in one transaction.
func push(t *testing.T, db *meta.DB, repo, tag string, i int) string {
	t.Helper()
	ctx := context.Background()
	cfg := meta.Blob{Digest: digest.FromString("cfg"), Size: 3}
	if _, err := db.Blobs().StoreBlob(ctx, repo, cfg, meta.UploadClaim{}, meta.Writer{}, metatest.NoBytes); err != nil {
		t.Fatal(err)
	}
	content := []byte(strings.Repeat("m", i+1))
	m := meta.Manifest{Digest: digest.FromBytes(content), MediaType: "application/vnd.oci.image.manifest.v1+json", Content: content}
	if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: repo, Manifest: m, Refs: []meta.Ref{{Digest: cfg.Digest}}, Tag: tag, Actor: "alice"}); err != nil {
		t.Fatal(err)
	}
	return m.Digest.String()
}

// createOrg creates an organization: its notifications are created only
// while it exists.
func createOrg(t *testing.T, db *meta.DB, name string) {
	t.Helper()
	if _, err := db.Organizations().CreateOrganization(context.Background(), name, 0); err != nil {
		t.Fatal(err)
	}
}

func waitFor(t *testing.T, what string, d time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestDeliveryThroughOutages: a receiver that is down, then failing, then
// healthy gets every event exactly once per idempotency key, in order per
// repository.
func TestDeliveryThroughOutages(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			db := metatest.Open(t, dialect)
			createOrg(t, db, "acme")
			rcv := newReceiver(t)
			inst := start(t, ctx, db)
			n, err := inst.svc.Create(ctx, meta.ScopeOrganization, "acme", "alice", notify.Input{Event: "repo_push", Method: "webhook",
				Config: map[string]any{"url": rcv.srv.URL}})
			if err != nil {
				t.Fatal(err)
			}
			rcv.set("down")
			var want []string
			for i := 0; i < 6; i++ {
				push(t, db, []string{"acme/a", "acme/b"}[i%2], "v1", i)
			}
			push(t, db, "other/c", "v1", 99) // another organization: not delivered
			waitFor(t, "failed attempts while down", 10*time.Second, func() bool {
				at, _ := db.Notifications().Attempts(ctx, n.ID, 100)
				return len(at) >= 2
			})
			rcv.set("slow")
			waitFor(t, "an attempt that timed out", 30*time.Second, func() bool {
				at, _ := db.Notifications().Attempts(ctx, n.ID, 1)
				return len(at) == 1 && at[0].StatusCode == 0 && at[0].Error != ""
			})
			rcv.set("500")
			time.Sleep(300 * time.Millisecond)
			rcv.set("ok")
			evs, _ := db.Outbox().EventsAfter(ctx, 0, 100)
			for _, e := range evs {
				if e.Kind == meta.EventRepoPush && strings.HasPrefix(e.Repository, "acme/") {
					want = append(want, e.UUID)
				}
			}
			waitFor(t, "every event delivered", 30*time.Second, func() bool {
				rcv.mu.Lock()
				defer rcv.mu.Unlock()
				return len(rcv.seen) == len(want)
			})
			time.Sleep(300 * time.Millisecond) // no late duplicates
			rcv.mu.Lock()
			defer rcv.mu.Unlock()
			for k, c := range rcv.seen {
				if c != 1 {
					t.Errorf("event %s accepted %d times", k, c)
				}
			}
			for repo, got := range rcv.order {
				var exp []string
				for _, e := range evs {
					if e.Repository == repo && e.Kind == meta.EventRepoPush {
						exp = append(exp, e.UUID)
					}
				}
				if strings.Join(got, ",") != strings.Join(exp, ",") {
					t.Errorf("%s delivered out of order: %v, want %v", repo, got, exp)
				}
			}
			if _, ok := rcv.order["other/c"]; ok {
				t.Error("an event of another organization was delivered")
			}
			fresh, _ := db.Notifications().NotificationByID(ctx, n.ID)
			if fresh.NumberOfFailures != 0 {
				t.Errorf("number_of_failures = %d after recovering, want 0 (Quay resets on success)", fresh.NumberOfFailures)
			}
		})
	}
}

// TestFailureCounting: with a receiver that answers 500, an event whose
// first 5 attempts failed counts one failure; at 3 the notification stops
// firing (no more requests) while its deliveries wait; after a reset they
// all arrive, in order, events pushed meanwhile included.
func TestFailureCounting(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	db := metatest.Open(t, "sqlite")
	createOrg(t, db, "acme")
	rcv := newReceiver(t)
	rcv.set("500")
	inst := start(t, ctx, db)
	n, err := inst.svc.Create(ctx, meta.ScopeOrganization, "acme", "alice", notify.Input{Event: "repo_push", Method: "webhook",
		Config: map[string]any{"url": rcv.srv.URL}})
	if err != nil {
		t.Fatal(err)
	}
	repos := []string{"acme/a", "acme/b", "acme/c"} // three streams, three failing events
	for i, r := range repos {
		push(t, db, r, "v1", i)
	}
	waitFor(t, "3 failed events", 60*time.Second, func() bool {
		fresh, _ := db.Notifications().NotificationByID(ctx, n.ID)
		return fresh.NumberOfFailures >= 3
	})
	time.Sleep(300 * time.Millisecond)
	rcv.mu.Lock()
	stopped := rcv.attempts
	rcv.mu.Unlock()
	at, _ := db.Notifications().Attempts(ctx, n.ID, 1000)
	if len(at) < 15 || at[0].StatusCode != 500 || at[0].Error == "" {
		t.Fatalf("%d attempts recorded (want 5 per failed event), last %+v", len(at), at[0])
	}
	// Disabled: no more requests, even for a new push.
	push(t, db, "acme/a", "v2", 10)
	time.Sleep(800 * time.Millisecond)
	rcv.mu.Lock()
	after := rcv.attempts
	rcv.mu.Unlock()
	if after != stopped {
		t.Fatalf("a disabled notification sent %d more requests", after-stopped)
	}
	// Reset with a healthy receiver: every event arrives, in order.
	rcv.set("ok")
	if err := db.Notifications().ResetNotificationFailures(ctx, n.ID); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "every event after the reset", 30*time.Second, func() bool {
		rcv.mu.Lock()
		defer rcv.mu.Unlock()
		return len(rcv.seen) == 4
	})
	rcv.mu.Lock()
	defer rcv.mu.Unlock()
	if len(rcv.order["acme/a"]) != 2 {
		t.Fatalf("acme/a got %v", rcv.order["acme/a"])
	}
	if fresh, _ := db.Notifications().NotificationByID(ctx, n.ID); fresh.NumberOfFailures != 0 {
		t.Fatalf("number_of_failures = %d after a success", fresh.NumberOfFailures)
	}
}

// TestTwoProcessesDeliverOnce: two Berth processes (two store handles,
// each with its feed dispatcher and workers) on one database deliver each event
// once.
func TestTwoProcessesDeliverOnce(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			dsn := metatest.DSN(t, dialect)
			open := func() *meta.DB {
				db, err := meta.Open(ctx, dsn)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { db.Close() })
				return db
			}
			a, b := open(), open()
			rcv := newReceiver(t)
			ia := start(t, ctx, a)
			start(t, ctx, b)
			if _, err := ia.svc.Create(ctx, meta.ScopeRegistry, "", "root", notify.Input{Event: "repo_push", Method: "webhook",
				Config: map[string]any{"url": rcv.srv.URL}}); err != nil {
				t.Fatal(err)
			}
			const pushes = 40
			for i := 0; i < pushes; i++ {
				push(t, []*meta.DB{a, b}[i%2], []string{"x/one", "x/two", "y/three"}[i%3], "t", i)
			}
			waitFor(t, "all deliveries", 60*time.Second, func() bool {
				rcv.mu.Lock()
				defer rcv.mu.Unlock()
				return len(rcv.seen) == pushes
			})
			time.Sleep(500 * time.Millisecond)
			rcv.mu.Lock()
			defer rcv.mu.Unlock()
			var dup []string
			for k, c := range rcv.seen {
				if c != 1 {
					dup = append(dup, k)
				}
			}
			sort.Strings(dup)
			if len(dup) > 0 {
				t.Fatalf("events delivered more than once: %v", dup)
			}
		})
	}
}
