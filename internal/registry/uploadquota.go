package registry

import (
	"context"
	"io"
	"net/http"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
)

// uploadQuota is the upload store's check of a namespace's quota on what
// its uploads write (meta.Uploads). The bytes open upload sessions hold
// count in no usage until a manifest names them: without the check a
// client could keep any number of bytes outside a Reject limit in
// sessions it never finishes. A store without it (a test's wrapper)
// checks nothing.
type uploadQuota interface {
	UploadRoom(ctx context.Context, repo string) (meta.UploadRoom, error)
	UploadRefused(ctx context.Context, repo, actor string, d digest.Digest, qe *meta.QuotaExceededError) error
}

// limitUpload holds the body of a request that writes into repo (a
// session's PATCH or PUT, a monolithic POST) to what the quota of its
// namespace leaves, when it has a Reject limit: the bytes of its open
// upload sessions plus this body may not pass the limit's threshold
// (meta.UploadRoom says why the usage is not added). A body of known length (known: its Content-Length, or the
// Content-Range of a streamed chunk; -1 unknown) past the room is refused
// before anything is read; one of unknown length is read up to the room
// and refused at its first byte past it, what it wrote until then being
// kept as a chunk a client stopped sending is (the client resumes from
// the Range of the answer once there is room, or finishes the upload).
// A body that writes nothing is never refused. d is the digest the
// request names, if any (for quota_error).
func (reg *Registry) limitUpload(r *http.Request, repo string, who meta.Writer, known int64, d digest.Digest) error {
	q, ok := reg.meta.Uploads.(uploadQuota)
	if !ok || known == 0 {
		return nil
	}
	ctx := r.Context()
	room, err := q.UploadRoom(ctx, repo)
	if err != nil || !room.Limited {
		return err
	}
	refuse := func(added int64) error {
		qe := room.Refuse(added)
		if err := q.UploadRefused(context.WithoutCancel(ctx), repo, who.Actor, d, qe); err != nil {
			reg.log.Warn("record a refused upload's quota_error", "repository", repo, "err", err)
		}
		return errorf(http.StatusForbidden, CodeDenied, qe.Error(), map[string]any{"namespace": qe.Namespace, "usage_bytes": qe.Usage,
			"upload_bytes": qe.Uploads, "push_bytes": qe.Added, "limit_bytes": qe.LimitBytes, "threshold_percent": qe.ThresholdPercent})
	}
	left := max(room.Left(), 0)
	if known > 0 {
		if known > left {
			return refuse(known)
		}
		return nil
	}
	r.Body = &roomBody{ReadCloser: r.Body, left: left, refuse: refuse}
	return nil
}

// roomBody passes a body's bytes up to left, and fails with refuse's
// error at the first byte past them.
type roomBody struct {
	io.ReadCloser
	left, read int64
	refuse     func(added int64) error
	err        error
}

func (b *roomBody) Read(p []byte) (int, error) {
	if b.err != nil {
		return 0, b.err
	}
	if b.left <= 0 {
		var one [1]byte
		n, err := b.ReadCloser.Read(one[:])
		if n > 0 {
			b.err = b.refuse(b.read + 1)
			return 0, b.err
		}
		return 0, err
	}
	if int64(len(p)) > b.left {
		p = p[:b.left]
	}
	n, err := b.ReadCloser.Read(p)
	b.left -= int64(n)
	b.read += int64(n)
	return n, err
}
