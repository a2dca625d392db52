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
