package events

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
)

// seen is what a test receiver got.
type seen struct {
	Method string
	Path   string
	Header http.Header
	Body   []byte
}

// receiver is an httptest server that records requests and answers with
// the handler's status and body.
type receiver struct {
	*httptest.Server
	mu   sync.Mutex
	reqs []seen
}

func newReceiver(t *testing.T, answer http.HandlerFunc) *receiver {
	t.Helper()
	r := &receiver{}
	r.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		r.reqs = append(r.reqs, seen{req.Method, req.URL.Path, req.Header.Clone(), body})
		r.mu.Unlock()
		if answer != nil {
			answer(w, req)
			return
		}
		w.WriteHeader(http.StatusAccepted)
		fmt.Fprint(w, `{"eventListenerUID":"el-1","eventID":"ev-1"}`)
	}))
	t.Cleanup(r.Close)
	return r
}

func (r *receiver) requests() []seen {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]seen(nil), r.reqs...)
}

func loopbackClient(t *testing.T) *http.Client {
	return NewHTTPClient(mustGuard(t, []string{"loopback"}, nil))
}

func pushDelivery(t *testing.T) Delivery {
	t.Helper()
	e := meta.Event{UUID: "5b2c3a7e-1111-4222-8333-944445555666", Kind: meta.EventRepoPush, Repository: "ns/app", Actor: "alice",
		Data: json.RawMessage(`{"updated_tags":["latest"],"digest":"sha256:abc"}`), CreatedAt: time.Now()}
	p, err := QuayPayload(testServer, e)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(p)
	return Delivery{EventUUID: e.UUID, Kind: e.Kind, Body: body}
}

func TestWebhookDelivers(t *testing.T) {
	secret := []byte("It's a Secret to Everybody")
	tests := []struct {
		name    string
		hook    Webhook
		d       func(Delivery) Delivery
		check   func(t *testing.T, s seen, d Delivery)
		wantSig bool
	}{
		{
			name: "plain",
			check: func(t *testing.T, s seen, _ Delivery) {
				if s.Header.Get(SignatureHeader) != "" {
					t.Error("signature sent without a secret")
				}
			},
		},
		{
			name:    "signed, with extra headers",
			hook:    Webhook{Secret: secret, Headers: map[string]string{"X-GitHub-Event": "push", "Authorization": "Bearer tkn-1234567"}},
			wantSig: true,
			check: func(t *testing.T, s seen, _ Delivery) {
				if s.Header.Get("X-GitHub-Event") != "push" || s.Header.Get("Authorization") != "Bearer tkn-1234567" {
					t.Errorf("extra headers: %v", s.Header)
				}
			},
		},
		{
			name: "CloudEvents content type",
			d: func(d Delivery) Delivery {
				d.ContentType = "application/cloudevents+json"
				return d
			},
			check: func(t *testing.T, s seen, _ Delivery) {
				if ct := s.Header.Get("Content-Type"); ct != "application/cloudevents+json" {
					t.Errorf("Content-Type %q", ct)
				}
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rcv := newReceiver(t, nil)
			d := pushDelivery(t)
			if tc.d != nil {
				d = tc.d(d)
			}
			hook := tc.hook
			hook.URL = rcv.URL + "/hooks/berth"
			hook.Client = loopbackClient(t)
			res := hook.Deliver(context.Background(), d)
			if res.Err != nil {
				t.Fatalf("Deliver: %v", res.Err)
			}
			if res.StatusCode != http.StatusAccepted || res.ResponseSnippet != `{"eventListenerUID":"el-1","eventID":"ev-1"}` || res.Latency <= 0 {
				t.Errorf("result %+v", res)
			}
			reqs := rcv.requests()
			if len(reqs) != 1 {
				t.Fatalf("receiver saw %d requests", len(reqs))
			}
			s := reqs[0]
			if s.Method != http.MethodPost || s.Path != "/hooks/berth" || string(s.Body) != string(d.Body) {
				t.Errorf("request %s %s %s", s.Method, s.Path, s.Body)
			}
			if d.ContentType == "" && s.Header.Get("Content-Type") != "application/json" {
				t.Errorf("Content-Type %q", s.Header.Get("Content-Type"))
			}
			if s.Header.Get("X-Berth-Event") != "repo_push" || s.Header.Get("Idempotency-Key") != d.EventUUID ||
				s.Header.Get("X-Berth-Delivery") != d.EventUUID || s.Header.Get("User-Agent") == "" {
				t.Errorf("Berth headers: %v", s.Header)
			}
			if sig := s.Header.Get(SignatureHeader); tc.wantSig && (!Verify(secret, s.Body, sig) || sig != Sign(secret, s.Body)) {
				t.Errorf("signature %q does not verify", sig)
			}
			if tc.check != nil {
				tc.check(t, s, d)
			}
		})
	}
}

