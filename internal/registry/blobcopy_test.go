package registry

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestOnLoopback(t *testing.T) {
	for _, tc := range []struct {
		addr net.Addr
		want bool
	}{
		{&net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5000}, true},
		{&net.TCPAddr{IP: net.ParseIP("::1"), Port: 5000}, true},
		{&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5000}, false},
		{&net.TCPAddr{IP: net.ParseIP("2001:db8::1"), Port: 5000}, false},
		{&net.UnixAddr{Name: "/run/berth.sock", Net: "unix"}, true},
		{nil, false},
	} {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		// A rewritten RemoteAddr (a proxy's header honoured) does not count.
		r.RemoteAddr = "127.0.0.1:1234"
		if tc.addr != nil {
			r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, tc.addr))
		}
		if got := onLoopback(r); got != tc.want {
			t.Errorf("local address %v: onLoopback = %v, want %v", tc.addr, got, tc.want)
		}
	}
}

// TestSendBlobNotAFile serves a body that is no file (as the S3 driver
// returns) to a peer on another machine, through the buffered copy: the
// response holds exactly the requested bytes.
func TestSendBlobNotAFile(t *testing.T) {
	reg := New(Stores{}, nil, Options{})
	want := bytes.Repeat([]byte("0123456789abcdef"), 300<<10) // 4.8 MiB: several buffers
	for _, local := range []net.Addr{&net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5000}, &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5000}} {
		r, _ := http.NewRequest(http.MethodGet, "/", nil)
		r = r.WithContext(context.WithValue(r.Context(), http.LocalAddrContextKey, local))
		w := httptest.NewRecorder()
		n, err := reg.sendBlob(w, r, io.MultiReader(bytes.NewReader(want), strings.NewReader("beyond the blob")), int64(len(want)))
		if err != nil || n != int64(len(want)) || !bytes.Equal(w.Body.Bytes(), want) {
			t.Fatalf("local %v: sent %d bytes (%v), body %d bytes equal=%v; want %d", local, n, err, w.Body.Len(), bytes.Equal(w.Body.Bytes(), want), len(want))
		}
	}
}

// blobFile writes size bytes to a file and returns its path.
func blobFile(t *testing.T, size int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "blob")
	if err := os.WriteFile(p, bytes.Repeat([]byte("0123456789abcdef"), size/16), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// sendPaths are the local addresses that make sendBlob take each of its
// ways: sendfile to a peer on another machine, the buffered copy on
// loopback.
var sendPaths = map[string]net.Addr{
	"sendfile": &net.TCPAddr{IP: net.ParseIP("10.1.2.3"), Port: 5000},
	"buffered": &net.TCPAddr{IP: net.ParseIP("127.0.0.1"), Port: 5000},
}

// blobServer serves the file at path with sendBlob as if accepted on
// local, under a send idle period of idle; /plain answers "ok" with no
// deadline of its own. Each blob request's sendBlob error goes to sent.
func blobServer(t *testing.T, path string, local net.Addr, idle time.Duration, sent chan<- error) *httptest.Server {
	reg := New(Stores{}, nil, Options{})
	mux := http.NewServeMux()
	mux.HandleFunc("GET /blob", func(w http.ResponseWriter, r *http.Request) {
		f, err := os.Open(path)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		fi, _ := f.Stat()
		r = r.WithContext(WithSendIdle(context.WithValue(r.Context(), http.LocalAddrContextKey, local), idle))
		w.Header().Set("Content-Length", strconv.FormatInt(fi.Size(), 10))
		w.WriteHeader(http.StatusOK)
		_, err = reg.sendBlob(w, r, f, fi.Size())
		sent <- err
	})
	mux.HandleFunc("GET /plain", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

// TestSendBlobCutsStalledClient: a client that asks for a blob and never
// reads it (a small receive buffer, so the server's writes block) has its
// download cut after the send idle period, both ways: the handler
// returns, with its file and its pooled buffer. Before, it stayed blocked
// in its write for as long as the client kept the connection.
func TestSendBlobCutsStalledClient(t *testing.T) {
	path := blobFile(t, 16<<20) // more than the socket buffers of both ends hold
	for name, local := range sendPaths {
		t.Run(name, func(t *testing.T) {
			sent := make(chan error, 1)
			srv := blobServer(t, path, local, 300*time.Millisecond, sent)
			conn, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { conn.Close() }) // before srv.Close, which waits for the handler
			if err := conn.(*net.TCPConn).SetReadBuffer(4096); err != nil {
				t.Fatal(err)
			}
			if _, err := io.WriteString(conn, "GET /blob HTTP/1.1\r\nHost: registry\r\n\r\n"); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-sent:
				if !errors.Is(err, os.ErrDeadlineExceeded) {
					t.Fatalf("sendBlob to a client that reads nothing returned %v, want a write deadline error", err)
				}
			case <-time.After(30 * time.Second):
				t.Fatal("sendBlob is still writing to a client that has read nothing for 30 s")
			}
		})
	}
}

// TestSendBlobDeadlineEnds: a client that reads gets the whole blob both
// ways, in pieces under deadlines, and the next request on its kept-alive
// connection, made after the send idle period has passed, is answered:
// the blob's write deadline does not outlive its response (net/http
// removes it after each response).
func TestSendBlobDeadlineEnds(t *testing.T) {
	const size = 4 << 20
	path := blobFile(t, size)
	for name, local := range sendPaths {
		t.Run(name, func(t *testing.T) {
			const idle = 200 * time.Millisecond
			sent := make(chan error, 1)
			srv := blobServer(t, path, local, idle, sent)
			client := &http.Client{Transport: &http.Transport{}}
			t.Cleanup(client.CloseIdleConnections)
			resp, err := client.Get(srv.URL + "/blob")
			if err != nil {
				t.Fatal(err)
			}
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if n != size || err != nil {
				t.Fatalf("read %d bytes (%v), want %d", n, err, size)
			}
			if err := <-sent; err != nil {
				t.Fatalf("sendBlob: %v", err)
			}
			time.Sleep(3 * idle)
			reused := false
			trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = info.Reused }}
			req, _ := http.NewRequestWithContext(httptrace.WithClientTrace(context.Background(), trace), http.MethodGet, srv.URL+"/plain", nil)
			resp, err = client.Do(req)
			if err != nil {
				t.Fatalf("the next request on the connection: %v", err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if string(body) != "ok" || err != nil {
				t.Fatalf("the next request on the connection: %q, %v", body, err)
			}
			if !reused {
				t.Fatal("the connection was not reused: nothing tested")
			}
		})
	}
}
