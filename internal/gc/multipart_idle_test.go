package gc

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"path"
	"regexp"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/s3"
	"github.com/berth-dev/berth/internal/testenv/s3server"
)

// pinInitiated stands in front of the test S3 server and answers each
// ListMultipartUploads with the Initiated time the server first gave each
// upload: as S3 does, where it is when the upload was created. versitygw
// reports its upload directory's modification time, which each new part
// moves.
func pinInitiated(t *testing.T, srv *s3server.Server) string {
	t.Helper()
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	pinned := map[string]string{}
	upload := regexp.MustCompile(`(?s)<Upload>.*?</Upload>`)
	id := regexp.MustCompile(`<UploadId>([^<]*)</UploadId>`)
	initiated := regexp.MustCompile(`<Initiated>([^<]*)</Initiated>`)
	rp := httputil.NewSingleHostReverseProxy(target) // keeps the Host the request was signed for
	rp.ModifyResponse = func(resp *http.Response) error {
		r := resp.Request
		if r.Method != http.MethodGet || !r.URL.Query().Has("uploads") || resp.StatusCode != http.StatusOK {
			return nil
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		mu.Lock()
		body = upload.ReplaceAllFunc(body, func(u []byte) []byte {
			m, at := id.FindSubmatch(u), initiated.FindSubmatch(u)
			if m == nil || at == nil {
				return u
			}
			first, ok := pinned[string(m[1])]
			if !ok {
				first = string(at[1])
				pinned[string(m[1])] = first
			}
			return initiated.ReplaceAll(u, []byte("<Initiated>"+first+"</Initiated>"))
		})
		mu.Unlock()
		resp.Body = io.NopCloser(bytes.NewReader(body))
		resp.ContentLength = int64(len(body))
		resp.Header.Set("Content-Length", strconv.Itoa(len(body)))
		return nil
	}
	h := httptest.NewServer(rp)
	t.Cleanup(h.Close)
	return h.URL
}

// TestSweepMultipartByLastPart: on S3, an ingest (a mirror's or an
// import's copy) stages under /uploads with no upload session, and a copy
// of a large blob may take longer than the expiry. Its multipart upload
// is judged by its newest part, not by when it was initiated: one still
// receiving parts survives the sweep; one idle since before the cutoff is
// aborted.
func TestSweepMultipartByLastPart(t *testing.T) {
	srv := s3server.Start(t)
	t.Setenv("AWS_CA_BUNDLE", "") // the test server speaks plain HTTP
	ctx := context.Background()
	store, err := s3.Open(ctx, s3.Options{Endpoint: pinInitiated(t, srv), Region: srv.Region, Bucket: srv.Bucket(t), Prefix: "registry",
		PathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: s3.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	db := metatest.Open(t, "sqlite")
	const expiry = time.Hour
	c := New(Stores{Uploads: db.Uploads(), Collector: db.Collector(), Retention: db.Collector()}, store,
		Options{UploadExpiry: expiry, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})

	part := func(w storage.FileWriter) {
		t.Helper()
		if _, err := w.Write(make([]byte, s3.MinPartSize)); err != nil {
			t.Fatal(err)
		}
	}
	idle, copying := uuid.NewString(), uuid.NewString()
	wIdle, err := store.Writer(ctx, storage.UploadPath(idle), 0)
	if err != nil {
		t.Fatal(err)
	}
	wCopy, err := store.Writer(ctx, storage.UploadPath(copying), 0)
	if err != nil {
		t.Fatal(err)
	}
	part(wIdle)
	part(wCopy)
	if err := wIdle.Close(); err != nil { // abandoned: an interrupted ingest
		t.Fatal(err)
	}
	defer wCopy.Cancel(context.WithoutCancel(ctx))
	ups, err := store.MultipartUploads(ctx, "/uploads", time.Now().Add(24*time.Hour))
	if err != nil {
		t.Fatal(err)
	}
	var initiated time.Time
	for _, u := range ups {
		if u.Initiated.After(initiated) {
			initiated = u.Initiated
		}
	}
	if len(ups) != 2 {
		t.Fatalf("multipart uploads: %v, want 2", ups)
	}
	// The cutoff falls after both were initiated (and the idle one's only
	// part: the server's times may be whole seconds), before the copy's
	// next part.
	cutoff := initiated.Add(2 * time.Second)
	time.Sleep(time.Until(cutoff.Add(2 * time.Second)))
	part(wCopy)

	c.now = func() time.Time { return cutoff.Add(expiry) }
	pending := func() map[string]bool {
		ups, err := store.MultipartUploads(ctx, "/uploads", time.Now().Add(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, u := range ups {
			ids[path.Base(path.Dir(u.Path))] = true
		}
		return ids
	}
	rep, err := c.Pass(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := pending(); got[idle] || !got[copying] || rep.Leftovers != 1 {
		t.Fatalf("after the pass: %d leftovers (want 1), multipart uploads %v (want only the copy's %s)", rep.Leftovers, got, copying)
	}
	// The copy goes on: its multipart upload was not aborted.
	part(wCopy)
	if err := wCopy.Commit(ctx); err != nil {
		t.Fatalf("the copy's commit after the pass: %v", err)
	}
}
