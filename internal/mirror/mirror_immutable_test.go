package mirror_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/berth-dev/berth/internal/meta"
)

// An immutable local tag that moved upstream stays where it is, and the
// sync goes on: the other tags of its group move, tags gone upstream are
// deleted, the new digest's signature comes along, and the sync succeeds,
// saying which tag it kept.
func TestMirrorKeepsImmutableTagAndSyncs(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	one := randomImage(t)
	d1 := f.push(t, "a", one)
	f.push(t, "b", one)
	f.push(t, "c", one)
	f.create(t, []string{"a", "b", "c"}, nil)
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	if got := f.localTags(t); got["a"] != d1.String() || got["b"] != d1.String() || got["c"] != d1.String() {
		t.Fatalf("tags after the first sync: %v", got)
	}
	if _, err := f.db.Policies().CreateTagPolicy(ctx, meta.TagPolicy{Kind: meta.PolicyImmutability, Namespace: "acme", Repository: mrepo,
		TagPattern: "^b$", TagPatternMatches: true}); err != nil {
		t.Fatal(err)
	}
	// Upstream moves a and b to one new digest (one group, one put),
	// deletes c, and signs the new digest.
	two := randomImage(t)
	d2 := f.push(t, "a", two)
	f.push(t, "b", two)
	f.deleteUpstream(t, "c")
	sig := "sha256-" + d2.Hex + ".sig"
	f.push(t, sig, randomImage(t))
	for i := range 2 { // the next sync is no different: nothing is stuck
		if err := f.svc.Sync(ctx, mrepo); err != nil {
			t.Fatal(err)
		}
		st := f.status(t)
		if st.Status != meta.MirrorSuccess {
			t.Fatalf("sync %d: status %s (%s), want %s", i+2, st.Status, st.LastError, meta.MirrorSuccess)
		}
		got := f.localTags(t)
		if got["a"] != d2.String() {
			t.Fatalf("sync %d: a is at %s, want the upstream's %s", i+2, got["a"], d2)
		}
		if got["b"] != d1.String() {
			t.Fatalf("sync %d: the immutable b is at %s, want %s", i+2, got["b"], d1)
		}
		if _, ok := got["c"]; ok {
			t.Fatalf("sync %d: c, gone upstream, is still here: %v", i+2, got)
		}
		if _, ok := got[sig]; !ok {
			t.Fatalf("sync %d: the new digest's signature was not copied: %v", i+2, keys(got))
		}
		ev := f.events(t, meta.EventMirrorSyncSuccess)
		var data map[string]string
		json.Unmarshal(ev[len(ev)-1].Data, &data)
		if len(ev) != i+2 || !strings.Contains(data["message"], "immutable") || !strings.Contains(data["message"], " b") {
			t.Fatalf("sync %d: %d success events, the last saying %q: want it to name the kept immutable tag b", i+2, len(ev), data["message"])
		}
	}
}
