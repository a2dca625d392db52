package s3_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/s3"
	"github.com/berth-dev/berth/internal/testenv/s3server"
)

// TestRangeReaderAsksForTheRange: a bounded read is one GET whose Range
// ends where the read does, so that S3 sends only the bytes asked for (a
// Reader from an offset asks for the whole rest of the object, and a
// client's 100-byte range of a large layer cost the layer's transfer and
// a torn-down connection). A range past the end is cut there.
func TestRangeReaderAsksForTheRange(t *testing.T) {
	srv := s3server.Start(t)
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var ranges []string
	proxy := httputil.NewSingleHostReverseProxy(target)
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodGet {
			mu.Lock()
			ranges = append(ranges, r.Header.Get("Range"))
			mu.Unlock()
		}
		proxy.ServeHTTP(w, r)
	}))
	defer front.Close()
	t.Setenv("AWS_CA_BUNDLE", "")
	ctx := context.Background()
	d, err := s3.Open(ctx, s3.Options{Endpoint: front.URL, Region: srv.Region, Bucket: srv.Bucket(t), PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: s3.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	content := bytes.Repeat([]byte("0123456789abcdef"), 64<<10) // 1 MiB
	if err := d.PutContent(ctx, "/blobs/x", content); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		offset, length int64
		wantRange      string
		want           []byte
	}{
		{0, 100, "bytes=0-99", content[:100]},
		{1000, 24, "bytes=1000-1023", content[1000:1024]},
		{int64(len(content)) - 10, 100, "bytes=1048566-1048665", content[len(content)-10:]},
	} {
		mu.Lock()
		ranges = nil
		mu.Unlock()
		rc, err := storage.OpenRange(ctx, d, "/blobs/x", c.offset, c.length)
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(rc)
		rc.Close()
		if err != nil || !bytes.Equal(got, c.want) {
			t.Fatalf("read %d+%d: %d bytes (err %v), want %d", c.offset, c.length, len(got), err, len(c.want))
		}
		mu.Lock()
		if len(ranges) != 1 || ranges[0] != c.wantRange {
			t.Errorf("read %d+%d asked S3 for %q, want one GET of %q", c.offset, c.length, ranges, c.wantRange)
		}
		mu.Unlock()
	}
}
