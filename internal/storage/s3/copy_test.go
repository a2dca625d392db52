package s3

import (
	"bytes"
	"context"
	"crypto/rand"
	"testing"

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
