// Package s3 stores Berth's bytes in an S3-compatible object store (AWS S3,
// MinIO, Ceph RGW, versitygw, ...) through aws-sdk-go-v2.
//
// Paths map to keys as prefix + path. Directories are virtual: a directory
// exists while any key lies below it. Writers stream into multipart uploads
// whose parts, and a small tail of fewer than 5 MiB, are described by the
// writer's State, which the registry keeps in the metadata database so that
// any replica can continue any upload (see docs/storage.md).
package s3

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/service/s3"
	"github.com/aws/aws-sdk-go-v2/service/s3/types"
	"github.com/aws/smithy-go"

	"github.com/berth-dev/berth/internal/storage"
)

// Size limits of S3 multipart uploads.
const (
	MinPartSize     = 5 << 20
	DefaultPartSize = 10 << 20
	maxPartSize     = 5 << 30
	maxParts        = 10000
	// maxCopy is the largest object CopyObject copies in one request.
	maxCopy = 5 << 30
	// deleteBatch is the most keys DeleteObjects takes at once.
	deleteBatch = 1000
)

// Driver implements storage.Driver over one bucket.
type Driver struct {
	c        *s3.Client
	presign  *s3.PresignClient
	bucket   string
	prefix   string // "" or "some/prefix/"
	partSize int64
	// copyLimit and copyPart: objects above copyLimit are copied in parts
	// of copyPart (UploadPartCopy). Fields so tests can use small objects.
	copyLimit, copyPart int64
	timeouts            Timeouts
}

// NewWithClient returns a driver over an S3 client (Open builds one from
// configuration). partSize 0 means DefaultPartSize.
func NewWithClient(c *s3.Client, bucket, prefix string, partSize int64) (*Driver, error) {
	if bucket == "" {
		return nil, errors.New("s3: a bucket is required")
	}
	if partSize == 0 {
		partSize = DefaultPartSize
	}
	if partSize < MinPartSize || partSize > maxPartSize {
		return nil, fmt.Errorf("s3: part size %d outside [%d, %d] (S3's multipart limits)", partSize, MinPartSize, int64(maxPartSize))
	}
	prefix = strings.Trim(prefix, "/")
	if prefix != "" {
		if err := storage.CheckPath("/" + prefix); err != nil {
			return nil, fmt.Errorf("s3: prefix: %w", err)
		}
		prefix += "/"
	}
	return &Driver{c: c, presign: s3.NewPresignClient(c), bucket: bucket, prefix: prefix, partSize: partSize,
		copyLimit: maxCopy, copyPart: 1 << 30, timeouts: Timeouts{}.withDefaults()}, nil
}

// bound limits a call that sends or copies n bytes, retries included:
// Timeouts.Call plus n at Timeouts.MinRate.
func (d *Driver) bound(ctx context.Context, n int64) (context.Context, context.CancelFunc) {
	to := d.timeouts
	rate := to.MinRate
	return context.WithTimeout(ctx, to.Call+time.Duration(n/rate)*time.Second+time.Duration(n%rate)*time.Second/time.Duration(rate))
}

// key is the object key of a checked path ("/" is the prefix itself).
func (d *Driver) key(p string) string { return d.prefix + strings.TrimPrefix(p, "/") }

// dirKey is the key prefix of the keys below p.
func (d *Driver) dirKey(p string) string {
	if p == "/" {
		return d.prefix
	}
	return d.key(p) + "/"
}

func (d *Driver) path(key string) string { return "/" + strings.TrimPrefix(key, d.prefix) }

// isNotFound reports whether err says an object or multipart upload does
// not exist (a missing bucket is a configuration error, not a missing path).
func isNotFound(err error) bool {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode() {
		case "NoSuchKey", "NotFound", "NoSuchUpload":
			return true
		case "NoSuchBucket":
			return false
		}
	}
	var re *awshttp.ResponseError
	return errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound
}

