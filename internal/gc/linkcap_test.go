package gc

import (
	"context"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestUnreferencedBlobGoesAfterUploadExpiry: blobs pushed without a
// manifest do not count in a namespace's quota, so they must not stay:
// one that no manifest references goes once it was first linked longer
// ago than gc.uploadExpiry, however recently a client HEADed it and
// whatever uploads are in progress in its repository. A referenced blob
// stays, and so does one first linked within gc.uploadExpiry that a
// client HEADed (buildx HEADs a blob, skips it and pushes the manifest).
func TestUnreferencedBlobGoesAfterUploadExpiry(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			const delay, expiry = 300 * time.Millisecond, 1200 * time.Millisecond
			w := newWorldWith(t, dialect, Options{Delay: delay, UploadExpiry: expiry})
			headed := w.blob("acme/app", []byte("pushed without a manifest, HEADed ever since"))
			uploading := w.blob("acme/ci", []byte("pushed without a manifest beside an upload that never ends"))
			_, raw := w.image("acme/kept", "v1", []byte("a layer a tag keeps"))
			time.Sleep(expiry + 100*time.Millisecond)
			recent := w.blob("acme/buildx", []byte("pushed by a build a moment ago"))
			time.Sleep(delay + 50*time.Millisecond)
			// Within the delay: the upload session in acme/ci is written,
			// and every blob is HEADed (confirmed).
			if err := w.db.Uploads().CreateUpload(ctx, meta.Upload{ID: "0b6a7a4e-7d0c-4a53-a1a6-0000000000c1", Repository: "acme/ci", HashState: []byte{1}, Actor: "ci"}, 0); err != nil {
				t.Fatal(err)
			}
			for repo, d := range map[string]digest.Digest{"acme/app": headed, "acme/ci": uploading, "acme/buildx": recent} {
				if st, _ := w.do("HEAD", "/v2/"+repo+"/blobs/"+d.String(), nil); st != 200 {
					t.Fatalf("HEAD %s in %s: %d", d, repo, st)
				}
			}
			frozen := time.Now()
			w.c.now = func() time.Time { return frozen }
			rep, err := w.c.Pass(ctx, false)
			if err != nil {
				t.Fatal(err)
			}
			for repo, d := range map[string]digest.Digest{"acme/app": headed, "acme/ci": uploading} {
				if st, _ := w.do("HEAD", "/v2/"+repo+"/blobs/"+d.String(), nil); st != 404 {
					t.Errorf("%s, unreferenced and first linked before gc.uploadExpiry, answers %d after the pass", repo, st)
				}
				if w.stored(d) {
					t.Errorf("the bytes of %s (%s) are still stored", d, repo)
				}
			}
			if st, _ := w.do("HEAD", "/v2/acme/buildx/blobs/"+recent.String(), nil); st != 200 || !w.stored(recent) {
				t.Errorf("a blob first linked within gc.uploadExpiry and HEADed within the delay was collected: %d", st)
			}
			if err := w.pullable("acme/kept", "v1"); err != nil {
				t.Errorf("a tagged image lost content: %v (%d bytes)", err, len(raw))
			}
			if rep.Collected.Links != 2 {
				t.Errorf("collected %+v, want the 2 unreferenced links", rep.Collected)
			}
		})
	}
}
