// Package redact takes credentials out of strings Berth shows: in errors,
// logs, results and API answers. It is pure: no I/O, nothing of ours.
package redact

import (
	"net/url"
	"strings"
)

// Userinfo is raw without the user information of its URL
// (http://user:password@host/path → http://host/path): credentials of an
// upstream, a proxy or a mirror are sent, never shown. A string that does
// not parse as a URL loses everything before the last '@' after its
// scheme (more than its user information when a path holds one, never
// less); one without a scheme is returned as it is.
func Userinfo(raw string) string {
	if u, err := url.Parse(raw); err == nil {
		if u.User == nil {
			return raw
		}
		u.User = nil
		return u.String()
	}
	if i := strings.Index(raw, "://"); i >= 0 {
		if at := strings.LastIndex(raw[i+3:], "@"); at >= 0 {
			return raw[:i+3] + raw[i+3+at+1:]
		}
	}
	return raw
}
