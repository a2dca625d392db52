package proxy

import (
	"context"
	"errors"
	"sync"
	"time"
)

// errBusy is the error of an upstream fetch that found no turn: the
// organization's manifest fetches (blob downloads) were all taken for
// ManifestWait (BlobWait).
var errBusy = errors.New("too many upstream fetches of the organization at once")

// busyRetry is the Retry-After of a pull answered errBusy.
const busyRetry = 10 * time.Second

// orgLimiter bounds the upstream manifest fetches, or blob downloads, of
// each proxy organization in this process (n at once).
type orgLimiter struct {
	mu   sync.Mutex
	n    int
	orgs map[string]chan struct{}
}

// acquire waits up to wait for a turn of the organization; release gives
// it back.
func (l *orgLimiter) acquire(ctx context.Context, org string, wait time.Duration) (release func(), err error) {
	l.mu.Lock()
	if l.orgs == nil {
		l.orgs = map[string]chan struct{}{}
	}
	ch, ok := l.orgs[org]
	if !ok {
		ch = make(chan struct{}, l.n)
		l.orgs[org] = ch
	}
	l.mu.Unlock()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	default:
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-t.C:
		return nil, errBusy
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}
