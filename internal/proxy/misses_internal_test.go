package proxy

import (
	"fmt"
	"testing"
	"time"
)

// TestMissCacheBounded: the cache of upstream misses holds at most its
// bound, forgetting the oldest first, and forgets each after its ttl.
func TestMissCacheBounded(t *testing.T) {
	now := time.Unix(1000, 0)
	c := newMissCache(time.Minute, 3)
	for i := range 4 {
		c.remember(fmt.Sprint(i), now.Add(time.Duration(i)*time.Second))
	}
	if c.order.Len() != 3 || len(c.entries) != 3 {
		t.Fatalf("%d entries (%d in order), want 3", len(c.entries), c.order.Len())
	}
	at := now.Add(5 * time.Second)
	if c.missed("0", at) {
		t.Error("the oldest miss is still remembered past the bound")
	}
	for _, k := range []string{"1", "2", "3"} {
		if !c.missed(k, at) {
			t.Errorf("miss %s forgotten", k)
		}
	}
	// Remembered again, "1" becomes the newest: "2" goes first.
	c.remember("1", at)
	c.remember("4", at)
	if c.missed("2", at) || !c.missed("1", at) {
		t.Error("remembering a miss again did not make it the newest")
	}
	// Past the ttl nothing is remembered, and a new miss clears what
	// has expired.
	later := at.Add(time.Minute)
	if c.missed("3", later) {
		t.Error("a miss is remembered past its ttl")
	}
	c.remember("5", later)
	if len(c.entries) != 1 || c.order.Len() != 1 {
		t.Errorf("%d entries after the others expired, want 1", len(c.entries))
	}
}