func TestWebhookRetryKeepsIdempotencyKey(t *testing.T) {
	rcv := newReceiver(t, nil)
	hook := Webhook{URL: rcv.URL, Secret: []byte("k"), Client: loopbackClient(t)}
	d := pushDelivery(t)
	for range 2 {
		if res := hook.Deliver(context.Background(), d); res.Err != nil {
			t.Fatal(res.Err)
		}
	}
	reqs := rcv.requests()
	if reqs[0].Header.Get("Idempotency-Key") != reqs[1].Header.Get("Idempotency-Key") ||
		reqs[0].Header.Get(SignatureHeader) != reqs[1].Header.Get(SignatureHeader) {
		t.Error("a retry must carry the same idempotency key and signature")
	}
}

func TestWebhookFailures(t *testing.T) {
	slow := make(chan struct{})
	t.Cleanup(func() { close(slow) })
	tests := []struct {
		name       string
		answer     http.HandlerFunc
		ctxTimeout time.Duration
		wantStatus int
		wantErr    string
	}{
		{name: "500", answer: func(w http.ResponseWriter, _ *http.Request) {
			http.Error(w, "database on fire", http.StatusInternalServerError)
		}, wantStatus: 500, wantErr: "500"},
		{name: "404", answer: func(w http.ResponseWriter, _ *http.Request) { http.NotFound(w, nil) }, wantStatus: 404, wantErr: "404"},
		{name: "redirect loop", answer: func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, r.URL.Path+"x", http.StatusTemporaryRedirect)
		}, wantErr: "stopped after 3 redirects"},
		{name: "slow receiver", answer: func(w http.ResponseWriter, r *http.Request) {
			select {
			case <-r.Context().Done():
			case <-slow:
			}
		}, ctxTimeout: 100 * time.Millisecond, wantErr: "deadline exceeded"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			rcv := newReceiver(t, tc.answer)
			ctx := context.Background()
			if tc.ctxTimeout > 0 {
				var cancel context.CancelFunc
				ctx, cancel = context.WithTimeout(ctx, tc.ctxTimeout)
				defer cancel()
			}
			res := Webhook{URL: rcv.URL + "/a", Client: loopbackClient(t)}.Deliver(ctx, pushDelivery(t))
			if res.Err == nil || !strings.Contains(res.Err.Error(), tc.wantErr) {
				t.Fatalf("Err = %v, want one mentioning %q", res.Err, tc.wantErr)
			}
			if res.StatusCode != tc.wantStatus {
				t.Errorf("StatusCode %d, want %d", res.StatusCode, tc.wantStatus)
			}
		})
	}
}

func TestWebhookSnippetIsCapped(t *testing.T) {
	rcv := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) {
		fmt.Fprint(w, strings.Repeat("é", 10_000))
	})
	res := Webhook{URL: rcv.URL, Client: loopbackClient(t)}.Deliver(context.Background(), pushDelivery(t))
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if len(res.ResponseSnippet) > MaxSnippet+3 || !strings.HasPrefix(res.ResponseSnippet, "éé") {
		t.Errorf("snippet of %d bytes", len(res.ResponseSnippet))
	}
}

