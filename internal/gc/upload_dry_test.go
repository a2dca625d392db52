package gc

import (
	"context"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/storage"
)

// TestDryRunCountsEveryExpiredUpload: a dry run reports every expired
// upload session a pass would remove, not only the first query's batch
// (it removes none, so each query found the same sessions again and the
// dry run stopped at uploadBatch).
func TestDryRunCountsEveryExpiredUpload(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			e := newEnv(t, dialect, Options{UploadExpiry: time.Hour})
			const sessions = uploadBatch + 1
			for range sessions {
				if err := e.db.Uploads().CreateUpload(ctx, meta.Upload{ID: storage.NewUploadID(), Repository: "app"}, 0); err != nil {
					t.Fatal(err)
				}
			}
			e.c.now = func() time.Time { return time.Now().Add(2 * time.Hour) } // all idle for longer than the expiry
			rep, err := e.c.Pass(ctx, true)
			if err != nil {
				t.Fatal(err)
			}
			if rep.Uploads != sessions {
				t.Fatalf("a dry run reports %d expired uploads, want %d", rep.Uploads, sessions)
			}
			if rep, err = e.c.Pass(ctx, false); err != nil || rep.Uploads != sessions {
				t.Fatalf("the pass after it removed %d expired uploads (%v), want %d", rep.Uploads, err, sessions)
			}
		})
	}
}
