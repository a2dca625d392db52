package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"net/http"
	"testing"

	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/testenv/s3server"
)

// TestMoveInParts moves an object larger than the single-copy limit with
// UploadPartCopy (the limit is 5 GiB; lowered here).
func TestMoveInParts(t *testing.T) {
	srv := s3server.Start(t)
	t.Setenv("AWS_CA_BUNDLE", "")
	d, err := Open(context.Background(), Options{Endpoint: srv.Endpoint, Region: srv.Region, Bucket: srv.Bucket(t), PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	d.copyLimit, d.copyPart = MinPartSize, MinPartSize
	ctx := context.Background()
	want := make([]byte, 3*MinPartSize+7)
	rand.Read(want)
	if err := d.PutContent(ctx, "/src", want); err != nil {
		t.Fatal(err)
	}
	if err := d.Move(ctx, "/src", "/blobs/dst"); err != nil {
		t.Fatal(err)
	}
	got, err := d.GetContent(ctx, "/blobs/dst")
	if err != nil || !bytes.Equal(got, want) {
		t.Fatalf("moved object: %d bytes, %v; want %d", len(got), err, len(want))
	}
	if _, err := d.Stat(ctx, "/src"); err == nil {
		t.Fatal("source survived the move")
	}
}

// TestSmallChunksKeepParts checks the writer state chunk by chunk: a chunk
// under 5 MiB never re-sends a part (only the tail, under 5 MiB, is read
// back), and the tail becomes a part once it reaches 5 MiB.
func TestSmallChunksKeepParts(t *testing.T) {
	srv := s3server.Start(t)
	t.Setenv("AWS_CA_BUNDLE", "")
	d, err := Open(context.Background(), Options{Endpoint: srv.Endpoint, Region: srv.Region, Bucket: srv.Bucket(t), PathStyle: true,
		AccessKey: srv.AccessKey, SecretKey: srv.SecretKey})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	const p = "/uploads/ab/keep/data"
	var saved []byte
	var size int64
	var firstETag string
	for i, c := range []struct {
		n     int
		parts int
		tail  int64
	}{
		{6 << 20, 1, 0},
		{1 << 20, 1, 1 << 20},
		{1, 1, 1<<20 + 1},
		{4 << 20, 2, 0},
		{3, 2, 3},
	} {
		var w any
		if saved == nil {
			w, err = d.Writer(ctx, p, size)
		} else {
			w, err = d.ResumeWriter(ctx, p, size, saved)
		}
		if err != nil {
			t.Fatal(err)
		}
		fw := w.(*writer)
		chunk := make([]byte, c.n)
		rand.Read(chunk)
		fw.Write(chunk)
		if err := fw.Close(); err != nil {
			t.Fatal(err)
		}
		size += int64(c.n)
		if saved, err = fw.State(); err != nil {
			t.Fatal(err)
		}
		st := fw.st
		if len(st.Parts) != c.parts || st.TailSize != c.tail || st.Size != size {
			t.Fatalf("after chunk %d: %d parts, tail %d, size %d; want %d parts, tail %d, size %d", i, len(st.Parts), st.TailSize, st.Size, c.parts, c.tail, size)
		}
		if firstETag == "" {
			firstETag = st.Parts[0].ETag
		} else if st.Parts[0].ETag != firstETag {
			t.Fatalf("after chunk %d the first part was uploaded again", i)
		}
	}
}

func isCopy(r *http.Request) bool { return r.Header.Get("X-Amz-Copy-Source") != "" }

// TestLinkCopiesAndKeepsBothNames: the S3 driver can place a staged
// upload at its content address before the metadata transaction
// (storage.Linker): Link copies the object server-side (in parts above
// the copy limit, lowered here) and keeps the source; an object already
// at the destination is kept as it is, and nothing is copied.
func TestLinkCopiesAndKeepsBothNames(t *testing.T) {
	srv := s3server.Start(t)
	p := startProxy(t, srv, nil)
	d := openAt(t, srv, p.URL, 0, Timeouts{})
	d.copyLimit, d.copyPart = MinPartSize, MinPartSize
	l, ok := storage.Driver(d).(storage.Linker)
	if !ok {
		t.Fatal("the S3 driver is no storage.Linker: its blobs are copied into place inside the metadata transaction")
	}
	ctx := context.Background()
	want := make([]byte, 3*MinPartSize+7)
	rand.Read(want)
	src, dst := "/uploads/ab/staged", "/blobs/sha256/aa/dst"
	if err := d.PutContent(ctx, src, want); err != nil {
		t.Fatal(err)
	}
	if err := l.Link(ctx, src, dst); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{dst, src} {
		if got, err := d.GetContent(ctx, name); err != nil || !bytes.Equal(got, want) {
			t.Fatalf("%s after Link: %d bytes, %v; want the %d bytes", name, len(got), err, len(want))
		}
	}
	if n := p.count(func(r *http.Request) bool { return isCopy(r) && r.Header.Get("X-Amz-Copy-Source-Range") != "" }); n != 4 {
		t.Fatalf("%d part copies (UploadPartCopy); want 4 for an object of 3 parts and 7 bytes", n)
	}
	copies := p.count(isCopy)
	other := []byte("other bytes")
	if err := d.PutContent(ctx, "/uploads/ab/other", other); err != nil {
		t.Fatal(err)
	}
	if err := l.Link(ctx, "/uploads/ab/other", dst); err != nil {
		t.Fatalf("Link onto an existing object: %v", err)
	}
	if got, _ := d.GetContent(ctx, dst); !bytes.Equal(got, want) {
		t.Fatal("Link replaced an existing object")
	}
	if n := p.count(isCopy); n != copies {
		t.Fatalf("Link onto an existing object copied (%d copy requests more)", n-copies)
	}
	// Below the copy limit: one CopyObject.
	if err := l.Link(ctx, "/uploads/ab/other", "/blobs/sha256/bb/small"); err != nil {
		t.Fatal(err)
	}
	if got, _ := d.GetContent(ctx, "/blobs/sha256/bb/small"); !bytes.Equal(got, other) {
		t.Fatal("small object not linked")
	}
	if n := p.count(isCopy); n != copies+1 {
		t.Fatalf("%d copy requests for a small object; want 1", n-copies)
	}
	if err := l.Link(ctx, "/uploads/ab/missing", "/blobs/sha256/cc/x"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Link of a missing source: %v; want ErrNotFound", err)
	}
}
