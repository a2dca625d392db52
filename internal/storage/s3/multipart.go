package s3

import (
	"context"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/s3"

	"github.com/berth-dev/berth/internal/storage"
)

var _ storage.MultipartLister = (*Driver)(nil)

// MultipartUploads implements storage.MultipartLister with
// ListMultipartUploads on dir's key prefix.
func (d *Driver) MultipartUploads(ctx context.Context, dir string, before time.Time) ([]storage.MultipartUpload, error) {
	if err := storage.CheckPath(dir); err != nil {
		return nil, err
	}
	key, sub := d.key(dir), d.dirKey(dir)
	var ups []storage.MultipartUpload
	in := &s3.ListMultipartUploadsInput{Bucket: &d.bucket, Prefix: aws.String(strings.TrimSuffix(sub, "/"))}
	for {
		cctx, cancel := d.bound(ctx, 0)
		out, err := d.c.ListMultipartUploads(cctx, in)
		cancel()
		if err != nil {
			return ups, wrap("list multipart uploads", dir, err)
		}
		for _, u := range out.Uploads {
			k := aws.ToString(u.Key)
			if k != key && !strings.HasPrefix(k, sub) {
				continue
			}
			at := aws.ToTime(u.Initiated)
			if !at.Before(before) {
				continue
			}
			ups = append(ups, storage.MultipartUpload{Path: d.path(k), ID: aws.ToString(u.UploadId), Initiated: at})
		}
		if !aws.ToBool(out.IsTruncated) {
			return ups, nil
		}
		in.KeyMarker, in.UploadIdMarker = out.NextKeyMarker, out.NextUploadIdMarker
	}
}

// AbortMultipartUpload implements storage.MultipartLister.
func (d *Driver) AbortMultipartUpload(ctx context.Context, u storage.MultipartUpload) error {
	if err := storage.CheckPath(u.Path); err != nil {
		return err
	}
	if err := d.abort(ctx, d.key(u.Path), u.ID); err != nil {
		return wrap("abort multipart upload", u.Path, err)
	}
	return nil
}
