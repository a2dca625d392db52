package meta_test

import (
	"context"
	"slices"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestUnreferencedLinkGoesAfterTheCap: a link no manifest references is
// collected once it was first made longer ago than the cap
// (gc.uploadExpiry), however recently a client confirmed it (a HEAD, the
// blob uploaded again) and whatever uploads are in progress in its
// repository: otherwise blobs pushed without a manifest, confirmed every
// half delay, would stay forever outside the namespace's quota. A
// referenced link stays, and so does a link first made within the cap
// and confirmed (buildx HEADs a blob and skips it, then pushes the
// manifest).
func TestUnreferencedLinkGoesAfterTheCap(t *testing.T) {
	forQuota(t, func(t *testing.T, e *quotaEnv) {
		const delay, linkCap = time.Hour, 24 * time.Hour
		now := time.Now()
		repos := []string{"acme/confirmed", "acme/reuploaded", "acme/uploading", "acme/referenced", "acme/buildx", "acme/legacy"}
		layer := func(repo string) meta.Blob { return blobOf("layer of " + repo) }
		for _, repo := range repos {
			if repo == "acme/referenced" {
				e.mustPush(repo, "v1", "image of "+repo, layer(repo))
			} else {
				e.store(repo, layer(repo))
			}
		}
		firstLinked := func(repo string, at time.Time, linkedAt int64) {
			t.Helper()
			if err := e.db.Exec(e.ctx, "UPDATE repository_blobs SET created_at = ?, linked_at = ? WHERE repository_id = ?",
				at.UnixMicro(), linkedAt, repoID(t, e.db, repo)); err != nil {
				t.Fatal(err)
			}
		}
		long := now.Add(-linkCap - time.Hour)
		for _, repo := range []string{"acme/confirmed", "acme/reuploaded", "acme/uploading", "acme/referenced"} {
			firstLinked(repo, long, long.UnixMicro())
		}
		firstLinked("acme/buildx", now.Add(-2*delay), now.Add(-2*delay).UnixMicro())
		// Linked by a binary before the first-link time was recorded
		// (during a rolling upgrade): the confirmation dates it.
		firstLinked("acme/legacy", long, 0)
		for _, repo := range repos {
			if ok, err := e.db.Blobs().TouchBlobLink(e.ctx, repo, layer(repo).Digest, now.Add(-delay/2)); err != nil || !ok {
				t.Fatalf("confirm %s: %v, %v", repo, ok, err)
			}
		}
		// Uploaded again: the link is confirmed, not made anew.
		e.store("acme/reuploaded", layer("acme/reuploaded"))
		// A push in progress in the repository.
		if err := e.db.Uploads().CreateUpload(e.ctx, meta.Upload{ID: "0b6a7a4e-7d0c-4a53-a1a6-0000000000c1", Repository: "acme/uploading", HashState: []byte{1}, Actor: "ci"}, 0); err != nil {
			t.Fatal(err)
		}

		cutoff, linkedBefore := now.Add(-delay), now.Add(-linkCap)
		stale, err := e.db.Collector().StaleLinks(e.ctx, cutoff, linkedBefore, 100)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, c := range stale {
			got = append(got, c.Repository)
		}
		slices.Sort(got)
		want := []string{"acme/confirmed", "acme/legacy", "acme/reuploaded", "acme/uploading"}
		if !slices.Equal(got, want) {
			t.Fatalf("stale links in %v, want %v", got, want)
		}
		// The collection re-checks every candidate: the referenced and
		// the recent one stay.
		var all []meta.GCCandidate
		for _, repo := range repos {
			all = append(all, meta.GCCandidate{Repository: repo, RepositoryID: repoID(t, e.db, repo), Digest: layer(repo).Digest})
		}
		n, err := e.db.Collector().CollectLinks(e.ctx, all, cutoff, linkedBefore)
		if err != nil || n != len(want) {
			t.Fatalf("CollectLinks = %d, %v; want the %d links of %v", n, err, len(want), want)
		}
		for _, repo := range repos {
			_, err := e.db.Blobs().RepositoryBlob(e.ctx, repo, layer(repo).Digest)
			if kept := err == nil; kept != !slices.Contains(want, repo) {
				t.Errorf("%s: link kept %v, want %v (%v)", repo, kept, !kept, err)
			}
		}
	})
}

// TestMigrationDatesLinksFirstLinked: migration 35 takes a link's first
// link time from when it was made or last confirmed (the only time an
// earlier version kept), and a confirmation after it leaves that time.
func TestMigrationDatesLinksFirstLinked(t *testing.T) {
	for _, d := range metatest.Dialects() {
		t.Run(d, func(t *testing.T) {
			ctx := context.Background()
			db, err := meta.OpenAt(ctx, metatest.DSN(t, d), 34)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			exec := func(q string, args ...any) {
				t.Helper()
				if err := db.Exec(ctx, q, args...); err != nil {
					t.Fatalf("%s: %v", q, err)
				}
			}
			b := blobOf("linked before the upgrade")
			linked := time.Now().Add(-48 * time.Hour).Truncate(time.Microsecond)
			exec("INSERT INTO repositories (id, name, created_at) VALUES (1, 'acme/app', 0)")
			exec("INSERT INTO blobs (digest, size, created_at) VALUES (?, ?, 0)", b.Digest.String(), b.Size)
			exec("INSERT INTO repository_blobs (repository_id, digest, created_at) VALUES (1, ?, ?)", b.Digest.String(), linked.UnixMicro())
			if err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			if ok, err := db.Blobs().TouchBlobLink(ctx, "acme/app", b.Digest, time.Now().Add(-time.Minute)); err != nil || !ok {
				t.Fatalf("confirm: %v, %v", ok, err)
			}
			created, first, err := db.LinkTimes(ctx, "acme/app", b.Digest)
			if err != nil {
				t.Fatal(err)
			}
			if !first.Equal(linked) || !created.After(linked) {
				t.Fatalf("after the upgrade and a confirmation: first linked %s, confirmed %s; want first linked %s", first, created, linked)
			}
		})
	}
}

// TestLinkCapRunsFromTheLastReference: the cap on an unreferenced link
// runs from when it lost its last reference, not from when it was first
// made. A layer linked long ago and referenced until its manifest was
// deleted a moment ago, then confirmed by a client about to push an image
// using it again, is not stale: it was collected at once (a pass between
// the client's HEAD and its manifest PUT made that push fail). Once
// unreferenced for the whole cap, it goes.
func TestLinkCapRunsFromTheLastReference(t *testing.T) {
	forQuota(t, func(t *testing.T, e *quotaEnv) {
		const delay, linkCap = time.Hour, 24 * time.Hour
		const repo = "acme/app"
		layer := blobOf("a layer of long ago")
		m := e.mustPush(repo, "v1", "an image of long ago", layer)
		long := time.Now().Add(-linkCap - time.Hour)
		if err := e.db.Exec(e.ctx, "UPDATE repository_blobs SET created_at = ?, linked_at = ? WHERE repository_id = ?",
			long.UnixMicro(), long.UnixMicro(), repoID(t, e.db, repo)); err != nil {
			t.Fatal(err)
		}
		if err := e.db.Manifests().DeleteManifest(e.ctx, repo, m.Digest, "alice"); err != nil {
			t.Fatal(err)
		}
		now := time.Now()
		if ok, err := e.db.Blobs().TouchBlobLink(e.ctx, repo, layer.Digest, now.Add(-delay/2)); err != nil || !ok {
			t.Fatalf("confirm: %v, %v", ok, err)
		}
		stale := func(at time.Time) int {
			t.Helper()
			got, err := e.db.Collector().StaleLinks(e.ctx, at.Add(-delay), at.Add(-linkCap), 100)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for _, c := range got {
				if c.Digest == layer.Digest {
					n++
				}
			}
			return n
		}
		if n := stale(now); n != 0 {
			t.Fatalf("the link of a layer referenced until a moment ago, just confirmed, is stale")
		}
		if n := stale(now.Add(linkCap + time.Hour)); n != 1 {
			t.Fatalf("the link unreferenced for longer than the cap is not stale")
		}
	})
}
