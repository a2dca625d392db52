package gc

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/storage"
)

// TestUploadMaxAge: a session opened longer than gc.uploadMaxAge ago goes
// with its bytes however recently it was written to (a client PATCHing a
// byte a day kept it forever, outside any quota); one within its max age
// and written recently stays, and so does one a request holds a claim on.
func TestUploadMaxAge(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, Options{UploadExpiry: 30 * 24 * time.Hour, UploadMaxAge: 7 * 24 * time.Hour})
			old := e.upload(t, "app", 100, false)
			busy := e.upload(t, "app", 10, false)
			// Eight days on, by the collector's clock, both sessions are
			// older than their max age though written within the idle
			// expiry (30 days): kept active by a PATCH a day. One is being
			// written now.
			e.c.now = func() time.Time { return time.Now().Add(8 * 24 * time.Hour) }
			if _, err := e.db.Uploads().ClaimUpload(ctx, "app", busy, time.Minute); err != nil {
				t.Fatal(err)
			}
			rep, err := e.c.Pass(ctx, false)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Uploads != 1 || rep.UploadBytes != 100 {
				t.Fatalf("expired %d uploads (%d bytes), want 1 (100)", rep.Uploads, rep.UploadBytes)
			}
			if _, err := e.db.Uploads().ClaimUpload(ctx, "app", old, time.Minute); !errors.Is(err, meta.ErrUploadNotFound) || e.exists(storage.UploadRoot(old)) {
				t.Fatalf("the session past its max age survived: %v", err)
			}
			if _, err := e.db.Uploads().GetUpload(ctx, "app", busy); err != nil || !e.exists(storage.UploadRoot(busy)) {
				t.Fatalf("the claimed session was expired: %v", err)
			}

			// Within its max age, a session written recently stays.
			e.c.now = time.Now
			young := e.upload(t, "app", 5, false)
			if rep, err := e.c.Pass(ctx, false); err != nil || rep.Uploads != 0 {
				t.Fatalf("pass within the max age: %+v %v", rep, err)
			}
			if _, err := e.db.Uploads().GetUpload(ctx, "app", young); err != nil {
				t.Fatal(err)
			}
		})
	}
}
