package meta_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// TestUploadRoomPlan: the open upload sessions of a namespace are found
// by uploads_namespace (migration 39), on SQLite and PostgreSQL, not by
// reading every open session on every chunk written.
func TestUploadRoomPlan(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			for i := range 200 {
				repo := []string{"acme/app", "other/x/y", "solo", "zeta/z"}[i%4]
				if err := db.Uploads().CreateUpload(ctx, meta.Upload{ID: fmt.Sprintf("u%d", i), Repository: repo}, 0); err != nil {
					t.Fatal(err)
				}
			}
			plan, err := db.UploadRoomPlan(ctx, "acme")
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(plan, "uploads_namespace") {
				t.Fatalf("plan of UploadRoom's sum:\n%s\nwant a search of uploads_namespace", plan)
			}
			t.Logf("plan:\n%s", plan)
		})
	}
}

// TestUploadRoom: the room a namespace's Reject limit leaves is its
// threshold less its usage and the bytes its open sessions hold, counted
// by the namespace of their repository (acme/app and acme/team/api in
// acme; acmeish and solo elsewhere); a namespace without a Reject limit
// is not limited. Sessions opened before migration 39 count too.
func TestUploadRoom(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db, err := meta.OpenAt(ctx, metatest.DSN(t, dialect), 38)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { db.Close() })
			up := func(id, repo string, size int64) {
				t.Helper()
				if err := db.Uploads().CreateUpload(ctx, meta.Upload{ID: id, Repository: repo}, 0); err != nil {
					t.Fatal(err)
				}
				c, err := db.Uploads().ClaimUpload(ctx, repo, id, time.Minute)
				if err != nil {
					t.Fatal(err)
				}
				if err := db.Uploads().AdvanceUpload(ctx, id, c.Claim, 0, size, nil, nil); err != nil {
					t.Fatal(err)
				}
			}
			up("before", "acme/app", 1000) // opened before the migration
			if err := db.Migrate(ctx); err != nil {
				t.Fatal(err)
			}
			up("nested", "acme/team/api", 200)
			up("prefix", "acmeish/app", 4000)
			up("solo", "solo", 8000)
			for _, ns := range []string{"acme", "acmeish", "solo"} {
				if _, err := db.Organizations().CreateOrganization(ctx, ns, 0); err != nil {
					t.Fatal(err)
				}
			}
			if r, err := db.Uploads().UploadRoom(ctx, "acme/app"); err != nil || r.Limited || r.Left() < 1<<62 {
				t.Fatalf("room without a quota: %+v %v", r, err)
			}
			q, err := db.Quotas().CreateQuota(ctx, "acme", 10000, "admin")
			if err != nil {
				t.Fatal(err)
			}
			if _, err := db.Quotas().CreateQuotaLimit(ctx, "acme", q.ID, meta.QuotaWarning, 50); err != nil {
				t.Fatal(err)
			}
			if r, err := db.Uploads().UploadRoom(ctx, "acme/app"); err != nil || r.Limited {
				t.Fatalf("room with only a Warning limit: %+v %v", r, err)
			}
			if _, err := db.Quotas().CreateQuotaLimit(ctx, "acme", q.ID, meta.QuotaReject, 80); err != nil {
				t.Fatal(err)
			}
			r, err := db.Uploads().UploadRoom(ctx, "acme/other")
			if err != nil || !r.Limited || r.Uploads != 1200 || r.Usage != 0 || r.Left() != 8000-1200 {
				t.Fatalf("acme's room: %+v (left %d) %v, want 1200 bytes uploading and 6800 left", r, r.Left(), err)
			}
			if msg := r.Refuse(7000).Error(); !strings.Contains(msg, "quota exceeded") || !strings.Contains(msg, "unfinished uploads of namespace acme hold") {
				t.Fatalf("refusal: %s", msg)
			}
			if r, err := db.Uploads().UploadRoom(ctx, "solo"); err != nil || r.Limited {
				t.Fatalf("solo's room: %+v %v", r, err)
			}
		})
	}
}
