package events

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/http/httpguts"
)

// DeliveryTimeout bounds one webhook or Slack delivery (Quay's 10 s).
const DeliveryTimeout = 10 * time.Second

// MaxSnippet is how much of a receiver's answer a Result keeps.
const MaxSnippet = 4 << 10

// maxRedirects is how many redirects a delivery follows (each checked).
const maxRedirects = 3

// Delivery is one event, rendered, on its way to one notification.
type Delivery struct {
	EventUUID   string
	Kind        string
	Body        []byte // already rendered
	ContentType string // "application/json" when empty
	Headers     map[string]string
}

// Result is the outcome of one delivery attempt. Err is nil exactly when
// the receiver accepted the delivery. Neither Err nor ResponseSnippet
// carries the method's secrets (signing secret, the values of the extra
// headers, the URL's path and query).
type Result struct {
	StatusCode      int // HTTP status, or the SMTP reply code for email
	Latency         time.Duration
	Err             error
	ResponseSnippet string // the first MaxSnippet bytes of the answer
}

// Method delivers to one kind of receiver.
type Method interface {
	Deliver(ctx context.Context, d Delivery) Result
}

// Webhook POSTs the body to URL. Headers sent: Content-Type, User-Agent,
// X-Berth-Event (the kind), X-Berth-Delivery and Idempotency-Key (the
// event UUID, the same on every retry), X-Hub-Signature-256 when Secret
// is set, and the extra Headers (which may not replace any of those).
type Webhook struct {
	URL     string
	Secret  []byte
	Headers map[string]string
	// Client sends the request; nil is NewHTTPClient with a guard that
	// allows nothing beyond public addresses.
	Client *http.Client
}

// Deliver implements Method.
func (w Webhook) Deliver(ctx context.Context, d Delivery) Result {
	return post(ctx, w.Client, w.URL, d, w.Secret, w.Headers)
}

// Slack POSTs a Slack message (see SlackBody) to an incoming-webhook URL.
type Slack struct {
	URL    string
	Client *http.Client
}

// Deliver implements Method. d.Body is the message SlackBody built.
func (s Slack) Deliver(ctx context.Context, d Delivery) Result {
	d.ContentType = "application/json"
	return post(ctx, s.Client, s.URL, d, nil, nil)
}

// ErrUnsendable marks the error of a delivery that the HTTP client
// refuses to send as its method is configured (a header value it would
// not write, a URL that does not parse): no receiver was asked, and
// another attempt would meet the same error.
var ErrUnsendable = errors.New("not sendable as configured")

// unsendable is an error that is ErrUnsendable (errors.Is) and reads as
// err does.
type unsendable struct{ err error }

func (u unsendable) Error() string        { return u.err.Error() }
func (u unsendable) Unwrap() error        { return u.err }
func (u unsendable) Is(target error) bool { return target == ErrUnsendable }

// ValidateHeaders checks a notification's extra headers: names and values
// that Go's HTTP client sends (a value holds no control character but the
// horizontal tab, and no DEL), and none of the headers Berth sets itself.
func ValidateHeaders(h map[string]string) error {
	for k, v := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return fmt.Errorf("header name %q is invalid", k)
		}
		if reservedHeader(k) {
			return fmt.Errorf("header %s is set by Berth and cannot be configured", http.CanonicalHeaderKey(k))
		}
		if !httpguts.ValidHeaderFieldValue(v) {
			return fmt.Errorf("header %s: value contains a control character (only a tab may be one)", http.CanonicalHeaderKey(k))
		}
	}
	return nil
}

func reservedHeader(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Content-Type", "Content-Length", "Content-Encoding", "Transfer-Encoding", "Host", "Connection",
		"Te", "Trailer", "Upgrade", "Expect", "Keep-Alive", "Proxy-Connection",
		SignatureHeader, "X-Hub-Signature", "X-Berth-Event", "X-Berth-Delivery", "Idempotency-Key":
		return true
	}
	return false
}

// post is the HTTP delivery shared by Webhook and Slack.
func post(ctx context.Context, client *http.Client, rawURL string, d Delivery, secret []byte, extra map[string]string) Result {
	return send(ctx, client, rawURL, d, secret, extra)
}

