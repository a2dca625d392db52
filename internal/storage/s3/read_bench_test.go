package s3_test

import (
	"context"
	"crypto/rand"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/testenv/s3server"
)

// BenchmarkRead reads a 64 MiB object through the driver's Reader with a
// 1 MiB buffer (as a blob GET copies it) and, for comparison, with a plain
// net/http GET of a presigned URL: the difference is the driver's read
// path. Run with -cpuprofile to see where the reader spends its CPU;
// versitygw runs in its own process and is not in the profile.
//
//	go test -run '^$' -bench Read -benchtime 10x ./internal/storage/s3
func BenchmarkRead(b *testing.B) {
	srv := s3server.Start(b)
	d := open(b, srv, srv.Bucket(b), "")
	ctx := context.Background()
	const size = 64 << 20
	w, err := d.Writer(ctx, "/blobs/big", 0)
	if err != nil {
		b.Fatal(err)
	}
	if _, err := io.CopyN(w, rand.Reader, size); err != nil {
		b.Fatal(err)
	}
	if err := w.Commit(ctx); err != nil {
		b.Fatal(err)
	}
	buf := make([]byte, 1<<20)
	read := func(b *testing.B, open func() (io.ReadCloser, error)) {
		b.SetBytes(size)
		for b.Loop() {
			rc, err := open()
			if err != nil {
				b.Fatal(err)
			}
			n, err := io.CopyBuffer(writerOnly{io.Discard}, readerOnly{rc}, buf)
			rc.Close()
			if err != nil || n != size {
				b.Fatalf("read %d bytes, %v", n, err)
			}
		}
	}
	b.Run("driver", func(b *testing.B) {
		read(b, func() (io.ReadCloser, error) { return d.Reader(ctx, "/blobs/big", 0) })
	})
	b.Run("presigned", func(b *testing.B) {
		read(b, func() (io.ReadCloser, error) {
			u, err := d.URLFor(ctx, "/blobs/big", time.Minute)
			if err != nil {
				return nil, err
			}
			resp, err := http.Get(u)
			if err != nil {
				return nil, err
			}
			return resp.Body, nil
		})
	})
}

type writerOnly struct{ io.Writer }

type readerOnly struct{ io.Reader }
