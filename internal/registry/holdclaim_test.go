package registry

import (
	"context"
	"errors"
	"io"
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
	reg := New(Stores{}, nil, Options{})
	ctx := context.Background()
	late := reg.holdClaim(ctx, meta.Upload{ID: "late", Claim: time.Now().Add(time.Second).UnixMicro()})
	defer late.stop()
	if _, err := (claimedWriter{io.Discard, late}).Write([]byte("bytes")); !errors.Is(err, errClaimLost) {
		t.Fatalf("write under a claim 1 s from its end: %v, want errClaimLost", err)
	}
	if late.held() {
		t.Fatal("a claim 1 s from its end counts as held")
	}
	fresh := reg.holdClaim(ctx, meta.Upload{ID: "fresh", Claim: time.Now().Add(uploadLease).UnixMicro()})
	defer fresh.stop()
	if _, err := (claimedWriter{io.Discard, fresh}).Write([]byte("bytes")); err != nil || !fresh.held() {
		t.Fatalf("write under a fresh claim: %v (held %v)", err, fresh.held())
	}
}