// wrap adds the operation and path, and storage.ErrNotFound where it applies.
func wrap(op, p string, err error) error {
	if isNotFound(err) {
		return fmt.Errorf("s3 %s %s: %w (%v)", op, p, storage.ErrNotFound, err)
	}
	return fmt.Errorf("s3 %s %s: %w", op, p, err)
}

// GetContent implements storage.Driver.
func (d *Driver) GetContent(ctx context.Context, p string) ([]byte, error) {
	rc, err := d.Reader(ctx, p, 0)
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, wrap("read", p, err)
	}
	return b, nil
}

// PutContent implements storage.Driver.
func (d *Driver) PutContent(ctx context.Context, p string, content []byte) error {
	if err := storage.CheckPath(p); err != nil {
		return err
	}
	return d.put(ctx, p, d.key(p), content)
}

func (d *Driver) put(ctx context.Context, p, key string, content []byte) error {
	ctx, cancel := d.bound(ctx, int64(len(content)))
	defer cancel()
	_, err := d.c.PutObject(ctx, &s3.PutObjectInput{Bucket: &d.bucket, Key: &key,
		Body: bytes.NewReader(content), ContentLength: aws.Int64(int64(len(content)))})
	if err != nil {
		return wrap("put", p, err)
	}
	return nil
}

// Reader implements storage.Driver.
func (d *Driver) Reader(ctx context.Context, p string, offset int64) (io.ReadCloser, error) {
	if err := storage.CheckPath(p); err != nil {
		return nil, err
	}
	if offset < 0 {
		return nil, fmt.Errorf("s3 read %s: negative offset %d", p, offset)
	}
	in := &s3.GetObjectInput{Bucket: &d.bucket, Key: aws.String(d.key(p))}
	if offset > 0 {
		in.Range = aws.String(fmt.Sprintf("bytes=%d-", offset))
	}
	return d.get(ctx, p, in, offset)
}

// RangeReader implements storage.RangeReader: one GET with a closed
// Range, so that S3 sends only what the client asked for.
func (d *Driver) RangeReader(ctx context.Context, p string, offset, length int64) (io.ReadCloser, error) {
	if err := storage.CheckPath(p); err != nil {
		return nil, err
	}
	if offset < 0 || length <= 0 {
		return nil, fmt.Errorf("s3 read %s: bad range %d+%d", p, offset, length)
	}
	in := &s3.GetObjectInput{Bucket: &d.bucket, Key: aws.String(d.key(p)),
		Range: aws.String(fmt.Sprintf("bytes=%d-%d", offset, offset+length-1))}
	return d.get(ctx, p, in, offset)
}

// get runs a GET of path from offset (the request's Range).
func (d *Driver) get(ctx context.Context, p string, in *s3.GetObjectInput, offset int64) (io.ReadCloser, error) {
	out, err := d.c.GetObject(ctx, in)
	if err == nil {
		return out.Body, nil
	}
	var ae smithy.APIError
	if offset > 0 && errors.As(err, &ae) && ae.ErrorCode() == "InvalidRange" {
		// S3 refuses a range starting at the end; the file may be exactly
		// offset bytes long.
		if fi, serr := d.Stat(ctx, p); serr == nil && !fi.IsDir && fi.Size == offset {
			return io.NopCloser(bytes.NewReader(nil)), nil
		}
	}
	return nil, wrap("read", p, err)
}

