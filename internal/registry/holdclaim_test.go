package registry

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
)

// TestHoldClaimFromRecordedLease: how long a claim may be written under
// comes from its lease's end as the store recorded it, not from when the
// claim's statement returned. A claim whose statement waited 9 s of its
// 10 s lease on a busy database (its end 1 s away, inside the safety
// margin) writes nothing; before, the holder counted a whole lease from
// its return and wrote on for 7.5 s, past the lease's end, while another
// request could take the upload over. A claim with its lease ahead
// writes.
func TestHoldClaimFromRecordedLease(t *testing.T) {
	stalled := &renewals{stall: make(chan struct{})} // the database answers no renewal
	reg := New(Stores{Uploads: stalled}, nil, Options{})
	ctx := context.Background()
	late := reg.holdClaim(ctx, meta.Upload{ID: "late", Claim: time.Now().Add(time.Second).UnixMicro()})
	var fresh *claimHolder
	defer func() {
		close(stalled.stall) // first: stop waits for a renewal under way
		late.stop()
		if fresh != nil {
			fresh.stop()
		}
	}()
	if _, err := (claimedWriter{io.Discard, late}).Write([]byte("bytes")); !errors.Is(err, errClaimLost) {
		t.Fatalf("write under a claim 1 s from its end: %v, want errClaimLost", err)
	}
	if late.held() {
		t.Fatal("a claim 1 s from its end counts as held")
	}
	fresh = reg.holdClaim(ctx, meta.Upload{ID: "fresh", Claim: time.Now().Add(uploadLease).UnixMicro()})
	if _, err := (claimedWriter{io.Discard, fresh}).Write([]byte("bytes")); err != nil || !fresh.held() {
		t.Fatalf("write under a fresh claim: %v (held %v)", err, fresh.held())
	}
}

// renewals renews every claim for a whole lease from now, or, with stall,
// answers no renewal until stall is closed.
type renewals struct {
	UploadStore
	stall chan struct{}
	n     atomic.Int32
}

func (u *renewals) RenewUpload(ctx context.Context, id string, claim int64, lease time.Duration) (int64, error) {
	if u.stall != nil {
		<-u.stall
		return 0, meta.ErrUploadClaimLost
	}
	u.n.Add(1)
	return time.Now().Add(lease).UnixMicro(), nil
}

// TestLateClaimRenewedAtOnce: a claim whose statement waited long on the
// database (its lease ends 3 s from now, not 10) is renewed at once, not
// a renewal period after it returned: before, the first renewal came
// 2.5 s later, after the claim's safe end (0.5 s from now), and the
// upload's writes in between were refused as if the claim were lost.
func TestLateClaimRenewedAtOnce(t *testing.T) {
	u := &renewals{}
	reg := New(Stores{Uploads: u}, nil, Options{})
	c := reg.holdClaim(context.Background(), meta.Upload{ID: "late", Claim: time.Now().Add(3 * time.Second).UnixMicro()})
	defer c.stop()
	time.Sleep(time.Second)
	if u.n.Load() == 0 || !c.held() {
		t.Fatalf("1 s into a claim that ends 3 s from its start: %d renewals, held %v; want renewed and held", u.n.Load(), c.held())
	}
}