func TestWebhookRefusesReservedHeaders(t *testing.T) {
	rcv := newReceiver(t, nil)
	for _, h := range []string{"Content-Type", "content-type", "Host", "X-Hub-Signature-256", "x-hub-signature", "Idempotency-Key", "X-Berth-Event", "Bad Name"} {
		res := Webhook{URL: rcv.URL, Headers: map[string]string{h: "x"}, Client: loopbackClient(t)}.Deliver(context.Background(), pushDelivery(t))
		if res.Err == nil {
			t.Errorf("header %q accepted", h)
		}
	}
	d := pushDelivery(t)
	d.Headers = map[string]string{"Content-Type": "text/plain"}
	if res := (Webhook{URL: rcv.URL, Client: loopbackClient(t)}).Deliver(context.Background(), d); res.Err == nil {
		t.Error("delivery header Content-Type accepted")
	}
	if err := ValidateHeaders(map[string]string{"X-Ok": "a\r\nInjected: 1"}); err == nil {
		t.Error("header value with CRLF accepted")
	}
	if n := len(rcv.requests()); n != 0 {
		t.Errorf("%d requests were sent with refused headers", n)
	}
}

func TestWebhookNeverLeaksSecrets(t *testing.T) {
	const (
		secret    = "whsec-0123456789"
		bearer    = "tok-abcdefghij"
		pathToken = "XXXXXXXXXXXXXXXXXXXXXXXX"
		query     = "qtok-9876543210"
		apiKey    = "key-5555666677778888"
		tenant    = "tenant-0123456789" // a name that does not look like a credential
	)
	echo := func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusBadRequest)
		fmt.Fprintf(w, "bad request to %s, headers %v", r.URL.RequestURI(), r.Header)
	}
	rcv := newReceiver(t, echo)
	_, port, _ := net.SplitHostPort(rcv.Listener.Addr().String())
	path := "/services/T000/B000/" + pathToken + "?token=" + query
	hookHeaders := map[string]string{"Authorization": "Bearer " + bearer, "X-Api-Key": apiKey, "X-Tenant": tenant}
	tests := []struct {
		name   string
		url    string
		client *http.Client
	}{
		{"receiver echoes the request", rcv.URL + path, loopbackClient(t)},
		{"guard refuses", rcv.URL + path, NewHTTPClient(nil)},
		{"connection refused", "http://127.0.0.1:1" + path, loopbackClient(t)},
		{"unknown host", "http://no-such-host.invalid:" + port + path, NewHTTPClient(mustGuard(t, nil, newFakeResolver(nil)))},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res := Webhook{URL: tc.url, Secret: []byte(secret), Headers: hookHeaders, Client: tc.client}.Deliver(context.Background(), pushDelivery(t))
			if res.Err == nil {
				t.Fatal("expected a failure")
			}
			all := res.Err.Error() + "\n" + res.ResponseSnippet + "\n" + fmt.Sprintf("%+v", res)
			for _, s := range []string{secret, bearer, pathToken, query, apiKey, tenant} {
				if strings.Contains(all, s) {
					t.Errorf("result leaks %q:\n%s", s, all)
				}
			}
		})
	}
	// The refusal is still recognisable after redaction.
	res := Webhook{URL: rcv.URL + path, Client: NewHTTPClient(nil)}.Deliver(context.Background(), pushDelivery(t))
	if !errors.Is(res.Err, ErrRefused) {
		t.Errorf("Err = %v, want ErrRefused", res.Err)
	}
}

