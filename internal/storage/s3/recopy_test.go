package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/testenv/s3server"
)

// failProxy stands in front of the test S3 server: it passes requests on
// and counts those of each kind, except that while fail is set it answers
// the requests that match failing with 500 InternalError (the SDK retries
// them, then gives up).
type failProxy struct {
	URL  string
	fail atomic.Bool
	mu   sync.Mutex
	seen map[string]int
}

func startFailProxy(t *testing.T, srv *s3server.Server, failing func(*http.Request) bool) *failProxy {
	t.Helper()
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	p := &failProxy{seen: map[string]int{}}
	h := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.mu.Lock()
		p.seen[requestKind(r)]++
		p.mu.Unlock()
		if p.fail.Load() && failing(r) {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusInternalServerError)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>InternalError</Code>`+
				`<Message>We encountered an internal error. Please try again.</Message></Error>`)
			return
		}
		rp.ServeHTTP(w, r)
	}))
	t.Cleanup(h.Close)
	p.URL = h.URL
	return p
}

// requestKind names the S3 calls the tests count.
func requestKind(r *http.Request) string {
	switch {
	case isPartRequest(r) && isCopy(r):
		return "UploadPartCopy"
	case isPartRequest(r):
		return "UploadPart"
	case r.Method == http.MethodGet && r.URL.Query().Has("uploadId"):
		return "ListParts"
	case r.Method == http.MethodGet:
		return "GetObject"
	}
	return r.Method
}

// isPartRequest matches UploadPart and UploadPartCopy (PUT ?partNumber=).
func isPartRequest(r *http.Request) bool {
	return r.Method == http.MethodPut && r.URL.Query().Has("partNumber")
}

// reset zeroes the counts and returns the ones before.
func (p *failProxy) reset() map[string]int {
	p.mu.Lock()
	defer p.mu.Unlock()
	seen := p.seen
	p.seen = map[string]int{}
	return seen
}

// completedUpload writes data to p as an upload does: the first split
// bytes as a chunk whose writer state is saved, then the rest and a
// commit. It returns the saved state, stale now: its multipart upload is
// completed and its tail dropped.
func completedUpload(t *testing.T, d *Driver, p string, data []byte, split int) []byte {
	t.Helper()
	ctx := context.Background()
	w, err := d.Writer(ctx, p, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[:split]); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := storage.WriterState(w)
	if err != nil {
		t.Fatal(err)
	}
	if w, err = storage.OpenWriter(ctx, d, p, int64(split), st); err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(data[split:]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	return st
}

// finish writes rest to w, commits it, and checks that p holds want.
func finish(t *testing.T, d *Driver, w storage.FileWriter, p string, rest, want []byte) {
	t.Helper()
	ctx := context.Background()
	if _, err := w.Write(rest); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		t.Fatal(err)
	}
	if got, err := d.GetContent(ctx, p); err != nil || !bytes.Equal(got, want) {
		t.Fatalf("the file: %d bytes, %v; want its %d bytes", len(got), err, len(want))
	}
}

func randomBytes(n int) []byte {
	b := make([]byte, n)
	rand.Read(b)
	return b
}

// TestWriterAtOffsetCopiesServerSide: a writer that continues a completed
// object (the registry's retried PUT after the blob could not be placed)
// copies the object's first whole parts server-side (UploadPartCopy) and
// reads back only the rest, under a part; before, every byte went through
// Berth again.
func TestWriterAtOffsetCopiesServerSide(t *testing.T) {
	srv := s3server.Start(t)
	px := startFailProxy(t, srv, isPartRequest)
	d := openAt(t, srv, px.URL, MinPartSize, Timeouts{})
	d.copyPart = MinPartSize
	ctx := context.Background()
	p := storage.UploadPath(storage.NewUploadID())
	data := randomBytes(3*MinPartSize + 2<<20)
	offset := 2*MinPartSize + 1<<20
	completedUpload(t, d, p, data, MinPartSize+1<<20)
	px.reset()
	w, err := d.Writer(ctx, p, int64(offset))
	if err != nil {
		t.Fatal(err)
	}
	seen := px.reset()
	if seen["UploadPart"] != 0 || seen["UploadPartCopy"] != 2 {
		t.Fatalf("continuing the object at %d: %d parts uploaded, %d copied; want none uploaded and 2 copied", offset, seen["UploadPart"], seen["UploadPartCopy"])
	}
	if w.Size() != int64(offset) {
		t.Fatalf("the writer's size: %d; want %d", w.Size(), offset)
	}
	finish(t, d, w, p, data[offset:], data)
}

// TestWriterAtOffsetFailureKeepsTheObject: when continuing a completed
// object fails (S3 refuses the copy of its parts), only the new multipart
// upload goes: the object, the upload's only copy of its bytes, stays, and
// the error is transient, so a later writer continues it. Before, the
// failed writer was cancelled, which deleted the object: the upload the
// client was told is kept was gone (404 BLOB_UPLOAD_UNKNOWN).
func TestWriterAtOffsetFailureKeepsTheObject(t *testing.T) {
	srv := s3server.Start(t)
	px := startFailProxy(t, srv, isPartRequest)
	d := openAt(t, srv, px.URL, MinPartSize, Timeouts{})
	ctx := context.Background()
	p := storage.UploadPath(storage.NewUploadID())
	data := randomBytes(2*MinPartSize + 3<<20)
	offset := MinPartSize + 2<<20
	completedUpload(t, d, p, data, MinPartSize+1<<20)
	px.fail.Store(true)
	if _, err := d.Writer(ctx, p, int64(offset)); err == nil || errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("continuing the object while S3 refuses parts: %v; want a transient error", err)
	}
	px.fail.Store(false)
	if got, err := d.GetContent(ctx, p); err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the object after the failed continuation: %d bytes, %v; want its %d bytes", len(got), err, len(data))
	}
	if ups, err := d.MultipartUploads(ctx, "/uploads", time.Now().Add(time.Hour)); err != nil || len(ups) != 0 {
		t.Fatalf("multipart uploads after the failed continuation: %v, %v; want none (aborted)", ups, err)
	}
	w, err := d.Writer(ctx, p, int64(offset))
	if err != nil {
		t.Fatal(err)
	}
	finish(t, d, w, p, data[offset:], data)
	if _, err := d.Writer(ctx, p, int64(len(data)+1)); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("continuing an object at %d, past its %d bytes: %v; want storage.ErrNotFound", len(data)+1, len(data), err)
	}
}

// TestResumeAfterCompletion: a PUT completed the upload's file from a
// saved writer state (its multipart upload is an object now, its tail
// dropped), and the state was never replaced (the process stopped, or
// recording the kept upload failed, before the blob was placed). Resuming
// from that state continues from the completed object, which holds the
// state's bytes, instead of taking the gone multipart upload (or tail)
// for data that is gone (404 BLOB_UPLOAD_UNKNOWN).
func TestResumeAfterCompletion(t *testing.T) {
	srv := s3server.Start(t)
	d := openAt(t, srv, srv.Endpoint, MinPartSize, Timeouts{})
	ctx := context.Background()
	for _, c := range []struct {
		name        string
		size, split int
	}{
		{"multipart upload completed", MinPartSize + 3<<20, MinPartSize + 1<<20},
		{"tail put as the object", 3 << 20, 1 << 20},
	} {
		t.Run(c.name, func(t *testing.T) {
			p := storage.UploadPath(storage.NewUploadID())
			data := randomBytes(c.size)
			st := completedUpload(t, d, p, data, c.split)
			w, err := d.ResumeWriter(ctx, p, int64(c.split), st)
			if err != nil {
				t.Fatalf("resume from the state the completion left behind: %v", err)
			}
			if w.Size() != int64(c.split) {
				t.Fatalf("the writer's size: %d; want %d", w.Size(), c.split)
			}
			finish(t, d, w, p, data[c.split:], data)
		})
	}
}

// TestResumeNotFromTheObjectItBeganFrom: a writer state that continued a
// completed object, whose multipart upload is then aborted (a lifecycle
// rule, say), does not resume from that older object: its bytes past
// where the state began are not the state's. The data is gone.
func TestResumeNotFromTheObjectItBeganFrom(t *testing.T) {
	srv := s3server.Start(t)
	d := openAt(t, srv, srv.Endpoint, MinPartSize, Timeouts{})
	ctx := context.Background()
	p := storage.UploadPath(storage.NewUploadID())
	data := randomBytes(MinPartSize + 4<<20)
	completedUpload(t, d, p, data, MinPartSize+1<<20)
	begin := MinPartSize + 1<<20
	w, err := d.Writer(ctx, p, int64(begin))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(randomBytes(1 << 20)); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	st, err := storage.WriterState(w)
	if err != nil {
		t.Fatal(err)
	}
	ups, err := d.MultipartUploads(ctx, "/uploads", time.Now().Add(time.Hour))
	if err != nil || len(ups) != 1 {
		t.Fatalf("multipart uploads: %v, %v; want the writer's", ups, err)
	}
	if err := d.AbortMultipartUpload(ctx, ups[0]); err != nil {
		t.Fatal(err)
	}
	if _, err := d.ResumeWriter(ctx, p, int64(begin+1<<20), st); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("resume after the multipart upload was aborted: %v; want storage.ErrNotFound", err)
	}
}
