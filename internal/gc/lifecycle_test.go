package gc

import (
	"context"
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/opencontainers/go-digest"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
	"github.com/berth-dev/berth/internal/storage/fs"
)

// TestPassAppliesTagPolicies: a pass deletes expired tags and applies
// auto-prune policies before collecting, and the time machine keeps what
// they left until its window ends; a dry run changes nothing.
func TestPassAppliesTagPolicies(t *testing.T) {
	for _, dialect := range metatest.Dialects() {
		t.Run(dialect, func(t *testing.T) {
			ctx := context.Background()
			db := metatest.Open(t, dialect)
			store, err := fs.New(t.TempDir(), fs.Options{})
			if err != nil {
				t.Fatal(err)
			}
			collector := func(window time.Duration) *Collector {
				c := db.Collector().WithTimeMachine(window)
				return New(Stores{Uploads: db.Uploads(), Collector: c, Retention: c, Lifecycle: db.Manifests()}, store,
					Options{Delay: time.Millisecond, UploadExpiry: time.Hour, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
			}
			m := meta.Manifest{Digest: digest.FromString("short-lived"), MediaType: "application/vnd.oci.image.manifest.v1+json", Content: []byte("short-lived")}
			if err := db.Manifests().PutManifest(ctx, meta.PutManifest{Repository: "ns/app", Manifest: m, Tag: "pr-1", ExpiresAt: time.Now().Add(20 * time.Millisecond)}); err != nil {
				t.Fatal(err)
			}
			time.Sleep(30 * time.Millisecond)
			if rep, err := collector(time.Hour).Pass(ctx, true); err != nil || rep.ExpiredTags != 0 {
				t.Fatalf("dry run: %+v %v", rep, err)
			}
			rep, err := collector(time.Hour).Pass(ctx, false)
			if err != nil || rep.ExpiredTags != 1 || rep.Collected.Manifests != 0 {
				t.Fatalf("pass with a time machine: %+v %v", rep, err)
			}
			if _, err := db.Manifests().GetManifest(ctx, "ns/app", "", m.Digest, false); err != nil {
				t.Fatalf("the time machine did not keep the expired tag's manifest: %v", err)
			}
			rep, err = collector(0).Pass(ctx, false)
			if err != nil || rep.Collected.Manifests != 1 {
				t.Fatalf("pass without a time machine: %+v %v", rep, err)
			}
		})
	}
}
