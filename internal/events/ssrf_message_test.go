package events

import (
	"context"
	"errors"
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
