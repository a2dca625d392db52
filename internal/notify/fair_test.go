package notify_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
)

// TestSlowTenantDoesNotHoldTheWorkers: an organization whose webhooks'
// receivers hold every delivery keeps all the delivery workers only while
// no one else has a delivery ready: once another organization pushes, the
// first worker that frees up delivers that organization's event, before
// the older deliveries of the first.
func TestSlowTenantDoesNotHoldTheWorkers(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	arrived := make(chan string, 100)
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrived <- r.URL.Path
		select {
		case <-release:
		case <-r.Context().Done():
		}
		w.WriteHeader(http.StatusNoContent)
	}))
	defer srv.Close()
	defer close(release)

	db := metatest.Open(t, "sqlite")
	createOrg(t, db, "acme")
	createOrg(t, db, "bravo")
	inst := start(t, ctx, db) // 4 workers
	hook := func(org, path string) {
		t.Helper()
		if _, err := inst.svc.Create(ctx, meta.ScopeOrganization, org, "alice", notify.Input{Event: "repo_push", Method: "webhook",
			Config: map[string]any{"url": srv.URL + path}}); err != nil {
			t.Fatal(err)
		}
	}
	const acmeHooks = 8
	for i := range acmeHooks {
		hook("acme", fmt.Sprintf("/acme/%d", i))
	}
	hook("bravo", "/bravo")
	next := func() string {
		t.Helper()
		select {
		case p := <-arrived:
			return p
		case <-time.After(5 * time.Second):
			t.Fatal("no delivery arrived")
			return ""
		}
	}

	push(t, db, "acme/app", "v1", 0)
	for range 4 {
		if p := next(); !strings.HasPrefix(p, "/acme/") {
			t.Fatalf("delivery to %s, want acme's", p)
		}
	}
	push(t, db, "bravo/app", "v1", 1)
	waitFor(t, "bravo's delivery queued", 5*time.Second, func() bool {
		js, _ := db.Jobs().Jobs(ctx, meta.NotifyQueue, meta.JobPending, 100)
		return len(js) == acmeHooks-4+1
	})
	release <- struct{}{} // one of acme's deliveries ends: its worker is free
	if p := next(); p != "/bravo" {
		t.Fatalf("the worker freed by acme delivered to %s, want bravo's receiver (acme has 3 running, bravo none)", p)
	}
}
