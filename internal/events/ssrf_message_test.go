package events

import (
	"context"
	"errors"
	"testing"
)

// TestRefusalNamesTheSetting: every refusal of the SSRF guard names the
// setting that lifts it (notifications.allowedHosts), its keywords, and
// the entry that would allow this very connection: the keyword that
// covers the address if one does, else the address, plus the host name.
// And the entry it suggests does allow it.
func TestRefusalNamesTheSetting(t *testing.T) {
	r := newFakeResolver(map[string][]string{
		"registry.internal": {"10.1.2.3"},
		"hooks.local":       {"::1"},
		"metadata.example":  {"169.254.169.254"},
	})
	const tail = `to notifications.allowedHosts (keywords "loopback" and "private", or CIDRs, IPs and host names)`
	for _, tc := range []struct {
		url, want string
		allow     []string
	}{
		{"http://127.0.0.1:5000/v2/", `refusing to connect to 127.0.0.1: a loopback address (SSRF guard); to allow it, add "loopback" ` + tail, []string{"loopback"}},
		{"http://[::1]/", `refusing to connect to ::1: a loopback address (SSRF guard); to allow it, add "loopback" ` + tail, []string{"loopback"}},
		{"http://192.168.1.20/hook", `refusing to connect to 192.168.1.20: a private address (SSRF guard); to allow it, add "private" ` + tail, []string{"private"}},
		{"http://registry.internal/", `refusing to connect to "registry.internal": it resolves to 10.1.2.3, a private address (SSRF guard); to allow it, add "private" or "registry.internal" ` + tail, []string{"registry.internal"}},
		{"http://hooks.local/", `refusing to connect to "hooks.local": it resolves to ::1, a loopback address (SSRF guard); to allow it, add "loopback" or "hooks.local" ` + tail, []string{"loopback"}},
		{"http://169.254.169.254/latest/", `refusing to connect to 169.254.169.254: a link-local address (SSRF guard); to allow it, add "169.254.169.254" ` + tail, []string{"169.254.169.254"}},
		{"http://metadata.example/", `refusing to connect to "metadata.example": it resolves to 169.254.169.254, a link-local address (SSRF guard); to allow it, add "169.254.169.254" or "metadata.example" ` + tail, []string{"metadata.example"}},
		{"http://100.64.0.9/", `refusing to connect to 100.64.0.9: a cgnat address (SSRF guard); to allow it, add "100.64.0.9" ` + tail, []string{"100.64.0.9"}},
	} {
		err := mustGuard(t, nil, r).CheckURL(context.Background(), tc.url)
		var re *RefusedError
		if !errors.As(err, &re) || err.Error() != tc.want {
			t.Errorf("%s:\n got %v\nwant %s", tc.url, err, tc.want)
		}
		if err := mustGuard(t, tc.allow, r).CheckURL(context.Background(), tc.url); err != nil {
			t.Errorf("%s with allowedHosts %v: %v", tc.url, tc.allow, err)
		}
	}
}