// send is post that also keeps hidden (credentials, in the body or in
// extra) out of the Result; a request whose body holds one of them is
// redirected to no other host (NewHTTPClient).
func send(ctx context.Context, client *http.Client, rawURL string, d Delivery, secret []byte, extra map[string]string, hidden ...string) (res Result) {
	start := time.Now()
	defer func() { res.Latency = time.Since(start) }()
	u, err := url.Parse(rawURL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		res.Err = unsendable{errors.New("delivery URL is not an http(s) URL")}
		return res
	}
	target := redactURL(u)
	hiddenValues := map[string]string{}
	for i, h := range hidden {
		hiddenValues[fmt.Sprint(i)] = h
		if h != "" && (bytes.Contains(d.Body, []byte(h)) || bytes.Contains(d.Body, []byte(url.QueryEscape(h)))) {
			ctx = context.WithValue(ctx, bodyCredentialsKey{}, true)
		}
	}
	secrets := secretStrings(u, secret, extra, d.Headers, hiddenValues)
	for _, h := range []map[string]string{extra, d.Headers} {
		if err := ValidateHeaders(h); err != nil {
			res.Err = unsendable{fmt.Errorf("POST %s: %w", target, err)}
			return res
		}
	}
	if client == nil {
		client = NewHTTPClient(nil)
	}
	ctx, cancel := context.WithTimeout(ctx, DeliveryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, rawURL, bytes.NewReader(d.Body))
	if err != nil {
		res.Err = unsendable{fmt.Errorf("POST %s: invalid request", target)}
		return res
	}
	for _, h := range []map[string]string{d.Headers, extra} {
		for k, v := range h {
			req.Header.Set(k, v)
		}
	}
	ct := d.ContentType
	if ct == "" {
		ct = "application/json"
	}
	req.Header.Set("Content-Type", ct)
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", "Berth-Webhook/1")
	}
	if d.Kind != "" {
		req.Header.Set("X-Berth-Event", d.Kind)
	}
	if d.EventUUID != "" {
		req.Header.Set("X-Berth-Delivery", d.EventUUID)
		req.Header.Set("Idempotency-Key", d.EventUUID)
	}
	if len(secret) > 0 {
		req.Header.Set(SignatureHeader, Sign(secret, d.Body))
	}
	resp, err := client.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message repeats the full URL
		}
		res.Err = fmt.Errorf("POST %s: %w", target, redactErr(err, secrets))
		return res
	}
	defer resp.Body.Close()
	res.StatusCode = resp.StatusCode
	snippet, readErr := io.ReadAll(io.LimitReader(resp.Body, MaxSnippet))
	_, _ = io.CopyN(io.Discard, resp.Body, 64<<10) // lets the connection be reused
	res.ResponseSnippet = redact(strings.ToValidUTF8(string(snippet), "\uFFFD"), secrets)
	switch {
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		// The reason phrase is the receiver's text, as the body is: it may
		// echo a credential back.
		res.Err = fmt.Errorf("POST %s: receiver answered %s", target, redact(strings.ToValidUTF8(resp.Status, "\uFFFD"), secrets))
	case readErr != nil && ctx.Err() != nil:
		res.Err = fmt.Errorf("POST %s: reading the answer: %w", target, ctx.Err())
	}
	return res
}

// bodyCredentialsKey marks the context of a request whose body carries
// credentials (a GitLab trigger token): NewHTTPClient follows no redirect
// of it to another host, since Go re-sends the body on a 307 or 308.
type bodyCredentialsKey struct{}

// redirectSafe reports whether a redirect to another host keeps a request
// header: those that say what the body is, not who sends it.
func redirectSafe(name string) bool {
	switch http.CanonicalHeaderKey(name) {
	case "Content-Type", "Content-Length", "User-Agent", "Accept":
		return true
	}
	return false
}

// RedactURL is a hook URL as Berth shows it (redactURL): scheme and host,
// the path and query, if any, replaced by "/…". A URL that does not parse
// is shown as "…".
func RedactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil || u.Host == "" {
		return "…"
	}
	return redactURL(u)
}

// IsRedactedURL reports whether raw is a URL as RedactURL shows one with
// a path or query: not a URL to send to (the API's own redaction echoed
// back).
func IsRedactedURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && u.Path == "/…" && u.RawQuery == ""
}

