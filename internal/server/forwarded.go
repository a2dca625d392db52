package server

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// forwardedFor makes a request's RemoteAddr its client's address when it
// came through one of the trusted proxies (http.trustedProxies): the
// rightmost X-Forwarded-For entry that is not itself a trusted proxy, so
// that a client cannot choose its address by sending the header itself
// (each proxy appends the address it saw). Login throttling, the audit
// log and the access log then count and name clients, not the load
// balancer that every request shares. With no trusted proxies the header
// is ignored.
func forwardedFor(next http.Handler, trusted []netip.Prefix) http.Handler {
	if len(trusted) == 0 {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if client, ok := forwardedClient(r, trusted); ok {
			r.RemoteAddr = net.JoinHostPort(client.String(), "0")
		}
		next.ServeHTTP(w, r)
	})
}

// forwardedClient returns the client address the trusted proxies in
// front of r name, or false if r did not come from one (or names none).
func forwardedClient(r *http.Request, trusted []netip.Prefix) (netip.Addr, bool) {
	isTrusted := func(a netip.Addr) bool {
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	peer, ok := parseAddr(r.RemoteAddr)
	if !ok || !isTrusted(peer) {
		return netip.Addr{}, false
	}
	var entries []string
	for _, h := range r.Header.Values("X-Forwarded-For") {
		entries = append(entries, strings.Split(h, ",")...)
	}
	client := peer
	for i := len(entries) - 1; i >= 0; i-- {
		a, ok := parseAddr(strings.TrimSpace(entries[i]))
		if !ok {
			break // not an address: what is left of it is the client's to write
		}
		client = a
		if !isTrusted(a) {
			break
		}
	}
	return client, client != peer
}

// parseAddr reads an address with or without a port ("192.0.2.1",
// "[2001:db8::1]:443"), as an IPv4 address when it is one mapped to IPv6.
func parseAddr(s string) (netip.Addr, bool) {
	if ap, err := netip.ParseAddrPort(s); err == nil {
		return ap.Addr().Unmap(), true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), true
}
