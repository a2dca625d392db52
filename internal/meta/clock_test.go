package meta_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// skewed returns a local clock that runs d ahead of the host's.
func skewed(d time.Duration) meta.Option {
	return meta.LocalClock(func() time.Time { return time.Now().Add(d) })
}

// openReplica opens a store on dsn, closed at cleanup, logging nowhere
// unless opts say where.
func openReplica(t *testing.T, dsn string, opts ...meta.Option) *meta.DB {
	t.Helper()
	opts = append([]meta.Option{meta.Logger(slog.New(slog.DiscardHandler))}, opts...)
	db, err := meta.Open(context.Background(), dsn, opts...)
	if err != nil {
		t.Fatalf("open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// A store on PostgreSQL reads the time from the database's clock: one on a
// host whose clock runs 25 s ahead measures an offset of -25 s, and the
// times it records are the database's. It warns that the host's clock is
// off.
func TestClockOffsetFollowsDatabase(t *testing.T) {
	ctx := context.Background()
	dsn := metatest.PostgresDSN(t)
	var logs bytes.Buffer
	db := openReplica(t, dsn, skewed(25*time.Second), meta.Logger(slog.New(slog.NewTextHandler(&logs, nil))))
	if off := db.ClockOffset(); off < -26*time.Second || off > -24*time.Second {
		t.Fatalf("offset of a store whose clock runs 25 s ahead = %v, want about -25s", off)
	}
	if !strings.Contains(logs.String(), "level=WARN") || !strings.Contains(logs.String(), "offset=-25") {
		t.Errorf("logs of a store whose clock runs 25 s ahead:\n%s\nwant a warning naming the offset", logs.String())
	}
	u := meta.Upload{ID: "0b6a7a4e-7d0c-4a53-a1a6-00000000c10c", Repository: "app", Actor: "alice"}
	if err := db.Uploads().CreateUpload(ctx, u, 0); err != nil {
		t.Fatal(err)
	}
	got, err := db.Uploads().GetUpload(ctx, "app", u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Until(got.StartedAt).Abs(); d > time.Second {
		t.Fatalf("upload started at %v, %v from the database's clock", got.StartedAt, d)
	}
}

// SQLite is one host: its store keeps the local clock.
func TestClockOffsetSQLite(t *testing.T) {
	db := openReplica(t, metatest.DSN(t, "sqlite"), skewed(25*time.Second))
	if off := db.ClockOffset(); off != 0 {
		t.Fatalf("SQLite store's offset = %v, want 0", off)
	}
}

// Two replicas whose clocks disagree by 25 s: the one ahead must not take
// over a job the other holds under a live lease (it would run it a second
// time, or dead-letter it while it runs on its last attempt). A worker's
// lease has 19 s left at least (internal/jobs extends a 30 s lease every
// 10 s, less a margin).
func TestSkewedReplicaLeavesLeasedJob(t *testing.T) {
	ctx := context.Background()
	dsn := metatest.PostgresDSN(t)
	a := openReplica(t, dsn)
	b := openReplica(t, dsn, skewed(25*time.Second))
	const left = 19 * time.Second
	id := enqueue(t, a, meta.Job{Queue: "skew", Payload: []byte(`{}`), MaxAttempts: 1})
	j, ok, err := a.Jobs().ClaimJob(ctx, "skew", "replica-a", left)
	if err != nil || !ok || j.ID != id {
		t.Fatalf("A's claim = %+v, %v, %v", j, ok, err)
	}
	if j, ok, err := b.Jobs().ClaimJob(ctx, "skew", "replica-b", left); err != nil || ok {
		t.Fatalf("B's claim of a job A holds = %+v, %v, %v; want none", j, ok, err)
	}
	if got := jobByID(t, a, id); got.Status != meta.JobRunning {
		t.Fatalf("job A runs is %s, want running", got.Status)
	}
	if err := a.Jobs().ExtendJobLease(ctx, id, "replica-a", left); err != nil {
		t.Fatalf("A extends its lease: %v", err)
	}
	if j, ok, err := b.Jobs().ClaimJob(ctx, "skew", "replica-b", left); err != nil || ok {
		t.Fatalf("B's claim after A's renewal = %+v, %v, %v; want none", j, ok, err)
	}
	if err := a.Jobs().CompleteJob(ctx, id, "replica-a"); err != nil {
		t.Fatalf("A completes its job: %v", err)
	}
}

// Two replicas whose clocks disagree by 8 s: the one ahead must not claim
// an upload the other streams. A writer's claim has 7 s left at least
// (the registry renews a 10 s lease every 2.5 s, less a margin).
func TestSkewedReplicaLeavesClaimedUpload(t *testing.T) {
	ctx := context.Background()
	dsn := metatest.PostgresDSN(t)
	a := openReplica(t, dsn)
	b := openReplica(t, dsn, skewed(8*time.Second))
	const left = 7 * time.Second
	u := meta.Upload{ID: "0b6a7a4e-7d0c-4a53-a1a6-00000000c1a1", Repository: "app", Actor: "alice"}
	if err := a.Uploads().CreateUpload(ctx, u, 0); err != nil {
		t.Fatal(err)
	}
	up, err := a.Uploads().ClaimUpload(ctx, "app", u.ID, left)
	if err != nil {
		t.Fatalf("A's claim: %v", err)
	}
	if _, err := b.Uploads().ClaimUpload(ctx, "app", u.ID, left); !errors.Is(err, meta.ErrUploadBusy) {
		t.Fatalf("B's claim of an upload A streams: %v, want ErrUploadBusy", err)
	}
	claim, err := a.Uploads().RenewUpload(ctx, u.ID, up.Claim, left)
	if err != nil {
		t.Fatalf("A renews its claim: %v", err)
	}
	if _, err := b.Uploads().ClaimUpload(ctx, "app", u.ID, left); !errors.Is(err, meta.ErrUploadBusy) {
		t.Fatalf("B's claim after A's renewal: %v, want ErrUploadBusy", err)
	}
	if err := a.Uploads().AdvanceUpload(ctx, u.ID, claim, 0, 10, nil, nil); err != nil {
		t.Fatalf("A records what it wrote: %v", err)
	}
	if _, err := b.Uploads().ClaimUpload(ctx, "app", u.ID, left); err != nil {
		t.Fatalf("B's claim once A is done: %v", err)
	}
}

// A store whose host's clock runs 25 s ahead answers when an upload's
// claim ends on that host's clock: a request waiting for the claim
// compares it with its own time.
func TestUploadLeaseOnLocalClock(t *testing.T) {
	ctx := context.Background()
	dsn := metatest.PostgresDSN(t)
	const skew = 25 * time.Second
	db := openReplica(t, dsn, skewed(skew))
	u := meta.Upload{ID: "0b6a7a4e-7d0c-4a53-a1a6-00000000c1a2", Repository: "app", Actor: "alice"}
	if err := db.Uploads().CreateUpload(ctx, u, 0); err != nil {
		t.Fatal(err)
	}
	up, err := db.Uploads().ClaimUpload(ctx, "app", u.ID, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	until, err := db.Uploads().UploadLease(ctx, "app", u.ID)
	if err != nil {
		t.Fatal(err)
	}
	if left := until.Sub(time.Now().Add(skew)); left < 8*time.Second || left > 11*time.Second {
		t.Errorf("UploadLease of a 10 s claim ends in %v on the host's clock, want about 10s", left)
	}
	if end := db.Uploads().ClaimEnd(up.Claim); !end.Equal(until) {
		t.Errorf("ClaimEnd = %v, UploadLease = %v; want the same", end, until)
	}
}