// redactURL keeps scheme and host: paths and queries of hook URLs carry
// tokens (Slack, Teams, Discord).
func redactURL(u *url.URL) string {
	s := u.Scheme + "://" + u.Host
	if (u.Path != "" && u.Path != "/") || u.RawQuery != "" {
		s += "/…"
	}
	return s
}

// secretStrings are the strings a receiver might echo that must not end
// up in a Result: the signing secret, the values of the extra headers
// (whatever their names: Berth seals them all, as credentials), the URL's
// query and its token-like path segments.
func secretStrings(u *url.URL, secret []byte, headers ...map[string]string) []string {
	var out []string
	add := func(s string) {
		if len(s) >= 4 {
			out = append(out, s)
		}
	}
	add(string(secret))
	for _, h := range headers {
		for _, v := range h {
			add(v)
			if _, cred, ok := strings.Cut(v, " "); ok { // "Bearer <token>"
				add(strings.TrimSpace(cred))
			}
		}
	}
	if u != nil {
		if u.RawQuery != "" {
			add(u.RawQuery)
			for _, vs := range u.Query() {
				for _, v := range vs {
					if len(v) >= 8 {
						add(v)
					}
				}
			}
		}
		for seg := range strings.SplitSeq(u.Path, "/") {
			if len(seg) >= 16 {
				add(seg)
			}
		}
	}
	// Longest first, so that a secret containing another is replaced whole.
	slices.SortFunc(out, func(a, b string) int { return len(b) - len(a) })
	return out
}

func redact(s string, secrets []string) string {
	for _, sec := range secrets {
		s = strings.ReplaceAll(s, sec, "[REDACTED]")
	}
	return s
}

// redactErr keeps err's chain (errors.Is still works) unless its message
// contains a secret, in which case only the redacted text survives.
func redactErr(err error, secrets []string) error {
	msg := err.Error()
	if r := redact(msg, secrets); r != msg {
		return errors.New(r)
	}
	return err
}

// NewHTTPClient is the client deliveries use: every connection goes
// through the guard's DialContext (nil is a guard that allows nothing
// beyond public addresses), no proxy is taken from the environment, a
// request takes at most 10 s, and at most 3 redirects are followed, each
// checked by the guard before it is requested. A redirect to another host
// loses the request's headers but those that describe the body, and is
// refused for a request whose body holds credentials (send's hidden
// values, such as a GitLab trigger token).
func NewHTTPClient(g *Guard) *http.Client {
	if g == nil {
		g, _ = NewGuard(nil) // cannot fail without entries
	}
	t := &http.Transport{
		Proxy:                  nil,
		DialContext:            g.DialContext,
		ForceAttemptHTTP2:      true,
		MaxIdleConns:           100,
		IdleConnTimeout:        90 * time.Second,
		TLSHandshakeTimeout:    DeliveryTimeout,
		ResponseHeaderTimeout:  DeliveryTimeout,
		ExpectContinueTimeout:  time.Second,
		MaxResponseHeaderBytes: 64 << 10,
	}
	return &http.Client{
		Transport: t,
		Timeout:   DeliveryTimeout,
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if len(via) > maxRedirects {
				return fmt.Errorf("stopped after %d redirects", maxRedirects)
			}
			if err := g.CheckURL(req.Context(), req.URL.String()); err != nil {
				return fmt.Errorf("redirect refused: %w", err)
			}
			first := via[0].URL
			if first.Scheme == "https" && req.URL.Scheme != "https" {
				return errors.New("redirect refused: from https to http")
			}
			if !strings.EqualFold(req.URL.Host, first.Host) {
				if req.Context().Value(bodyCredentialsKey{}) != nil {
					// Headers can be dropped, the body cannot: a 307 or
					// 308 would hand the token to the other host.
					return errors.New("redirect refused: to another host, and the request's body holds credentials")
				}
				// Go drops Authorization and cookies on a redirect to
				// another host; the notification's own headers (tokens,
				// such as GitLab's) and its signature stay with the
				// receiver it names.
				for name := range req.Header {
					if !redirectSafe(name) {
						req.Header.Del(name)
					}
				}
			}
			return nil
		},
	}
}
