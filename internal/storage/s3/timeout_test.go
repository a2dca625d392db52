package s3

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/testenv/s3server"
)

// frontProxy stands in front of the test S3 server: it passes requests
// on and records them, and never answers those that stall says to (their
// body is read, no answer comes), as an S3 endpoint that stopped
// answering.
type frontProxy struct {
	URL  string
	mu   sync.Mutex
	reqs []*http.Request
}

func startProxy(t *testing.T, srv *s3server.Server, stall func(*http.Request) bool) *frontProxy {
	t.Helper()
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target) // keeps the Host the request was signed for
	p := &frontProxy{}
	stop := make(chan struct{})
	h := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.reqs = append(p.reqs, r.Clone(context.Background()))
		p.mu.Unlock()
		if stall != nil && stall(r) {
			io.Copy(io.Discard, r.Body)
			select {
			case <-stop:
			case <-r.Context().Done():
			}
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(h.Close)
	t.Cleanup(func() { close(stop) }) // before Close, which waits for the handlers
	p.URL = h.URL
	return p
}

// count is the number of requests seen that match.
func (p *frontProxy) count(match func(*http.Request) bool) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, r := range p.reqs {
		if match(r) {
			n++
		}
	}
	return n
}

// openAt opens a driver on the test server through endpoint.
func openAt(t *testing.T, srv *s3server.Server, endpoint string, partSize int64, to Timeouts) *Driver {
	t.Helper()
	t.Setenv("AWS_CA_BUNDLE", "") // the test server speaks plain HTTP
	d, err := Open(context.Background(), Options{Endpoint: endpoint, Region: srv.Region, Bucket: srv.Bucket(t), PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: partSize, Timeouts: to})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func isUploadPart(r *http.Request) bool {
	return r.Method == http.MethodPut && r.URL.Query().Has("partNumber") && r.Header.Get("X-Amz-Copy-Source") == ""
}

// TestStalledS3CallsTimeOut: with an S3 endpoint that takes a part and
// never answers, the write that sends the part fails, as a transient
// error (neither storage.ErrNotFound, which would make the client start
// the blob over, nor a deadline the registry takes for a slow client),
// instead of waiting for as long as TCP retransmits or forever. Each
// bound is checked alone: the wait for the answer's headers, and the
// bound of the call itself (which also covers a body that the endpoint
// stops reading). The timeouts are lowered; the test only waits for the
// write to end, with a guard far above them.
func TestStalledS3CallsTimeOut(t *testing.T) {
	srv := s3server.Start(t)
	cases := []struct {
		name     string
		to       Timeouts
		partSize int64
		write    func(w storage.FileWriter) error
	}{
		{"headers of a part sent while writing", Timeouts{ResponseHeader: 300 * time.Millisecond, Call: time.Hour, MinRate: 1 << 20}, MinPartSize,
			func(w storage.FileWriter) error { _, err := w.Write(make([]byte, MinPartSize)); return err }},
		{"call bound of the last part sent at Close", Timeouts{ResponseHeader: time.Hour, Call: time.Second, MinRate: 1 << 30}, DefaultPartSize,
			func(w storage.FileWriter) error {
				if _, err := w.Write(make([]byte, MinPartSize+1)); err != nil {
					return err
				}
				return w.Close()
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := startProxy(t, srv, isUploadPart)
			d := openAt(t, srv, p.URL, c.partSize, c.to)
			w, err := d.Writer(context.Background(), storage.UploadPath(storage.NewUploadID()), 0)
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan error, 1)
			go func() { done <- c.write(w) }()
			select {
			case err = <-done:
			case <-time.After(time.Minute):
				t.Fatal("the write still waits for the stalled S3 endpoint after a minute")
			}
			if err == nil || errors.Is(err, storage.ErrNotFound) || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Fatalf("write to a stalled endpoint: %v; want a transient error", err)
			}
			t.Logf("the write failed: %v", err)
			if p.count(isUploadPart) == 0 {
				t.Fatal("no part was sent")
			}
		})
	}
}
