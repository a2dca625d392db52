package mirror_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/types"

	"github.com/berth-dev/berth/internal/meta"
)

// pushIndex stores upstream, under tag, an index of a random image for
// each architecture, and an attestation manifest (platform
// unknown/unknown) as buildx adds by default.
func (f *mfix) pushIndex(t *testing.T, tag string, archs ...string) v1.Hash {
	t.Helper()
	var idx v1.ImageIndex = empty.Index
	idx = mutate.IndexMediaType(idx, types.OCIImageIndex)
	for _, arch := range archs {
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: randomImage(t),
			Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "linux", Architecture: arch}}})
	}
	idx = mutate.AppendManifests(idx, mutate.IndexAddendum{Add: randomImage(t),
		Descriptor: v1.Descriptor{Platform: &v1.Platform{OS: "unknown", Architecture: "unknown"},
			Annotations: map[string]string{"vnd.docker.reference.type": "attestation-manifest"}}})
	r, _ := name.ParseReference(f.upstream + "/lib/app:" + tag)
	if err := remote.WriteIndex(r, idx, f.upOpts()...); err != nil {
		t.Fatal(err)
	}
	d, _ := idx.Digest()
	return d
}

// TestMirrorArchFilterSkipsIndexWithoutPlatform: with an
// architecture_filter, an upstream index that has none of its platforms
// (buildx's default amd64 and attestation, under a filter of arm64) is
// skipped, as every later sync would find it again: the sync copies the
// other tags, deletes the local tags gone upstream, keeps a local tag
// whose upstream moved to such an index where it is, and succeeds, its
// message naming the skipped tags; the next sync does the same.
func TestMirrorArchFilterSkipsIndexWithoutPlatform(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	f.pushIndex(t, "a", "amd64", "arm64")
	f.pushIndex(t, "moved", "amd64", "arm64")
	f.push(t, "gone", randomImage(t))
	f.create(t, []string{"*"}, []string{"arm64"})
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	if st := f.status(t); st.Status != meta.MirrorSuccess {
		t.Fatalf("first sync: %s %q", st.Status, st.LastError)
	}
	first := f.localTags(t)
	f.deleteUpstream(t, "gone")
	f.pushIndex(t, "b", "amd64")
	f.pushIndex(t, "moved", "amd64")
	for i := range 2 {
		if err := f.svc.Sync(ctx, mrepo); err != nil {
			t.Fatal(err)
		}
		st := f.status(t)
		if st.Status != meta.MirrorSuccess || st.RetriesRemaining != 3 {
			t.Fatalf("sync %d: status %s, retries %d (%q), want SUCCESS", i+2, st.Status, st.RetriesRemaining, st.LastError)
		}
		got := f.localTags(t)
		if _, ok := got["gone"]; ok {
			t.Fatalf("sync %d: gone, deleted upstream, is still here: %v", i+2, keys(got))
		}
		if _, ok := got["b"]; ok {
			t.Fatalf("sync %d: b, with no arm64 upstream, was stored: %v", i+2, keys(got))
		}
		if got["a"] != first["a"] || got["moved"] != first["moved"] {
			t.Fatalf("sync %d: a at %q, moved at %q; want them where they were (%s, %s)", i+2, got["a"], got["moved"], first["a"], first["moved"])
		}
		ev := f.events(t, meta.EventMirrorSyncSuccess)
		var data map[string]string
		json.Unmarshal(ev[len(ev)-1].Data, &data)
		msg := data["message"]
		for _, want := range []string{"skipped 2 tag(s)", "b", "moved", "no platform of the architecture_filter", "arm64"} {
			if len(ev) != i+2 || !strings.Contains(msg, want) {
				t.Fatalf("sync %d: %d success events, the last saying %q: want it to say %q", i+2, len(ev), msg, want)
			}
		}
		t.Logf("message: %s", msg)
	}
}
