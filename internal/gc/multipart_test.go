package gc

import (
	"context"
	"io"
	"log/slog"
	"path"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/s3"
	"github.com/berth-dev/berth/internal/testenv/s3server"
)

// TestSweepOrphanedMultipart: on S3, an upload whose row is gone but whose
// multipart upload was never aborted (a crash between the two deletes)
// holds parts and no object. The leftover sweep aborts it once it is older
// than the expiry; the multipart upload of a live session stays.
func TestSweepOrphanedMultipart(t *testing.T) {
	srv := s3server.Start(t)
	t.Setenv("AWS_CA_BUNDLE", "") // the test server speaks plain HTTP
	ctx := context.Background()
	store, err := s3.Open(ctx, s3.Options{Endpoint: srv.Endpoint, Region: srv.Region, Bucket: srv.Bucket(t), Prefix: "registry",
		PathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: s3.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	db := metatest.Open(t, "sqlite")
	c := New(Stores{Uploads: db.Uploads(), Collector: db.Collector(), Retention: db.Collector()}, store,
		Options{UploadExpiry: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})

	// One part of exactly the minimum size and no tail: a multipart upload
	// with no object at all.
	multipart := func(id string) {
		w, err := store.Writer(ctx, storage.UploadPath(id), 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(make([]byte, s3.MinPartSize)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	orphan, live := uuid.NewString(), uuid.NewString()
	multipart(orphan)
	multipart(live)
	if err := db.Uploads().CreateUpload(ctx, meta.Upload{ID: live, Repository: "app"}, 0); err != nil {
		t.Fatal(err)
	}
	// Two hours on, the live session is idle but being written (claimed),
	// so it does not expire.
	c.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	if _, err := db.Uploads().ClaimUpload(ctx, "app", live, time.Minute); err != nil {
		t.Fatal(err)
	}
	if objs, err := store.List(ctx, storage.UploadRoot(orphan)); err == nil {
		t.Fatalf("the orphan has objects %v: the test needs one that has none", objs)
	}
	pending := func() map[string]bool {
		ups, err := store.MultipartUploads(ctx, "/uploads", time.Now().Add(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		ids := map[string]bool{}
		for _, u := range ups {
			ids[path.Base(path.Dir(u.Path))] = true
		}
		return ids
	}
	if got := pending(); !got[orphan] || !got[live] || len(got) != 2 {
		t.Fatalf("multipart uploads before the pass: %v", got)
	}

	dry, err := c.Pass(ctx, true)
	if err != nil {
		t.Fatal(err)
	}
	if dry.Leftovers != 1 || !pending()[orphan] {
		t.Fatalf("dry run: %d leftovers (want 1), orphan still there: %v", dry.Leftovers, pending()[orphan])
	}
	rep, err := c.Pass(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if got := pending(); rep.Leftovers != 1 || got[orphan] || !got[live] {
		t.Fatalf("after the pass: %d leftovers (want 1), multipart uploads %v (want only the live one %s)", rep.Leftovers, got, live)
	}

	// Not yet older than the expiry: kept.
	young := uuid.NewString()
	multipart(young)
	c.now = time.Now
	if _, err := c.Pass(ctx, false); err != nil {
		t.Fatal(err)
	}
	if !pending()[young] {
		t.Fatal("a multipart upload younger than the expiry was aborted")
	}
}

// TestSweepOrphanedBlobCopy: on S3, a blob over 5 GiB is copied into place
// in parts inside the transaction that records it; a crash during the
// copy leaves a multipart upload under /blobs that a later store of the
// blob does not reuse. The sweep aborts it once it is older than the
// expiry, and leaves a younger one (a copy in progress) alone.
func TestSweepOrphanedBlobCopy(t *testing.T) {
	srv := s3server.Start(t)
	t.Setenv("AWS_CA_BUNDLE", "") // the test server speaks plain HTTP
	ctx := context.Background()
	store, err := s3.Open(ctx, s3.Options{Endpoint: srv.Endpoint, Region: srv.Region, Bucket: srv.Bucket(t), Prefix: "registry",
		PathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: s3.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	db := metatest.Open(t, "sqlite")
	c := New(Stores{Uploads: db.Uploads(), Collector: db.Collector(), Retention: db.Collector(), Sweep: db.Collector()}, store,
		Options{UploadExpiry: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	partial := func(content string) {
		w, err := store.Writer(ctx, storage.BlobPath(digest.FromString(content)), 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(make([]byte, s3.MinPartSize)); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	copies := func() int {
		ups, err := store.MultipartUploads(ctx, "/blobs", time.Now().Add(24*time.Hour))
		if err != nil {
			t.Fatal(err)
		}
		return len(ups)
	}
	partial("a copy a crash interrupted")
	if n := copies(); n != 1 {
		t.Fatalf("%d multipart uploads under /blobs before the pass, want 1", n)
	}
	c.now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	rep, err := c.Pass(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if n := copies(); n != 0 || rep.BlobLeftovers != 1 {
		t.Fatalf("after the pass: %d multipart uploads under /blobs (want 0), %d counted (want 1)", n, rep.BlobLeftovers)
	}
	partial("a copy in progress")
	c.now = time.Now
	if _, err := c.Pass(ctx, false); err != nil {
		t.Fatal(err)
	}
	if n := copies(); n != 1 {
		t.Fatalf("a multipart upload younger than the expiry was aborted (%d left, want 1)", n)
	}
}