// Stat implements storage.Driver. The root answers with HeadBucket (the
// readiness probe asks it); a directory is any key below the path.
func (d *Driver) Stat(ctx context.Context, p string) (storage.FileInfo, error) {
	if err := storage.CheckPath(p); err != nil {
		return storage.FileInfo{}, err
	}
	if p == "/" {
		cctx, cancel := d.bound(ctx, 0)
		defer cancel()
		if _, err := d.c.HeadBucket(cctx, &s3.HeadBucketInput{Bucket: &d.bucket}); err != nil {
			return storage.FileInfo{}, fmt.Errorf("s3 bucket %s: %w", d.bucket, err)
		}
		return storage.FileInfo{Path: p, IsDir: true}, nil
	}
	cctx, cancel := d.bound(ctx, 0)
	out, err := d.c.HeadObject(cctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: aws.String(d.key(p))})
	cancel()
	if err == nil {
		fi := storage.FileInfo{Path: p, Size: aws.ToInt64(out.ContentLength)}
		if out.LastModified != nil {
			fi.ModTime = *out.LastModified
		}
		return fi, nil
	}
	if !isNotFound(err) {
		return storage.FileInfo{}, wrap("stat", p, err)
	}
	cctx, cancel = d.bound(ctx, 0)
	list, err := d.c.ListObjectsV2(cctx, &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: aws.String(d.dirKey(p)), MaxKeys: aws.Int32(1)})
	cancel()
	if err != nil {
		return storage.FileInfo{}, wrap("stat", p, err)
	}
	if len(list.Contents) == 0 {
		return storage.FileInfo{}, fmt.Errorf("s3 stat %s: %w", p, storage.ErrNotFound)
	}
	return storage.FileInfo{Path: p, IsDir: true}, nil
}

// List implements storage.Driver.
func (d *Driver) List(ctx context.Context, p string) ([]string, error) {
	if err := storage.CheckPath(p); err != nil {
		return nil, err
	}
	var out []string
	pages := s3.NewListObjectsV2Paginator(d.c, &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: aws.String(d.dirKey(p)), Delimiter: aws.String("/")})
	for pages.HasMorePages() {
		cctx, cancel := d.bound(ctx, 0)
		page, err := pages.NextPage(cctx)
		cancel()
		if err != nil {
			return nil, wrap("list", p, err)
		}
		for _, cp := range page.CommonPrefixes {
			out = append(out, strings.TrimSuffix(d.path(aws.ToString(cp.Prefix)), "/"))
		}
		for _, o := range page.Contents {
			if k := aws.ToString(o.Key); !strings.HasSuffix(k, "/") {
				out = append(out, d.path(k))
			}
		}
	}
	if len(out) == 0 && p != "/" {
		return nil, fmt.Errorf("s3 list %s: %w", p, storage.ErrNotFound)
	}
	sort.Strings(out)
	return out, nil
}

// Move implements storage.Driver: a server-side copy (atomic for readers
// of dst: the new object appears whole), then the source is deleted.
func (d *Driver) Move(ctx context.Context, src, dst string) error {
	size, err := d.copyFrom(ctx, "move", src, dst)
	if err != nil {
		return err
	}
	if err := d.copy(ctx, src, dst, size); err != nil {
		return wrap("move", src, err)
	}
	cctx, cancel := d.bound(ctx, 0)
	defer cancel()
	if _, err := d.c.DeleteObject(cctx, &s3.DeleteObjectInput{Bucket: &d.bucket, Key: aws.String(d.key(src))}); err != nil {
		return wrap("move: delete source", src, err)
	}
	return nil
}

var _ storage.Linker = (*Driver)(nil)

// Link implements storage.Linker with a server-side copy, as Move's
// without the delete: S3 has no second name for an object, but the copy
// lets meta.StoreBlob place a blob before its transaction (a copy of
// gigabytes inside it would hold SQLite's one writer, or a PostgreSQL
// transaction and the digest's lock, for minutes). An object already at
// dst is kept and nothing is copied. The caller removes src afterwards
// (the registry deletes the upload, Ingest its staged copy).
func (d *Driver) Link(ctx context.Context, src, dst string) error {
	if err := storage.CheckPath(dst); err != nil {
		return err
	}
	hctx, cancel := d.bound(ctx, 0)
	_, err := d.c.HeadObject(hctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: aws.String(d.key(dst))})
	cancel()
	if err == nil {
		return nil
	}
	if !isNotFound(err) {
		return wrap("link", dst, err)
	}
	size, err := d.copyFrom(ctx, "link", src, dst)
	if err != nil {
		return err
	}
	if err := d.copy(ctx, src, dst, size); err != nil {
		if isNotFound(err) {
			// Not src gone (it was there a moment ago) but, most likely,
			// the copy's multipart upload aborted by a deletion of dst
			// meanwhile (a collection, or a failed store's undo, which
			// run under the digest's lock that Link does not hold): a
			// passing failure, not a missing upload.
			if _, serr := d.Stat(ctx, src); serr == nil {
				return fmt.Errorf("s3 link %s: %w", src, err)
			}
		}
		return wrap("link", src, err)
	}
	return nil
}

