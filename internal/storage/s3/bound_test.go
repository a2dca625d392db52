package s3

import (
	"context"
	"errors"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/testenv/s3server"
)

func isHead(r *http.Request) bool { return r.Method == http.MethodHead }

func isListObjects(r *http.Request) bool {
	return r.Method == http.MethodGet && r.URL.Query().Get("list-type") == "2"
}

func isListMultipart(r *http.Request) bool {
	return r.Method == http.MethodGet && r.URL.Query().Has("uploads")
}

func isDeleteObjects(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Query().Has("delete")
}

// TestStalledCallsWithoutBytesTimeOut: the calls that move no bytes (a
// HEAD, a listing, a deletion) are bounded by Timeouts.Call, retries
// included, not only by the wait for each attempt's headers: StoreBlob
// stats the blob's object inside its transaction, under the digest's
// lock, with a context that is never cancelled. With an endpoint that
// stops answering one kind of request and an hour's header timeout, each
// fails as a transient error within a few seconds.
func TestStalledCallsWithoutBytesTimeOut(t *testing.T) {
	srv := s3server.Start(t)
	to := Timeouts{ResponseHeader: time.Hour, Call: time.Second}
	const file = "/blobs/sha256/ab/abcd"
	cases := []struct {
		name  string
		stall func(*http.Request) bool
		call  func(ctx context.Context, d *Driver) error
	}{
		{"Stat: HeadObject", isHead, func(ctx context.Context, d *Driver) error { _, err := d.Stat(ctx, file); return err }},
		{"Stat of the root: HeadBucket", isHead, func(ctx context.Context, d *Driver) error { _, err := d.Stat(ctx, "/"); return err }},
		{"Stat of a directory: ListObjectsV2", isListObjects, func(ctx context.Context, d *Driver) error { _, err := d.Stat(ctx, "/blobs"); return err }},
		{"List: ListObjectsV2", isListObjects, func(ctx context.Context, d *Driver) error { _, err := d.List(ctx, "/blobs"); return err }},
		{"Delete: HeadObject", isHead, func(ctx context.Context, d *Driver) error { return d.Delete(ctx, file) }},
		{"Delete: ListObjectsV2", isListObjects, func(ctx context.Context, d *Driver) error { return d.Delete(ctx, file) }},
		{"Delete: ListMultipartUploads", isListMultipart, func(ctx context.Context, d *Driver) error { return d.Delete(ctx, file) }},
		{"Delete: DeleteObjects", isDeleteObjects, func(ctx context.Context, d *Driver) error { return d.Delete(ctx, file) }},
		{"MultipartUploads: ListMultipartUploads", isListMultipart, func(ctx context.Context, d *Driver) error {
			_, err := d.MultipartUploads(ctx, "/uploads", time.Now())
			return err
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := startProxy(t, srv, c.stall)
			d := openAt(t, srv, p.URL, MinPartSize, to)
			ctx := context.Background()
			// Through the proxy's front, unstalled: PutContent is a PUT.
			if err := d.PutContent(ctx, file, []byte("blob")); err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			start := time.Now()
			go func() { done <- c.call(context.WithoutCancel(ctx), d) }()
			var err error
			select {
			case err = <-done:
			case <-time.After(20 * time.Second):
				t.Fatal("the call still waits for the stalled S3 endpoint after 20 s")
			}
			if err == nil || errors.Is(err, storage.ErrNotFound) || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("call to a stalled endpoint: %v; want a transient error", err)
			}
			if p.count(c.stall) == 0 {
				t.Fatal("the stalled request was not sent")
			}
			t.Logf("failed after %v: %v", time.Since(start).Round(time.Millisecond), err)
		})
	}
}
