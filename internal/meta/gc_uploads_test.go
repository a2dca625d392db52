package meta_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestStaleLinksSpareAPushInProgress: a slow push links its first layers
// long before its manifest arrives. A link older than the delay that no
// manifest references is collected, unless its repository has an upload
// session written within the delay or claimed now (the same push still
// uploading its other layers): its manifest PUT must find the layers.
// An upload session idle for longer than the delay spares nothing.
func TestStaleLinksSpareAPushInProgress(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			const delay = time.Hour
			linkedAt := time.Now().Add(-2 * delay)
			repos := []string{"app", "pushing", "streaming", "abandoned"}
			for _, repo := range repos {
				if _, err := db.Blobs().StoreBlob(ctx, repo, blobOf("first layer of "+repo), meta.UploadClaim{}, meta.Writer{Actor: "ci"}, metatest.NoBytes); err != nil {
					t.Fatal(err)
				}
			}
			if err := db.Exec(ctx, "UPDATE repository_blobs SET created_at = ?", linkedAt.UnixMicro()); err != nil {
				t.Fatal(err)
			}
			// pushing: a session written a moment ago (its last chunk).
			upload := func(repo, id string) {
				t.Helper()
				if err := db.Uploads().CreateUpload(ctx, meta.Upload{ID: id, Repository: repo, HashState: []byte{1}, Actor: "ci"}, 0); err != nil {
					t.Fatal(err)
				}
			}
			upload("pushing", "0b6a7a4e-7d0c-4a53-a1a6-000000000001")
			// streaming: a session last written before the delay whose
			// writer still holds its claim (one long PATCH).
			upload("streaming", "0b6a7a4e-7d0c-4a53-a1a6-000000000002")
			if _, err := db.Uploads().ClaimUpload(ctx, "streaming", "0b6a7a4e-7d0c-4a53-a1a6-000000000002", time.Minute); err != nil {
				t.Fatal(err)
			}
			// abandoned: a session nobody wrote to within the delay.
			upload("abandoned", "0b6a7a4e-7d0c-4a53-a1a6-000000000003")
			if err := db.Exec(ctx, "UPDATE uploads SET updated_at = ? WHERE repository IN ('streaming', 'abandoned')", linkedAt.UnixMicro()); err != nil {
				t.Fatal(err)
			}

			// The links were first made just now: gc.uploadExpiry is far off.
			cutoff, capped := time.Now().Add(-delay), time.Now().Add(-24*time.Hour)
			stale, err := db.Collector().StaleLinks(ctx, cutoff, capped, 100)
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, c := range stale {
				got = append(got, c.Repository)
			}
			slices.Sort(got)
			if want := []string{"abandoned", "app"}; !slices.Equal(got, want) {
				t.Fatalf("stale links in %v, want %v", got, want)
			}

			// A candidate read before the push's session began is kept by
			// the collection's own check.
			var all []meta.GCCandidate
			for _, repo := range repos {
				all = append(all, meta.GCCandidate{Repository: repo, RepositoryID: repoID(t, db, repo), Digest: blobOf("first layer of " + repo).Digest})
			}
			n, err := db.Collector().CollectLinks(ctx, all, cutoff, capped)
			if err != nil || n != 2 {
				t.Fatalf("CollectLinks = %d, %v; want the 2 links of app and abandoned", n, err)
			}
			for _, repo := range repos {
				_, err := db.Blobs().RepositoryBlob(ctx, repo, blobOf("first layer of "+repo).Digest)
				kept := err == nil
				if want := repo == "pushing" || repo == "streaming"; kept != want {
					t.Errorf("%s: link kept %v, want %v (%v)", repo, kept, want, err)
				}
			}
		})
	}
}
