package mirror_test

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"testing"

	"github.com/google/go-containerregistry/pkg/v1/mutate"

	"github.com/berth-dev/berth/internal/meta"
)

// putRawUpstream stores a manifest body under a tag upstream as it is
// (the in-memory upstream keeps any media type).
func (f *mfix) putRawUpstream(t *testing.T, tag, mediaType string, body []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "https://"+f.upstream+"/v2/lib/app/manifests/"+tag, bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.SetBasicAuth("up", "secret")
	req.Header.Set("Content-Type", mediaType)
	resp, err := (&http.Client{Transport: f.upTLS}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusCreated {
		t.Fatalf("put %s upstream: %s", tag, resp.Status)
	}
}

// TestMirrorSkipsRefusedTags: upstream tags Berth refuses whatever the
// sync (a config media type outside the artifact allow-list, a Docker
// schema 1 manifest) do not fail the sync: it copies the other tags,
// deletes the local tags gone upstream, keeps a local tag whose upstream
// moved to a refused manifest where it is, and succeeds, its message
// naming the refused tags; the next sync does the same, still SUCCESS.
func TestMirrorSkipsRefusedTags(t *testing.T) {
	ctx := context.Background()
	f := newMirrorFixture(t)
	f.push(t, "gone", randomImage(t))
	old := f.push(t, "moved", randomImage(t))
	f.create(t, []string{"*"}, nil)
	if err := f.svc.Sync(ctx, mrepo); err != nil {
		t.Fatal(err)
	}
	if st := f.status(t); st.Status != meta.MirrorSuccess {
		t.Fatalf("first sync: %s %q", st.Status, st.LastError)
	}
	f.deleteUpstream(t, "gone")
	good := f.push(t, "good", randomImage(t))
	f.push(t, "policy", mutate.ConfigMediaType(randomImage(t), "application/vnd.example.unknown.config+json"))
	f.push(t, "moved", mutate.ConfigMediaType(randomImage(t), "application/vnd.example.unknown.config+json"))
	f.putRawUpstream(t, "schema1", "application/vnd.docker.distribution.manifest.v1+json",
		[]byte(`{"schemaVersion":1,"name":"lib/app","tag":"schema1","architecture":"amd64","fsLayers":[],"history":[]}`))
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
		if got["good"] != good.String() {
			t.Fatalf("sync %d: good is at %q, want %s", i+2, got["good"], good)
		}
		if got["moved"] != old.String() {
			t.Fatalf("sync %d: moved is at %q, want where it was, %s", i+2, got["moved"], old)
		}
		for _, tag := range []string{"policy", "schema1"} {
			if _, ok := got[tag]; ok {
				t.Fatalf("sync %d: the refused %s was stored", i+2, tag)
			}
		}
		ev := f.events(t, meta.EventMirrorSyncSuccess)
		var data map[string]string
		json.Unmarshal(ev[len(ev)-1].Data, &data)
		msg := data["message"]
		for _, want := range []string{"moved", "policy", "schema1", "not in this registry's allowed artifact types", "schema 1"} {
			if len(ev) != i+2 || !strings.Contains(msg, want) {
				t.Fatalf("sync %d: %d success events, the last saying %q: want it to say %q", i+2, len(ev), msg, want)
			}
		}
		t.Logf("message: %s", msg)
	}
}
