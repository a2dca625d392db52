package registry_test

import (
	"encoding/json"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/auth"
	"github.com/berth-dev/berth/internal/authz"
	"github.com/berth-dev/berth/internal/registry"
)

// fixedAuthorizer answers every request with one decision, and records the
// resource it was asked about.
type fixedAuthorizer struct {
	d    authz.Decision
	err  error
	last *registry.Resource
}

func (f fixedAuthorizer) Authorize(_ *http.Request, res registry.Resource) (authz.Decision, error) {
	*f.last = res
	return f.d, f.err
}

// TestAuthorizerDecisions: the registry turns each decision of its
// authorizer into the spec's answer: a challenge is 401 UNAUTHORIZED with
// the Bearer WWW-Authenticate header, a denial 403 DENIED, an unknown name
// 404 NAME_UNKNOWN, a login refused for now 429 TOOMANYREQUESTS with a
// Retry-After in whole seconds rounded up; the reason is the message and
// the refused resource the detail. A decision without a verdict, or an
// error, is a 500 that lets nothing through.
func TestAuthorizerDecisions(t *testing.T) {
	app := auth.Scope{Type: "repository", Name: "acme/app", Actions: []string{"pull", "push"}}
	for _, tc := range []struct {
		name      string
		d         authz.Decision
		err       error
		status    int
		code, msg string
		detail    bool
		header    map[string]string
	}{
		{name: "challenge", d: authz.Decision{Verdict: authz.Unauthenticated, Reason: "authentication required",
			Challenge: authz.Challenge{Realm: "https://r.example/v2/auth", Service: "berth", Scope: app.String(), Error: "insufficient_scope"}, Refused: app},
			status: 401, code: "UNAUTHORIZED", msg: "authentication required", detail: true,
			header: map[string]string{"WWW-Authenticate": `Bearer realm="https://r.example/v2/auth",service="berth",scope="repository:acme/app:pull,push",error="insufficient_scope"`}},
		{name: "base challenge", d: authz.Decision{Verdict: authz.Unauthenticated, Reason: "authentication required",
			Challenge: authz.Challenge{Realm: "http://r/v2/auth", Service: "berth"}},
			status: 401, code: "UNAUTHORIZED", msg: "authentication required",
			header: map[string]string{"WWW-Authenticate": `Bearer realm="http://r/v2/auth",service="berth"`}},
		{name: "denied", d: authz.Decision{Verdict: authz.Denied, Reason: "bob may not push acme/app", Refused: app},
			status: 403, code: "DENIED", msg: "bob may not push acme/app", detail: true},
		{name: "denied, about a namespace", d: authz.Decision{Verdict: authz.Denied, Reason: "namespace acme does not exist"},
			status: 403, code: "DENIED", msg: "namespace acme does not exist"},
		{name: "name unknown", d: authz.Decision{Verdict: authz.NameUnknown, Reason: "repository acme/app not found"},
			status: 404, code: "NAME_UNKNOWN", msg: "repository acme/app not found"},
		{name: "too many requests", d: authz.Decision{Verdict: authz.TooManyRequests, Reason: "too many failed logins", RetryAfter: 90*time.Second + time.Millisecond},
			status: 429, code: "TOOMANYREQUESTS", msg: "too many failed logins", header: map[string]string{"Retry-After": "91"}},
		{name: "no verdict", d: authz.Decision{}, status: 500, code: "INTERNAL_ERROR"},
		{name: "error", d: authz.Decision{Verdict: authz.Allow}, err: errors.New("store down"), status: 500, code: "INTERNAL_ERROR"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var asked registry.Resource
			reg := newRegistry(t, "sqlite", registry.Options{Auth: fixedAuthorizer{d: tc.d, err: tc.err, last: &asked}})
			resp, body := reg.do("POST", "/v2/acme/app/blobs/uploads/", nil)
			if asked.String() != app.String() {
				t.Fatalf("the authorizer was asked about %v, want %v", asked, app)
			}
			var b struct {
				Errors []struct {
					Code, Message string
					Detail        any
				}
			}
			json.Unmarshal(body, &b)
			if resp.StatusCode != tc.status || len(b.Errors) != 1 || b.Errors[0].Code != tc.code || tc.msg != "" && b.Errors[0].Message != tc.msg {
				t.Fatalf("HTTP %d %s; want %d %s %q", resp.StatusCode, body, tc.status, tc.code, tc.msg)
			}
			if (b.Errors[0].Detail != nil) != tc.detail {
				t.Fatalf("detail %v; want one: %v", b.Errors[0].Detail, tc.detail)
			}
			for k, v := range tc.header {
				if got := resp.Header.Get(k); got != v {
					t.Fatalf("%s: %q, want %q", k, got, v)
				}
			}
			if tc.status != 401 && resp.Header.Get("WWW-Authenticate") != "" {
				t.Fatalf("a %d with a challenge: %q", tc.status, resp.Header.Get("WWW-Authenticate"))
			}
		})
	}
}
