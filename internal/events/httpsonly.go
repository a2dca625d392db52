package events

import (
	"fmt"
	"net/http"
)

// HTTPSOnly is a transport that refuses requests to the registry (Host)
// that are not HTTPS, and any plain-HTTP request that carries credentials
// (a token realm's): go-containerregistry tries plain HTTP by itself for a
// registry it considers local (loopback, RFC 1918 and link-local
// addresses, localhost, *.local) and would send credentials in clear
// text. A blob redirect to another host (a storage service) carries none,
// and its bytes are verified against their digest, so it may be plain
// HTTP. Allow says how to allow plain HTTP (the refusal's hint).
type HTTPSOnly struct {
	Next  http.RoundTripper
	Host  string
	Allow string
}

// RoundTrip refuses, or sends the request on to Next.
func (t HTTPSOnly) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.Scheme != "https" && (r.URL.Host == t.Host || r.Header.Get("Authorization") != "") {
		return nil, fmt.Errorf("plain HTTP to %s refused: the upstream answers only without TLS (%s)", r.URL.Host, t.Allow)
	}
	return t.Next.RoundTrip(r)
}
