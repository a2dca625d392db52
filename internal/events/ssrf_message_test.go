package events

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"
)

// TestRefusalNamesTheSetting: every refusal of the SSRF guard names the
// setting that lifts it (notifications.allowedHosts), its keywords, and
// an entry that would allow this very connection: for an address, the
// keyword that covers it if one does, else the address; for a host name,
// the name. Detail, for the operator's log, also names what a host name
// resolves to and every entry. And the entry suggested does allow it.
func TestRefusalNamesTheSetting(t *testing.T) {
	r := newFakeResolver(map[string][]string{
		"registry.internal": {"10.1.2.3"},
		"hooks.local":       {"::1"},
		"metadata.example":  {"169.254.169.254"},
	})
	const tail = `to notifications.allowedHosts (keywords "loopback" and "private", or CIDRs, IPs and host names)`
	const internal = `it resolves to a loopback, private, link-local or other internal address (SSRF guard); to allow it, add `
	for _, tc := range []struct {
		url, want, detail string
		allow             []string
	}{
		{"http://127.0.0.1:5000/v2/", `refusing to connect to 127.0.0.1: a loopback address (SSRF guard); to allow it, add "loopback" ` + tail, "", []string{"loopback"}},
		{"http://[::1]/", `refusing to connect to ::1: a loopback address (SSRF guard); to allow it, add "loopback" ` + tail, "", []string{"loopback"}},
		{"http://192.168.1.20/hook", `refusing to connect to 192.168.1.20: a private address (SSRF guard); to allow it, add "private" ` + tail, "", []string{"private"}},
		{"http://registry.internal/", `refusing to connect to "registry.internal": ` + internal + `"registry.internal" ` + tail,
			`refusing to connect to "registry.internal": it resolves to 10.1.2.3, a private address (SSRF guard); to allow it, add "private" or "registry.internal" ` + tail, []string{"registry.internal"}},
		{"http://hooks.local/", `refusing to connect to "hooks.local": ` + internal + `"hooks.local" ` + tail,
			`refusing to connect to "hooks.local": it resolves to ::1, a loopback address (SSRF guard); to allow it, add "loopback" or "hooks.local" ` + tail, []string{"hooks.local"}},
		{"http://169.254.169.254/latest/", `refusing to connect to 169.254.169.254: a link-local address (SSRF guard); to allow it, add "169.254.169.254" ` + tail, "", []string{"169.254.169.254"}},
		{"http://metadata.example/", `refusing to connect to "metadata.example": ` + internal + `"metadata.example" ` + tail,
			`refusing to connect to "metadata.example": it resolves to 169.254.169.254, a link-local address (SSRF guard); to allow it, add "169.254.169.254" or "metadata.example" ` + tail, []string{"metadata.example"}},
		{"http://100.64.0.9/", `refusing to connect to 100.64.0.9: a cgnat address (SSRF guard); to allow it, add "100.64.0.9" ` + tail, "", []string{"100.64.0.9"}},
	} {
		err := mustGuard(t, nil, r).CheckURL(context.Background(), tc.url)
		var re *RefusedError
		if !errors.As(err, &re) || err.Error() != tc.want {
			t.Errorf("%s:\n got %v\nwant %s", tc.url, err, tc.want)
			continue
		}
		if tc.detail == "" {
			tc.detail = tc.want // an address: the tenant named it
		}
		if re.Detail() != tc.detail {
			t.Errorf("%s detail:\n got %s\nwant %s", tc.url, re.Detail(), tc.detail)
		}
		if err := mustGuard(t, tc.allow, r).CheckURL(context.Background(), tc.url); err != nil {
			t.Errorf("%s with allowedHosts %v: %v", tc.url, tc.allow, err)
		}
	}
}

// TestRefusalHidesResolvedAddress: a host name that resolves to an
// internal address is refused without saying which address, nor which
// kind: whoever typed the name learns only that it is not allowed.
func TestRefusalHidesResolvedAddress(t *testing.T) {
	r := newFakeResolver(map[string][]string{"billing-db.corp": {"10.20.30.40"}})
	err := mustGuard(t, nil, r).CheckURL(context.Background(), "https://billing-db.corp/hook")
	if !errors.Is(err, ErrRefused) {
		t.Fatalf("not refused: %v", err)
	}
	for _, leak := range []string{"10.20.30.40", "10.20.", "a private address"} {
		if strings.Contains(err.Error(), leak) {
			t.Errorf("the refusal says %q: %v", leak, err)
		}
	}
	if !strings.Contains(err.Error(), `add "billing-db.corp" to notifications.allowedHosts`) {
		t.Errorf("the refusal names no entry that lifts it: %v", err)
	}
}

// serverResolver fails every lookup as a cluster's resolver does, naming
// itself (Server) in the error.
type serverResolver struct{}

func (serverResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	return nil, &net.DNSError{Err: "no such host", Name: host, Server: "10.96.0.10:53", IsNotFound: true}
}

// TestDeliveryErrorHidesResolver: a delivery to a host name that does not
// resolve fails with an error that a notification's admins read (its
// attempts, disabled_reason): it says the name was not found, never
// which DNS server the registry asks (an internal address), and the
// error still says it was not found (notify counts that as a refusal).
func TestDeliveryErrorHidesResolver(t *testing.T) {
	g := mustGuard(t, nil, serverResolver{})
	res := Webhook{URL: "https://hooks.example/h", Client: NewHTTPClient(g)}.Deliver(context.Background(), Delivery{Body: []byte(`{}`)})
	if res.Err == nil {
		t.Fatal("delivered to a name that does not resolve")
	}
	if strings.Contains(res.Err.Error(), "10.96.0.10") {
		t.Errorf("the attempt's error names the registry's DNS server: %v", res.Err)
	}
	if !strings.Contains(res.Err.Error(), "no such host") || !strings.Contains(res.Err.Error(), "hooks.example") {
		t.Errorf("the attempt's error does not say the name was not found: %v", res.Err)
	}
	var de *net.DNSError
	if !errors.As(res.Err, &de) || !de.IsNotFound {
		t.Errorf("not found no longer told apart: %v", res.Err)
	}
	if err := g.CheckURL(context.Background(), "https://hooks.example/h"); err == nil || strings.Contains(err.Error(), "10.96.0.10") {
		t.Errorf("CheckURL: %v", err)
	}
}

// TestEmailErrorHidesRelay: an email delivery that fails at the SMTP
// relay says so without the relay's address (an internal one, which
// the notification's admins read in its attempts); the operator's detail
// names it.
func TestEmailErrorHidesRelay(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close() // nothing listens: the connection is refused
	res := Email{SMTPAddr: addr, From: "berth@example.com", To: "ops@example.com"}.Deliver(context.Background(), emailDelivery(t))
	if res.Err == nil {
		t.Fatal("mailed through a relay that is not there")
	}
	if strings.Contains(res.Err.Error(), "127.0.0.1") {
		t.Errorf("the attempt's error names the relay: %v", res.Err)
	}
	if !strings.Contains(res.Err.Error(), "SMTP relay") || !strings.Contains(res.Err.Error(), "connection refused") {
		t.Errorf("the attempt's error does not say what failed: %v", res.Err)
	}
	var re *RelayError
	if !errors.As(res.Err, &re) || !strings.Contains(re.Detail(), addr) {
		t.Errorf("no detail naming the relay for the operator: %v", res.Err)
	}
}