// copyFrom checks src and dst for a copy by op and returns src's size.
func (d *Driver) copyFrom(ctx context.Context, op, src, dst string) (int64, error) {
	if err := storage.CheckPath(src); err != nil {
		return 0, err
	}
	if err := storage.CheckPath(dst); err != nil {
		return 0, err
	}
	fi, err := d.Stat(ctx, src)
	if err != nil {
		return 0, err
	}
	if fi.IsDir {
		return 0, fmt.Errorf("s3 %s %s: %w (a directory)", op, src, storage.ErrNotFound)
	}
	return fi.Size, nil
}

// copy copies src, of size bytes, to dst server-side: CopyObject, or
// UploadPartCopy above the single-copy limit.
func (d *Driver) copy(ctx context.Context, src, dst string, size int64) error {
	if size > d.copyLimit {
		return d.copyParts(ctx, src, dst, size)
	}
	cctx, cancel := d.bound(ctx, size)
	defer cancel()
	_, err := d.c.CopyObject(cctx, &s3.CopyObjectInput{Bucket: &d.bucket, Key: aws.String(d.key(dst)), CopySource: aws.String(d.copySource(src))})
	return err
}

// copySource names src for CopyObject and UploadPartCopy. Keys are of the
// path grammar ([A-Za-z0-9._-/]), which needs no escaping.
func (d *Driver) copySource(src string) string { return d.bucket + "/" + d.key(src) }

// copyParts copies an object too large for CopyObject with UploadPartCopy.
func (d *Driver) copyParts(ctx context.Context, src, dst string, size int64) error {
	key := d.key(dst)
	cctx, cancel := d.bound(ctx, 0)
	mp, err := d.c.CreateMultipartUpload(cctx, &s3.CreateMultipartUploadInput{Bucket: &d.bucket, Key: &key})
	cancel()
	if err != nil {
		return err
	}
	var parts []types.CompletedPart
	for off, n := int64(0), int32(1); off < size; off, n = off+d.copyPart, n+1 {
		end := min(off+d.copyPart, size) - 1
		cctx, cancel := d.bound(ctx, end-off+1)
		out, err := d.c.UploadPartCopy(cctx, &s3.UploadPartCopyInput{Bucket: &d.bucket, Key: &key, UploadId: mp.UploadId,
			PartNumber: aws.Int32(n), CopySource: aws.String(d.copySource(src)), CopySourceRange: aws.String(fmt.Sprintf("bytes=%d-%d", off, end))})
		cancel()
		if err != nil {
			d.abort(ctx, key, aws.ToString(mp.UploadId))
			return err
		}
		parts = append(parts, types.CompletedPart{PartNumber: aws.Int32(n), ETag: out.CopyPartResult.ETag})
	}
	cctx, cancel = d.bound(ctx, size)
	defer cancel()
	_, err = d.c.CompleteMultipartUpload(cctx, &s3.CompleteMultipartUploadInput{Bucket: &d.bucket, Key: &key, UploadId: mp.UploadId,
		MultipartUpload: &types.CompletedMultipartUpload{Parts: parts}})
	if err != nil {
		d.abort(ctx, key, aws.ToString(mp.UploadId))
	}
	return err
}

func (d *Driver) abort(ctx context.Context, key, id string) error {
	ctx, cancel := d.bound(context.WithoutCancel(ctx), 0)
	defer cancel()
	_, err := d.c.AbortMultipartUpload(ctx, &s3.AbortMultipartUploadInput{Bucket: &d.bucket, Key: &key, UploadId: &id})
	if err != nil && !isNotFound(err) {
		return err
	}
	return nil
}

