package registry_test

import (
	"context"
	"net/http"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/gc"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/registry"
	"github.com/berth-dev/berth/internal/testenv"
	"github.com/berth-dev/berth/internal/wire"
)

// TestUploadMaxAge: a session kept active by PATCHes, never idle for
// gc.uploadExpiry, is expired by garbage collection once it is older than
// gc.uploadMaxAge (here 2s), and a later PATCH or PUT is answered 404
// BLOB_UPLOAD_UNKNOWN, as for a session that expired idle.
func TestUploadMaxAge(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			env := testenv.New(t, testenv.Options{Dialect: dialect, Open: true, Registry: registry.Options{}})
			reg := &testRegistry{t: t, url: env.URL, host: env.Host}
			collector := gc.New(wire.GCStores(env.DB, 0), env.Storage, gc.Options{UploadExpiry: time.Hour, UploadMaxAge: 2 * time.Second})
			loc := reg.startSession("app")
			chunk := []byte("0123456789")
			patch := func() *http.Response {
				resp, body := reg.do("PATCH", loc, chunk)
				if resp.StatusCode != http.StatusAccepted {
					t.Fatalf("PATCH: %d %s", resp.StatusCode, body)
				}
				return resp
			}
			patch()
			time.Sleep(1200 * time.Millisecond)
			patch()
			if rep, err := collector.Pass(ctx, false); err != nil || rep.Uploads != 0 {
				t.Fatalf("pass within the max age: %+v %v", rep, err)
			}
			time.Sleep(1200 * time.Millisecond)
			patch() // written a moment ago: not idle
			rep, err := collector.Pass(ctx, false)
			if err != nil || rep.Uploads != 1 || rep.UploadBytes != 30 {
				t.Fatalf("pass past the max age: %+v %v, want 1 upload of 30 bytes", rep, err)
			}
			resp, body := reg.do("PATCH", loc, chunk)
			expectError(t, resp, body, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
			resp, body = reg.do("PUT", loc+"?digest="+digestOf(chunk).String(), nil)
			expectError(t, resp, body, http.StatusNotFound, "BLOB_UPLOAD_UNKNOWN")
		})
	}
}
