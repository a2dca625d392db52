package registry

import (
	"testing"
	"time"
)

// dbAhead is a store whose clock (the database server's) runs ahead of
// this process's by d.
type dbAhead struct{ d time.Duration }

func (c dbAhead) ClaimEnd(claim int64) time.Time { return time.UnixMicro(claim).Add(-c.d) }

// TestClaimTimesFollowTheStoresClock: a claim is its lease's end on the
// store's clock (PostgreSQL's); a writer stops and renews by its own
// clock, so it converts the claim first. Taken as it is, a claim from a
// database 20 s ahead let the writer go on writing up to 20 s after its
// lease ran out, when another request may own the upload.
func TestClaimTimesFollowTheStoresClock(t *testing.T) {
	now := time.Now()
	claim := now.Add(20*time.Second + uploadLease).UnixMicro() // a lease taken now, on a clock 20 s ahead
	reg := &Registry{meta: Stores{Claims: dbAhead{20 * time.Second}}}
	wantSafe := now.Add(uploadLease - uploadRenewEvery)
	if got := time.Unix(0, reg.safeEnd(claim)); got.Sub(wantSafe).Abs() > time.Millisecond {
		t.Errorf("writes stop at %v, want %v (the lease's end on this clock, less a margin)", got.Sub(now), wantSafe.Sub(now))
	}
	if got := reg.renewIn(claim); got > uploadRenewEvery || got < uploadRenewEvery-time.Second {
		t.Errorf("renewed in %v, want about %v", got, uploadRenewEvery)
	}
	// Without a store clock (one host), claims are taken as they are.
	plain := &Registry{}
	if got := time.Unix(0, plain.safeEnd(claim)); got.Sub(time.UnixMicro(claim).Add(-uploadRenewEvery)).Abs() > time.Millisecond {
		t.Errorf("without a store clock writes stop at %v", got)
	}
}
