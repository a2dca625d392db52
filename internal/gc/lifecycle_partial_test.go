package gc

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/meta"
	"github.com/berth-dev/berth/internal/meta/metatest"
)

// halfPrunedLifecycle is the store's lifecycle, with a repository whose
// pruning fails after it deleted a batch of tags.
type halfPrunedLifecycle struct {
	meta.Manifests
	broken string
}

func (h halfPrunedLifecycle) PrunedRepositories(context.Context) ([]string, error) {
	return []string{h.broken}, nil
}

func (h halfPrunedLifecycle) PruneRepository(context.Context, string, time.Time, string) ([]string, error) {
	return []string{"build-0", "build-1"}, errors.New("database gone after the first batch")
}

// TestPassCountsTagsPrunedBeforeAFailure: auto-prune commits a batch of
// tags at a time, so a repository whose pruning fails midway has lost the
// batches before the failure: the pass's report counts them (it counted
// none, as if nothing were deleted) and the pass fails.
func TestPassCountsTagsPrunedBeforeAFailure(t *testing.T) {
	db := metatest.Open(t, "sqlite")
	c := New(Stores{Uploads: db.Uploads(), Collector: db.Collector(), Retention: db.Collector(),
		Lifecycle: halfPrunedLifecycle{Manifests: db.Manifests(), broken: "acme/ci"}}, nil,
		Options{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	rep := Report{}
	err := c.lifecycle(context.Background(), &rep)
	if err == nil || !strings.Contains(err.Error(), "acme/ci") {
		t.Fatalf("pass error: %v", err)
	}
	if rep.PrunedTags != 2 {
		t.Fatalf("the report counts %d pruned tags, want the 2 deleted before the failure", rep.PrunedTags)
	}
}
