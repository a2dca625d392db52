package registry

import (
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/storage"
)

// Upload claims: a writer holds a short lease on its upload and renews it
// while it streams, so a writer that dies (SIGKILL, a lost replica) frees
// its upload within uploadLease, and a request that finds the upload
// claimed waits that long for the claim to end before answering 409.
const (
	uploadLease      = 10 * time.Second
	uploadRenewEvery = uploadLease / 4
	uploadClaimWait  = uploadLease + 2*time.Second
	uploadClaimPoll  = 100 * time.Millisecond
)

// claimUpload claims an upload, waiting up to uploadClaimWait while
// another request holds it. Its errors are the answers: 404
// BLOB_UPLOAD_UNKNOWN, or 409 BLOB_UPLOAD_INVALID if still claimed.
//
// A claim is a write (on SQLite, a turn of the one writer, which every
// push shares); while another request holds the upload, the wait reads
// the lease instead, every uploadClaimPoll, and tries to claim again only
// once the lease looks ended (released, or run out): requests waiting on
// a claim cost a read per poll, not a write.
func (reg *Registry) claimUpload(ctx context.Context, repo, id string) (meta.Upload, error) {
	deadline := time.Now().Add(uploadClaimWait)
	for {
		up, err := reg.meta.Uploads.ClaimUpload(ctx, repo, id, uploadLease)
		switch {
		case errors.Is(err, meta.ErrUploadNotFound):
			return up, errUploadUnknown
		case !errors.Is(err, meta.ErrUploadBusy):
			return up, err
		}
		for ended := false; !ended; {
			if time.Now().After(deadline) {
				return up, errorf(http.StatusConflict, CodeBlobUploadInvalid, meta.ErrUploadBusy.Error(), nil)
			}
			select {
			case <-ctx.Done():
				return meta.Upload{}, ctx.Err()
			case <-time.After(uploadClaimPoll):
			}
			until, err := reg.meta.Uploads.UploadLease(ctx, repo, id)
			switch {
			case errors.Is(err, meta.ErrUploadNotFound):
				return meta.Upload{}, errUploadUnknown
			case err != nil:
				return meta.Upload{}, err
			}
			ended = until.Before(time.Now())
		}
	}
}

// claimHolder renews an upload claim in the background until stopped. If
// the claim is lost (not renewed within its lease, so another request may
// own the upload now), writes through claimedWriter fail from then on: two
// writers must never interleave bytes in one upload.
type claimHolder struct {
	// session is the upload as recorded when it was claimed.
	session meta.Upload
	lost    atomic.Bool
	done    chan struct{}
	exited  chan struct{}
	once    sync.Once
	claim   atomic.Int64
	// safeUntil (Unix nanoseconds) is when the claim may have run out if
	// no renewal lands: writes stop then even if a renewal is stuck.
	safeUntil atomic.Int64
}

// safeEnd is when writes under a claim stop (Unix nanoseconds, on this
// process's clock): a margin of uploadRenewEvery before its lease's end as
// the store recorded it (the claim is that end, on the store's clock:
// ClaimEnd converts it). The end was fixed before the statement that
// recorded it waited for the database; a time taken after it returned
// would be later by that wait, however long.
func (reg *Registry) safeEnd(claim int64) int64 {
	return reg.claimEnd(claim).Add(-uploadRenewEvery).UnixNano()
}

// renewIn is how long until a claim (its lease's end, Unix microseconds)
// is renewed: uploadRenewEvery after its lease began, measured from the
// end the store recorded, so a claim whose statement waited long on the
// database is renewed at once rather than a whole period after it
// returned, when its safe end (safeEnd) may have passed.
// claimEnd is a claim's lease end on this process's clock.
func (reg *Registry) claimEnd(claim int64) time.Time {
	if reg.meta.Claims == nil {
		return time.UnixMicro(claim)
	}
	return reg.meta.Claims.ClaimEnd(claim)
}

func (reg *Registry) renewIn(claim int64) time.Duration {
	return max(0, time.Until(reg.claimEnd(claim).Add(-uploadLease+uploadRenewEvery)))
}

func (reg *Registry) holdClaim(ctx context.Context, up meta.Upload) *claimHolder {
	c := &claimHolder{session: up, done: make(chan struct{}), exited: make(chan struct{})}
	c.claim.Store(up.Claim)
	c.safeUntil.Store(reg.safeEnd(up.Claim))
	go func() {
		defer close(c.exited)
		wait := reg.renewIn(up.Claim)
		for {
			t := time.NewTimer(wait)
			select {
			case <-c.done:
				t.Stop()
				return
			case <-t.C:
			}
			next, err := reg.meta.Uploads.RenewUpload(context.WithoutCancel(ctx), up.ID, c.claim.Load(), uploadLease)
			switch {
			case err == nil:
				c.claim.Store(next)
				c.safeUntil.Store(reg.safeEnd(next))
				wait = reg.renewIn(next)
			case errors.Is(err, meta.ErrUploadClaimLost) || time.Now().UnixNano() >= c.safeUntil.Load():
				// Lost, or finished (the upload's row is gone): either
				// way nothing may be written any more.
				c.lost.Store(true)
				return
			default:
				reg.log.Warn("renew upload claim", "upload", up.ID, "err", err)
				wait = uploadRenewEvery / 2
			}
		}
	}()
	return c
}

// held reports whether the claim is still the holder's: no renewal found
// it lost, and the last one is recent enough that the lease has not run
// out.
func (c *claimHolder) held() bool {
	return !c.lost.Load() && time.Now().UnixNano() < c.safeUntil.Load()
}

// stop ends the renewals and returns the claim as it stands now.
func (c *claimHolder) stop() int64 {
	c.once.Do(func() { close(c.done) })
	<-c.exited
	return c.claim.Load()
}

var errClaimLost = errorf(http.StatusConflict, CodeBlobUploadInvalid, "this upload's claim was lost while writing; check its status and resume", nil)

// claimedWriter refuses writes once the claim is lost.
type claimedWriter struct {
	w io.Writer
	c *claimHolder
}

func (cw claimedWriter) Write(p []byte) (int, error) {
	if cw.c.lost.Load() || time.Now().UnixNano() > cw.c.safeUntil.Load() {
		return 0, errClaimLost
	}
	return cw.w.Write(p)
}

// abandoner is a FileWriter that can be let go of without keeping what it
// holds: the S3 driver's writer, whose Close sends its buffered bytes as a
// part or a tail object.
type abandoner interface{ Abandon() }

// abandon lets go of an upload's writer whose bytes are not to be
// recorded (its claim was lost, or the chunk was refused) without sending
// storage anything more. Once the claim is lost, another request may own
// the upload: on S3, the part a Close would send could write over the
// part of the same number that request recorded, and the upload could
// never complete. A writer that holds nothing (the filesystem's, whose
// bytes are in its file already, and only past the recorded size, which
// the next writer cuts off) is closed.
func abandon(fw storage.FileWriter) {
	if a, ok := fw.(abandoner); ok {
		a.Abandon()
		return
	}
	fw.Close()
}
