package server_test

import (
	"bytes"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"testing"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/testenv/s3server"
)

// TestUploadSurvivesS3Outage stops the S3 server between two chunks of an
// upload: the chunk sent while S3 is down is answered 503 UNAVAILABLE with
// a Retry-After (not 404 BLOB_UPLOAD_UNKNOWN, which would make the client
// start over), the upload keeps its recorded size, and once S3 is back on
// the same address and data the same chunk is accepted and the blob
// finishes intact; S3 down again at the finishing PUT, the upload is kept
// (503) and the retried PUT finishes it.
func TestUploadSurvivesS3Outage(t *testing.T) {
	srv := s3server.Start(t)
	a, b := s3ReplicasOn(t, srv)
	blob := make([]byte, 3<<20)
	rand.Read(blob)
	d := digest.FromBytes(blob)
	chunk := func(base, loc string, off, n int) (*http.Response, []byte) {
		req, _ := http.NewRequest("PATCH", base+loc, bytes.NewReader(blob[off:off+n]))
		req.SetBasicAuth("alice", pw)
		req.Header.Set("Content-Type", "application/octet-stream")
		req.Header.Set("Content-Range", fmt.Sprintf("%d-%d", off, off+n-1))
		resp, err := noFollow.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, body
	}
	resp := call(t, "POST", a+"/v2/alice/outage/blobs/uploads/", "alice", nil)
	if resp.StatusCode != http.StatusAccepted {
		t.Fatalf("start upload: %d", resp.StatusCode)
	}
	loc := resp.Header.Get("Location")
	if resp, _ := chunk(a, loc, 0, 1<<20); resp.StatusCode != http.StatusAccepted {
		t.Fatalf("first chunk: %d", resp.StatusCode)
	}

	srv.Stop()
	resp, body := chunk(b, loc, 1<<20, 1<<20)
	var e struct {
		Errors []struct{ Code string } `json:"errors"`
	}
	json.Unmarshal(body, &e)
	if resp.StatusCode != http.StatusServiceUnavailable || len(e.Errors) != 1 || e.Errors[0].Code != "UNAVAILABLE" || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("chunk while S3 is down: %d, Retry-After %q, body %s; want 503 UNAVAILABLE with a Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"), body)
	}
	if resp := call(t, "GET", a+loc, "alice", nil); resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != fmt.Sprintf("0-%d", 1<<20-1) {
		t.Fatalf("upload status while S3 is down: %d, Range %q; want 204 with the first chunk", resp.StatusCode, resp.Header.Get("Range"))
	}

	srv.Restart(t)
	for i, off := range []int{1 << 20, 2 << 20} {
		if resp, body := chunk([]string{b, a}[i], loc, off, 1<<20); resp.StatusCode != http.StatusAccepted {
			t.Fatalf("chunk at %d after S3 is back: %d %s", off, resp.StatusCode, body)
		}
	}
	// S3 down when the upload is finished: 503 with a Retry-After (its
	// data cannot be reopened), and the upload is kept whole for the
	// retried PUT.
	srv.Stop()
	resp = call(t, "PUT", a+loc+"?digest="+d.String(), "alice", nil)
	if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("finish while S3 is down: %d, Retry-After %q; want 503 with a Retry-After", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	if resp := call(t, "GET", b+loc, "alice", nil); resp.StatusCode != http.StatusNoContent || resp.Header.Get("Range") != fmt.Sprintf("0-%d", 3<<20-1) {
		t.Fatalf("upload status after the failed finish: %d, Range %q; want 204 with all three chunks", resp.StatusCode, resp.Header.Get("Range"))
	}
	srv.Restart(t)
	if resp := call(t, "PUT", b+loc+"?digest="+d.String(), "alice", nil); resp.StatusCode != http.StatusCreated {
		t.Fatalf("finish upload: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("GET", b+"/v2/alice/outage/blobs/"+d.String(), nil)
	req.SetBasicAuth("alice", pw)
	got, err := http.DefaultClient.Do(req) // follows the redirect to S3
	if err != nil {
		t.Fatal(err)
	}
	pulled, _ := io.ReadAll(got.Body)
	got.Body.Close()
	if got.StatusCode != http.StatusOK || !bytes.Equal(pulled, blob) {
		t.Fatalf("pull: %d, %d bytes (digest %s), want %s", got.StatusCode, len(pulled), digest.FromBytes(pulled), d)
	}
}
