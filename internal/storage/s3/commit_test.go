package s3

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/testenv/s3server"
)

// isCompleteMultipart matches CompleteMultipartUpload (POST ?uploadId=).
func isCompleteMultipart(r *http.Request) bool {
	return r.Method == http.MethodPost && r.URL.Query().Has("uploadId")
}

// startDropProxy stands in front of the test S3 server and passes requests
// on, except CompleteMultipartUpload: the first is carried out at the
// server and its answer lost (the connection is closed instead), and the
// SDK's retries of it are answered NoSuchUpload, as S3 may answer them
// once the upload is an object (AWS documents the code for a completed
// upload; versitygw answers them as the first). The count is of the
// completions seen.
func startDropProxy(t *testing.T, srv *s3server.Server) (string, *atomic.Int32) {
	t.Helper()
	target, err := url.Parse(srv.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	var completions atomic.Int32
	h := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !isCompleteMultipart(r) {
			rp.ServeHTTP(w, r)
			return
		}
		if completions.Add(1) > 1 {
			io.Copy(io.Discard, r.Body)
			w.Header().Set("Content-Type", "application/xml")
			w.WriteHeader(http.StatusNotFound)
			io.WriteString(w, `<?xml version="1.0" encoding="UTF-8"?><Error><Code>NoSuchUpload</Code>`+
				`<Message>The specified multipart upload does not exist.</Message></Error>`)
			return
		}
		rec := httptest.NewRecorder()
		rp.ServeHTTP(rec, r)
		if rec.Code != http.StatusOK {
			t.Errorf("the completion whose answer is dropped: %d %s", rec.Code, rec.Body)
		}
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		conn.Close()
	}))
	t.Cleanup(h.Close)
	return h.URL, &completions
}

// writeParts writes n bytes (at least a part) and returns the writer,
// resumed from its saved state as the registry does for the finishing PUT.
func writeParts(t *testing.T, d *Driver, p string, data []byte, split int) storage.FileWriter {
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
	return w
}

// TestCommitAnswerLost: when S3 completes a multipart upload but its
// answer is lost, the SDK's retry is answered NoSuchUpload (the upload is
// an object now). The commit succeeded: Commit must say so, not report
// storage.ErrNotFound, on which the registry deletes the upload (the
// completed object with it) and the client pushes the blob again.
func TestCommitAnswerLost(t *testing.T) {
	srv := s3server.Start(t)
	endpoint, completions := startDropProxy(t, srv)
	d := openAt(t, srv, endpoint, MinPartSize, Timeouts{})
	data := bytes.Repeat([]byte("0123456789abcdef"), (MinPartSize+3<<20)/16)
	p := storage.UploadPath(storage.NewUploadID())
	w := writeParts(t, d, p, data, MinPartSize+1<<20)
	if err := w.Commit(context.Background()); err != nil {
		t.Fatalf("Commit after its answer was lost: %v", err)
	}
	if n := completions.Load(); n < 2 {
		t.Fatalf("%d CompleteMultipartUpload requests; want the first (its answer dropped) and a retry", n)
	}
	got, err := d.GetContent(context.Background(), p)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("the committed file: %d bytes, %v; want %d bytes", len(got), err, len(data))
	}
}

// TestCommitAbortedUpload: a multipart upload aborted before its
// completion (the upload deleted meanwhile) is storage.ErrNotFound at
// Commit, and no object appears.
func TestCommitAbortedUpload(t *testing.T) {
	srv := s3server.Start(t)
	d := openAt(t, srv, srv.Endpoint, MinPartSize, Timeouts{})
	data := bytes.Repeat([]byte("x"), MinPartSize+3<<20)
	p := storage.UploadPath(storage.NewUploadID())
	w := writeParts(t, d, p, data, MinPartSize+1<<20)
	ups, err := d.MultipartUploads(context.Background(), "/uploads", time.Now().Add(time.Hour))
	if err != nil || len(ups) != 1 {
		t.Fatalf("multipart uploads: %v, %v; want 1", ups, err)
	}
	if err := d.AbortMultipartUpload(context.Background(), ups[0]); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(context.Background()); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Commit of an aborted multipart upload: %v; want storage.ErrNotFound", err)
	}
	if _, err := d.Stat(context.Background(), p); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Stat after the failed commit: %v; want storage.ErrNotFound", err)
	}
}
