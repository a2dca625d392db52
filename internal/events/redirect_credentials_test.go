package events

import (
	"context"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
)

// TestTriggerTokenNotRedirectedToAnotherHost: a gitlab_trigger's token is
// in the request's body, which Go sends again on a 307 or 308: a redirect
// to another host is refused before that host is contacted, and the
// result does not show the token. A redirect on the receiver's own host
// is still followed, body and token with it.
func TestTriggerTokenNotRedirectedToAnotherHost(t *testing.T) {
	const token = "glptt-0123456789abcdef"
	elsewhere := newReceiver(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusCreated) })
	_, eport, _ := net.SplitHostPort(elsewhere.Listener.Addr().String())
	var redirect atomic.Int32 // the status gitlab.test answers its first request with
	gitlab := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		switch code := int(redirect.Load()); {
		case r.URL.Path == "/final":
			w.WriteHeader(http.StatusCreated)
		case code < 0: // on its own host
			http.Redirect(w, r, "/final", -code)
		default:
			http.Redirect(w, r, "http://elsewhere.test:"+eport+"/api/v4/projects/1/trigger/pipeline", code)
		}
	})
	_, gport, _ := net.SplitHostPort(gitlab.Listener.Addr().String())
	names := newFakeResolver(map[string][]string{"gitlab.test": {"127.0.0.1"}, "elsewhere.test": {"127.0.0.1"}})
	client := NewHTTPClient(mustGuard(t, []string{"gitlab.test", "elsewhere.test"}, names))
	m := GitLabTrigger{BaseURL: "http://gitlab.test:" + gport, Project: "1", Token: token, Client: client}

	for _, code := range []int{http.StatusTemporaryRedirect, http.StatusPermanentRedirect} {
		redirect.Store(int32(code))
		res := m.Deliver(context.Background(), Delivery{Kind: EventBaseImageUpdated, Body: basePayload(t)})
		if res.Err == nil || !strings.Contains(res.Err.Error(), "redirect refused") {
			t.Fatalf("%d to another host: %+v, want a refused redirect", code, res)
		}
		if strings.Contains(res.Err.Error(), token) || strings.Contains(res.ResponseSnippet, token) {
			t.Fatalf("%d: the result shows the token: %+v", code, res)
		}
		if got := elsewhere.requests(); len(got) != 0 {
			t.Fatalf("%d: the other host was sent %d requests (the first's body: %q)", code, len(got), got[0].Body)
		}
	}

	// On the receiver's own host, a redirect is followed with the body.
	redirect.Store(-http.StatusPermanentRedirect)
	if res := m.Deliver(context.Background(), Delivery{Kind: EventBaseImageUpdated, Body: basePayload(t)}); res.Err != nil || res.StatusCode != http.StatusCreated {
		t.Fatalf("same-host redirect: %+v", res)
	}
	if reqs := gitlab.requests(); reqs[len(reqs)-1].Path != "/final" || !strings.Contains(string(reqs[len(reqs)-1].Body), "token="+token) {
		t.Fatalf("same-host redirect: the receiver got %+v", reqs[len(reqs)-1])
	}

	// A webhook's body holds no credentials: its redirect to another host
	// is followed (its headers and signature stay behind: TestRedirects).
	redirect.Store(http.StatusTemporaryRedirect)
	hook := Webhook{URL: "http://gitlab.test:" + gport + "/", Secret: []byte("s3cret-signing"), Client: client}
	if res := hook.Deliver(context.Background(), pushDelivery(t)); res.Err != nil {
		t.Fatalf("a webhook's cross-host redirect: %+v", res)
	}
	if got := elsewhere.requests(); len(got) != 1 || len(got[0].Body) == 0 {
		t.Fatalf("the webhook's redirect target got %v", got)
	}
}
