package proxy

import (
	"container/list"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/berth-dev/berth/internal/meta"
)

// maxMisses bounds the upstream misses one process remembers: past it the
// oldest is forgotten first.
const maxMisses = 10_000

// defaultNotFoundTTL is how long an upstream miss is remembered unless
// Options.NotFoundTTL says otherwise.
const defaultNotFoundTTL = time.Minute

// errUpstreamMissing is what a manifest fetch answers when the upstream
// said it has no such manifest (404): unknown content, and remembered.
var errUpstreamMissing = fmt.Errorf("not found upstream: %w", meta.ErrManifestNotFound)

// missCache remembers the manifests (by tag or digest) an upstream
// answered 404 for, each for ttl, so that pulls of what the upstream does
// not have (a loop of random digests, say) neither ask it again nor take
// one of the organization's fetch turns. At most max entries; all share
// one ttl, so the oldest is also the first to expire. Each process keeps
// its own.
type missCache struct {
	mu      sync.Mutex
	ttl     time.Duration
	max     int
	order   *list.List // of *miss, oldest first
	entries map[string]*list.Element
}

type miss struct {
	key     string
	expires time.Time
}

func newMissCache(ttl time.Duration, max int) *missCache {
	return &missCache{ttl: ttl, max: max, order: list.New(), entries: map[string]*list.Element{}}
}

// missKey names one reference of one upstream repository as the
// organization reaches it: a changed upstream or account asks again.
func missKey(org, upstream, user, path, tag, digest string) string {
	return org + "\x00" + upstream + "\x00" + user + "\x00" + path + "\x00" + tag + "\x00" + digest
}

// missed reports whether key's upstream miss is remembered at now.
func (c *missCache) missed(key string, now time.Time) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.entries[key]
	if !ok {
		return false
	}
	if !now.Before(e.Value.(*miss).expires) {
		c.order.Remove(e)
		delete(c.entries, key)
		return false
	}
	return true
}

// remember records an upstream miss of key at now, forgetting what has
// expired and, past max, the oldest.
func (c *missCache) remember(key string, now time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.entries[key]; ok {
		e.Value.(*miss).expires = now.Add(c.ttl)
		c.order.MoveToBack(e)
	} else {
		c.entries[key] = c.order.PushBack(&miss{key: key, expires: now.Add(c.ttl)})
	}
	for e := c.order.Front(); e != nil && (c.order.Len() > c.max || !now.Before(e.Value.(*miss).expires)); e = c.order.Front() {
		c.order.Remove(e)
		delete(c.entries, e.Value.(*miss).key)
	}
}

// reset forgets every miss (the configuration changed).
func (c *missCache) reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.order.Init()
	clear(c.entries)
}

// isUpstreamMissing reports whether a manifest fetch failed because the
// upstream has no such manifest.
func isUpstreamMissing(err error) bool { return errors.Is(err, errUpstreamMissing) }
