package registry

import (
	"context"
	"net"
	"net/http"
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
