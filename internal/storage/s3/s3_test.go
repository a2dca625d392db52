package s3_test

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"path"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awss3 "github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/berth-dev/berth/internal/storage"
	"github.com/berth-dev/berth/internal/storage/s3"
	"github.com/berth-dev/berth/internal/storage/storagetest"
	"github.com/berth-dev/berth/internal/testenv/s3server"
)

func open(t testing.TB, srv *s3server.Server, bucket, prefix string) *s3.Driver {
	t.Helper()
	t.Setenv("AWS_CA_BUNDLE", "") // the test server speaks plain HTTP
	d, err := s3.Open(context.Background(), s3.Options{Endpoint: srv.Endpoint, Region: srv.Region, Bucket: bucket, Prefix: prefix,
		PathStyle: true, AccessKey: srv.AccessKey, SecretKey: srv.SecretKey, PartSize: s3.MinPartSize})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestConformance runs the storage suite against a real S3 server
// (versitygw), with the smallest part size S3 allows so that the suite's
// files span several parts.
func TestConformance(t *testing.T) {
	srv := s3server.Start(t)
	for _, prefix := range []string{"", "some/prefix"} {
		t.Run("prefix="+prefix, func(t *testing.T) {
			buckets := map[storage.Driver]string{}
			storagetest.Run(t, func(t *testing.T) storage.Driver {
				b := srv.Bucket(t)
				d := open(t, srv, b, prefix)
				buckets[d] = b
				return d
			}, func(t *testing.T, d storage.Driver) storage.Driver {
				return open(t, srv, buckets[d], prefix)
			})
		})
	}
}

// multipartUploads lists the bucket's unfinished multipart uploads.
func multipartUploads(t *testing.T, srv *s3server.Server, bucket string) []string {
	t.Helper()
	c := awss3.New(awss3.Options{Region: srv.Region, BaseEndpoint: aws.String(srv.Endpoint), UsePathStyle: true,
		Credentials: aws.CredentialsProviderFunc(func(context.Context) (aws.Credentials, error) {
			return aws.Credentials{AccessKeyID: srv.AccessKey, SecretAccessKey: srv.SecretKey}, nil
		})})
	out, err := c.ListMultipartUploads(context.Background(), &awss3.ListMultipartUploadsInput{Bucket: &bucket})
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, u := range out.Uploads {
		keys = append(keys, aws.ToString(u.Key))
	}
	return keys
}

// TestDeleteAndCancelAbortMultipart checks at the server that an upload's
// multipart upload ends with its directory (upload expiry) or Cancel.
func TestDeleteAndCancelAbortMultipart(t *testing.T) {
	srv := s3server.Start(t)
	bucket := srv.Bucket(t)
	d := open(t, srv, bucket, "p")
	ctx := context.Background()
	chunk := bytes.Repeat([]byte("x"), s3.MinPartSize+10)
	start := func(p string) storage.FileWriter {
		w, _ := d.Writer(ctx, p, 0)
		if _, err := w.Write(chunk); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
		st, _ := storage.WriterState(w)
		w, err := storage.OpenWriter(ctx, d, p, int64(len(chunk)), st)
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	// An earlier version's upload (a directory holding data) and this
	// version's (one file, its tail objects beside it).
	flat := storage.NewUploadID()
	start(storage.UploadPath("aa000000-0000-0000-0000-000000000001"))
	start(storage.UploadPath(flat))
	w := start(storage.UploadPath("bb000000-0000-0000-0000-000000000002"))
	if got := multipartUploads(t, srv, bucket); len(got) != 3 {
		t.Fatalf("multipart uploads = %v, want 3", got)
	}
	if got, err := d.List(ctx, path.Dir(storage.UploadPath(flat))); err != nil || len(got) != 1 || !strings.Contains(got[0], flat+".tail.") {
		t.Fatalf("beside the flat upload's file: %v, %v; want its tail", got, err)
	}
	for _, id := range []string{"aa000000-0000-0000-0000-000000000001", flat} {
		if err := d.Delete(ctx, storage.UploadRoot(id)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Cancel(ctx); err != nil {
		t.Fatal(err)
	}
	if got := multipartUploads(t, srv, bucket); len(got) != 0 {
		t.Fatalf("multipart uploads left: %v", got)
	}
	if got, err := d.List(ctx, "/uploads"); err == nil {
		t.Fatalf("objects left under /uploads: %v", got)
	}
}

func TestStatRootAndPresign(t *testing.T) {
	srv := s3server.Start(t)
	d := open(t, srv, srv.Bucket(t), "")
	ctx := context.Background()
	if fi, err := d.Stat(ctx, "/"); err != nil || !fi.IsDir {
		t.Fatalf("Stat(/) = %+v, %v; want a directory (the readiness probe)", fi, err)
	}
	if err := d.PutContent(ctx, "/blobs/x", []byte("presigned bytes")); err != nil {
		t.Fatal(err)
	}
	u, err := d.URLFor(ctx, "/blobs/x", time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(u)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || string(b) != "presigned bytes" {
		t.Fatalf("GET presigned URL = %d %q", resp.StatusCode, b)
	}
	missing := open(t, srv, "no-such-bucket", "")
	if _, err := missing.Stat(ctx, "/"); err == nil || !strings.Contains(err.Error(), "no-such-bucket") {
		t.Fatalf("Stat(/) of a missing bucket = %v, want an error naming it", err)
	}
}

func TestPartSizeLimits(t *testing.T) {
	for _, n := range []int64{1 << 20, 6 << 30} {
		if _, err := s3.NewWithClient(awss3.New(awss3.Options{}), "b", "", n); err == nil {
			t.Errorf("part size %d accepted", n)
		}
	}
}
