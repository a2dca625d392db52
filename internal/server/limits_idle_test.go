package server

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/testenv"
)

// TestStalledDownloadIsCut: behind idleBodies, a client that asks for a
// blob (or a manifest) and never reads it has its download cut after the
// idle period, as a stalled upload is: the registry's handler returns.
// Before, nothing bounded a response's writes (the server sets no
// WriteTimeout), and N such clients pinned N goroutines, open files and
// pooled buffers for as long as they kept their connections.
func TestStalledDownloadIsCut(t *testing.T) {
	e := testenv.New(t, testenv.Options{Open: true})
	blob := bytes.Repeat([]byte("stalled download "), 1<<20) // 17 MiB: more than the socket buffers of both ends hold
	d := digest.FromBytes(blob)
	resp, err := http.Post(e.URL+"/v2/app/blobs/uploads/?digest="+d.String(), "application/octet-stream", bytes.NewReader(blob))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("push: %d", resp.StatusCode)
	}
	returned := make(chan struct{}, 1)
	srv := httptest.NewServer(idleBodies(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		e.Registry.ServeHTTP(w, r)
		returned <- struct{}{}
	}), time.Second))
	t.Cleanup(srv.Close)
	conn, err := net.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() }) // before srv.Close, which waits for the handler
	if err := conn.(*net.TCPConn).SetReadBuffer(4096); err != nil {
		t.Fatal(err)
	}
	if _, err := io.WriteString(conn, "GET /v2/app/blobs/"+d.String()+" HTTP/1.1\r\nHost: registry\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	select {
	case <-returned:
	case <-time.After(30 * time.Second):
		t.Fatal("the blob GET of a client that has read nothing for 30 s is still being served (idle period 1 s)")
	}
}

// TestBodyEndKeepsContext: the read that ends a request's body does not
// arm a read deadline again: a handler still at work past the idle period
// (finishing a large upload, a slow database) keeps its context, and its
// answer reaches the client. Before, a body whose last read came more
// than idle/8 after the deadline was last moved (a client that paused
// before its last bytes) had the deadline armed again after its end, when
// net/http reads the connection in the background to notice a client
// that goes; 2 s later that read took the timeout for a client gone and
// cancelled the context, and the registry, seeing it cancelled, answered
// nothing: the client got an empty 200 for a push that had failed.
func TestBodyEndKeepsContext(t *testing.T) {
	const size = 20 << 10
	ctxErr := make(chan error, 1)
	srv := httptest.NewServer(idleBodies(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, err := io.Copy(io.Discard, r.Body)
		if n != size || err != nil {
			t.Errorf("body: %d bytes, %v", n, err)
		}
		time.Sleep(3 * time.Second) // past the idle period
		ctxErr <- r.Context().Err()
		w.WriteHeader(http.StatusCreated)
	}), 2*time.Second))
	t.Cleanup(srv.Close)
	pr, pw := io.Pipe()
	go func() {
		pw.Write(make([]byte, size-1))
		time.Sleep(600 * time.Millisecond) // more than idle/8 before the last byte
		pw.Write([]byte{0})
		pw.Close()
	}()
	req, _ := http.NewRequest(http.MethodPost, srv.URL, pr)
	req.ContentLength = size
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := <-ctxErr; err != nil {
		t.Errorf("the handler's context 3 s after its body ended: %v, want still live", err)
	}
	if resp.StatusCode != http.StatusCreated {
		t.Errorf("answer: %d, want the handler's 201", resp.StatusCode)
	}
}
