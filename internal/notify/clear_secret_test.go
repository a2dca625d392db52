package notify_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/events"
	"github.com/berth-dev/berth/internal/jobs"
	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/notify"
)

// TestClearSecretSigned: a webhook stored with its signing secret in
// clear after the start (by an older replica during an upgrade) has its
// first delivery signed with that secret, as a receiver that verifies
// signatures (Tekton's github interceptor) requires, and its secret
// sealed.
func TestClearSecretSigned(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			db := metatest.Open(t, dialect)
			type request struct {
				body      []byte
				signature string
			}
			var mu sync.Mutex
			var got []request
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				body, _ := io.ReadAll(r.Body)
				mu.Lock()
				got = append(got, request{body, r.Header.Get(events.SignatureHeader)})
				mu.Unlock()
				w.WriteHeader(http.StatusNoContent)
			}))
			t.Cleanup(srv.Close)
			startWith(t, ctx, db, notify.Options{}, jobs.Options{Backoff: func(int) time.Duration { return 20 * time.Millisecond }})

			const secret = "legacy-hmac-secret-0123"
			cfg, _ := json.Marshal(map[string]any{"url": srv.URL, "secret": secret})
			n, err := db.Notifications().CreateNotification(ctx, meta.Notification{UUID: "00000000-0000-0000-0000-0000000000a1",
				Scope: meta.ScopeRegistry, Event: meta.EventRepoPush, Method: "webhook", Config: cfg})
			if err != nil {
				t.Fatal(err)
			}
			push(t, db, "x/app", "v1", 0)
			waitFor(t, "the delivery", 30*time.Second, func() bool {
				mu.Lock()
				defer mu.Unlock()
				return len(got) >= 1
			})
			mu.Lock()
			first := got[0]
			mu.Unlock()
			if !events.Verify([]byte(secret), first.body, first.signature) {
				t.Errorf("first delivery's %s = %q: not the signature of its body with the stored secret", events.SignatureHeader, first.signature)
			}
			fresh, err := db.Notifications().NotificationByID(ctx, n.ID)
			if err != nil {
				t.Fatal(err)
			}
			if strings.Contains(string(fresh.Config), secret) || !strings.Contains(string(fresh.Config), "secret_sealed") {
				t.Errorf("secret not sealed at the first delivery: %s", fresh.Config)
			}
		})
	}
}