func TestRedirects(t *testing.T) {
	target := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/start" {
			http.Redirect(w, r, "/final", http.StatusPermanentRedirect)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	_, port, _ := net.SplitHostPort(target.Listener.Addr().String())

	// Followed within the guard: a 308 re-POSTs the body.
	res := Webhook{URL: target.URL + "/start", Client: loopbackClient(t)}.Deliver(context.Background(), pushDelivery(t))
	if res.Err != nil || res.StatusCode != http.StatusNoContent {
		t.Fatalf("result %+v", res)
	}
	reqs := target.requests()
	if len(reqs) != 2 || reqs[1].Path != "/final" || len(reqs[1].Body) == 0 {
		t.Fatalf("requests %+v", reqs)
	}

	// To another host, the notification's own headers and its signature
	// stay behind (Go drops only Authorization and cookies); on the same
	// host they follow.
	elsewhere := newReceiver(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusNoContent) })
	away := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, elsewhere.URL+"/final", http.StatusPermanentRedirect)
	})
	hook := Webhook{URL: away.URL + "/", Secret: []byte("s3cret"), Headers: map[string]string{"PRIVATE-TOKEN": "glpat-123"}, Client: loopbackClient(t)}
	if res := hook.Deliver(context.Background(), pushDelivery(t)); res.Err != nil {
		t.Fatalf("cross-host redirect: %+v", res)
	}
	got := elsewhere.requests()
	if len(got) != 1 || got[0].Header.Get("PRIVATE-TOKEN") != "" || got[0].Header.Get(SignatureHeader) != "" || len(got[0].Body) == 0 {
		t.Fatalf("the other host got %v", got)
	}
	if first := away.requests(); len(first) != 1 || first[0].Header.Get("PRIVATE-TOKEN") != "glpat-123" || first[0].Header.Get(SignatureHeader) == "" {
		t.Fatalf("the receiver named got %v", first)
	}
	hook.URL = target.URL + "/start"
	before0 := len(target.requests())
	if res := hook.Deliver(context.Background(), pushDelivery(t)); res.Err != nil {
		t.Fatalf("same-host redirect: %+v", res)
	}
	if reqs := target.requests()[before0:]; len(reqs) != 2 || reqs[1].Header.Get("PRIVATE-TOKEN") != "glpat-123" {
		t.Fatalf("same-host redirect: %v", reqs)
	}

	// From https to http: refused (the body and the receiver's answer would
	// travel in clear).
	c := loopbackClient(t)
	from, _ := http.NewRequest("POST", "https://127.0.0.1:"+port+"/start", nil)
	to, _ := http.NewRequest("POST", "http://127.0.0.1:"+port+"/final", nil)
	if err := c.CheckRedirect(to, []*http.Request{from}); err == nil || !strings.Contains(err.Error(), "https to http") {
		t.Errorf("a redirect from https to http: %v", err)
	}

	// Allowed by name, redirected to a refused literal address.
	bouncer := newReceiver(t, func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "http://127.0.0.1:"+port+"/final", http.StatusTemporaryRedirect)
	})
	_, bport, _ := net.SplitHostPort(bouncer.Listener.Addr().String())
	g := mustGuard(t, []string{"hook.test"}, newFakeResolver(map[string][]string{"hook.test": {"127.0.0.1"}}))
	before := len(target.requests())
	res = Webhook{URL: "http://hook.test:" + bport + "/", Client: NewHTTPClient(g)}.Deliver(context.Background(), pushDelivery(t))
	if !errors.Is(res.Err, ErrRefused) {
		t.Fatalf("Err = %v, want a refused redirect", res.Err)
	}
	if len(bouncer.requests()) != 1 || len(target.requests()) != before {
		t.Error("the refused redirect target was contacted")
	}
}

func TestSlackDelivers(t *testing.T) {
	rcv := newReceiver(t, func(w http.ResponseWriter, _ *http.Request) { fmt.Fprint(w, "ok") })
	p, _ := SamplePayload(testServer, meta.EventRepoPush, "ns/app")
	d := Delivery{EventUUID: "u-1", Kind: meta.EventRepoPush, Body: SlackBody(p, meta.EventRepoPush), ContentType: "text/plain"}
	res := Slack{URL: rcv.URL + "/services/T/B/abc", Client: loopbackClient(t)}.Deliver(context.Background(), d)
	if res.Err != nil || res.ResponseSnippet != "ok" {
		t.Fatalf("result %+v", res)
	}
	s := rcv.requests()[0]
	var msg map[string]any
	if err := json.Unmarshal(s.Body, &msg); err != nil {
		t.Fatal(err)
	}
	if s.Header.Get("Content-Type") != "application/json" || msg["username"] != "Berth" ||
		msg["text"] != "Berth: pushed tags latest, foo to ns/app" || s.Header.Get(SignatureHeader) != "" {
		t.Errorf("Slack got %v %s", s.Header, s.Body)
	}
}

func TestWebhookRejectsBadURL(t *testing.T) {
	for _, u := range []string{"", "ftp://x/", "::", "http://"} {
		if res := (Webhook{URL: u}).Deliver(context.Background(), pushDelivery(t)); res.Err == nil {
			t.Errorf("URL %q accepted", u)
		}
	}
}
