package registry

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