// Delete implements storage.Driver: the object at p, every object below it
// (DeleteObjects in batches), an upload file's tails, and every multipart
// upload at or below it.
func (d *Driver) Delete(ctx context.Context, p string) error {
	if err := storage.CheckPath(p); err != nil {
		return err
	}
	var keys []string
	if p != "/" {
		cctx, cancel := d.bound(ctx, 0)
		_, err := d.c.HeadObject(cctx, &s3.HeadObjectInput{Bucket: &d.bucket, Key: aws.String(d.key(p))})
		cancel()
		if err == nil {
			keys = append(keys, d.key(p))
		} else if !isNotFound(err) {
			return wrap("delete", p, err)
		}
	}
	prefixes := []string{d.dirKey(p)}
	if p != "/" && storage.IsUploadPath(p) {
		// An upload's file keeps its tails beside it (writer.go).
		prefixes = append(prefixes, d.key(p)+tailInfix)
	}
	for _, prefix := range prefixes {
		pages := s3.NewListObjectsV2Paginator(d.c, &s3.ListObjectsV2Input{Bucket: &d.bucket, Prefix: aws.String(prefix)})
		for pages.HasMorePages() {
			cctx, cancel := d.bound(ctx, 0)
			page, err := pages.NextPage(cctx)
			cancel()
			if err != nil {
				return wrap("delete", p, err)
			}
			for _, o := range page.Contents {
				keys = append(keys, aws.ToString(o.Key))
			}
		}
	}
	aborted, err := d.abortUnder(ctx, p)
	if err != nil {
		return wrap("delete: abort multipart uploads", p, err)
	}
	if len(keys) == 0 && aborted == 0 {
		return fmt.Errorf("s3 delete %s: %w", p, storage.ErrNotFound)
	}
	for start := 0; start < len(keys); start += deleteBatch {
		batch := keys[start:min(start+deleteBatch, len(keys))]
		ids := make([]types.ObjectIdentifier, len(batch))
		for i := range batch {
			ids[i] = types.ObjectIdentifier{Key: aws.String(batch[i])}
		}
		cctx, cancel := d.bound(ctx, 0)
		out, err := d.c.DeleteObjects(cctx, &s3.DeleteObjectsInput{Bucket: &d.bucket, Delete: &types.Delete{Objects: ids, Quiet: aws.Bool(true)}})
		cancel()
		if err != nil {
			return wrap("delete", p, err)
		}
		for _, e := range out.Errors {
			if aws.ToString(e.Code) != "NoSuchKey" {
				return fmt.Errorf("s3 delete %s: %s: %s %s", p, aws.ToString(e.Key), aws.ToString(e.Code), aws.ToString(e.Message))
			}
		}
	}
	return nil
}

// abortUnder aborts the multipart uploads of p and of the keys below it.
func (d *Driver) abortUnder(ctx context.Context, p string) (int, error) {
	key, dir := d.key(p), d.dirKey(p)
	n := 0
	in := &s3.ListMultipartUploadsInput{Bucket: &d.bucket, Prefix: aws.String(strings.TrimSuffix(dir, "/"))}
	for {
		cctx, cancel := d.bound(ctx, 0)
		out, err := d.c.ListMultipartUploads(cctx, in)
		cancel()
		if err != nil {
			return n, err
		}
		for _, u := range out.Uploads {
			k := aws.ToString(u.Key)
			if k != key && !strings.HasPrefix(k, dir) {
				continue
			}
			if err := d.abort(ctx, k, aws.ToString(u.UploadId)); err != nil {
				return n, err
			}
			n++
		}
		if !aws.ToBool(out.IsTruncated) {
			return n, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// URLFor implements storage.URLSigner: a presigned GET of path valid for
// expiry.
func (d *Driver) URLFor(ctx context.Context, p string, expiry time.Duration) (string, error) {
	if err := storage.CheckPath(p); err != nil {
		return "", err
	}
	req, err := d.presign.PresignGetObject(ctx, &s3.GetObjectInput{Bucket: &d.bucket, Key: aws.String(d.key(p))}, s3.WithPresignExpires(expiry))
	if err != nil {
		return "", wrap("presign", p, err)
	}
	return req.URL, nil
}
