package mirror

import (
	"context"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"time"
)

// retryTransport retries upstream requests that met a rate limit (429) or
// a server error (5xx), honouring Retry-After, with exponential backoff and
// full jitter, a bounded number of times. Only requests without a body
// (the GETs and HEADs a mirror makes) are retried.
type retryTransport struct {
	next     http.RoundTripper
	tries    int
	base     time.Duration
	maxDelay time.Duration
}

func retryable(code int) bool {
	return code == http.StatusTooManyRequests || code == http.StatusBadGateway ||
		code == http.StatusServiceUnavailable || code == http.StatusGatewayTimeout || code == http.StatusInternalServerError
}

func (t *retryTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	for attempt := 1; ; attempt++ {
		resp, err := t.next.RoundTrip(req)
		if err != nil || !retryable(resp.StatusCode) || attempt >= t.tries || (req.Body != nil && req.Body != http.NoBody) {
			return resp, err
		}
		delay := t.base << (attempt - 1)
		delay = delay/2 + rand.N(delay/2+1) // jitter
		if s := resp.Header.Get("Retry-After"); s != "" {
			if secs, err := strconv.Atoi(s); err == nil && secs >= 0 {
				delay = time.Duration(secs) * time.Second
			} else if at, err := http.ParseTime(s); err == nil {
				delay = time.Until(at)
			}
		}
		delay = min(max(delay, 0), t.maxDelay)
		resp.Body.Close()
		timer := time.NewTimer(delay)
		select {
		case <-req.Context().Done():
			timer.Stop()
			return nil, req.Context().Err()
		case <-timer.C:
		}
	}
}

// hostLimiter bounds the syncs copying from one upstream host at once in
// this process (each replica has its own).
type hostLimiter struct {
	mu    sync.Mutex
	n     int
	hosts map[string]chan struct{}
}

func (l *hostLimiter) acquire(ctx context.Context, host string) (func(), error) {
	l.mu.Lock()
	if l.hosts == nil {
		l.hosts = map[string]chan struct{}{}
	}
	ch, ok := l.hosts[host]
	if !ok {
		ch = make(chan struct{}, l.n)
		l.hosts[host] = ch
	}
	l.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
