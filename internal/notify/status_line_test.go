package notify_test

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
	"github.com/berth-dev/berth/internal/testenv/rawhttp"
)

// TestStatusLineSecretNotRecorded: a receiver that answers
// "HTTP/1.1 500 <the notification's header secret>" gets a failed
// attempt recorded with its status code, and without the secret.
func TestStatusLineSecretNotRecorded(t *testing.T) {
	const apiKey = "key-status-line-0123456789"
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rcv := rawhttp.Server(t, func(req *http.Request) string { return "HTTP/1.1 500 " + req.Header.Get("X-Api-Key") })

	db := metatest.Open(t, "sqlite")
	createOrg(t, db, "acme")
	inst := startWith(t, ctx, db, notify.Options{}, jobs.Options{Backoff: func(int) time.Duration { return time.Hour }})
	n, err := inst.svc.Create(ctx, meta.ScopeOrganization, "acme", "alice", notify.Input{Event: "repo_push", Method: "webhook",
		Config: map[string]any{"url": rcv + "/hook", "headers": map[string]any{"X-Api-Key": apiKey}}})
	if err != nil {
		t.Fatal(err)
	}
	push(t, db, "acme/a", "v1", 0)
	var at []meta.Attempt
	waitFor(t, "the failed attempt", 30*time.Second, func() bool {
		at, _ = db.Notifications().Attempts(ctx, n.ID, 10)
		return len(at) >= 1
	})
	all, _ := json.Marshal(at)
	if at[0].StatusCode != http.StatusInternalServerError || !strings.Contains(at[0].Error, "500") {
		t.Errorf("attempt %s: want its 500", all)
	}
	if strings.Contains(string(all), apiKey) {
		t.Errorf("the recorded attempt carries the header's value: %s", all)
	}
}
